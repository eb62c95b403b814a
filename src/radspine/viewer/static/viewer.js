// radspine study viewer: one study's slices, its 25 points and their grades; drag a point, save the points CSV.
//
// Hand-written plain JavaScript (ES2017, DOM + SVG only): the page must open from the file system with no
// server, no network and no CDN, and a viewer library (Cornerstone, OHIF) would need a build step and a
// server to load DICOM. The page only needs what this file does: show pre-rendered 8-bit slices, map pixels
// to the DICOM patient frame (the same formulas as radspine.geometry), draw points, and write a CSV.
(function () {
  "use strict";

  var D = JSON.parse(document.getElementById("radspine-data").textContent);
  var SVGNS = "http://www.w3.org/2000/svg";
  var NEAR_CHOICES = [5, 15, 40, Infinity];
  var CONDITION_ORDER = ["spinal_canal_stenosis", "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing", "left_subarticular_stenosis", "right_subarticular_stenosis"];
  var LEVEL_ORDER = ["l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1"];

  var S = {
    near: 15,
    nViews: Math.max(1, Math.min(3, D.default_views.length || 1)),
    views: [],
    active: 0,
    selected: null, // row_id
    placing: null, // row_id waiting for a click on a slice
    lastSaved: null,
    imageErrors: {},
  };
  D.rows.forEach(function (r) { r.original = r.point; r.moved = false; r.accepted = false; });

  // ------------------------------------------------------------------ geometry (mirrors radspine.geometry)
  function dot(a, b) { return a[0] * b[0] + a[1] * b[1] + a[2] * b[2]; }

  // World point (LPS, mm) of pixel column x, row y on slice k: geometry.pixel_to_world.
  function pixelToWorld(st, x, y, k) {
    var p = st.positions[k], rc = st.row_cosine, cc = st.col_cosine;
    var cx = x * st.pixel_spacing[1], ry = y * st.pixel_spacing[0];
    return [p[0] + cx * rc[0] + ry * cc[0], p[1] + cx * rc[1] + ry * cc[1], p[2] + cx * rc[2] + ry * cc[2]];
  }

  // [x, y, offset along the normal] of a world point in a stack: geometry.continuous_index's in-plane part
  // (relative to slice 0's origin) and the plane offset that slice_offsets are measured in.
  function projectWorld(st, w) {
    var p0 = st.positions[0];
    var rel = [w[0] - p0[0], w[1] - p0[1], w[2] - p0[2]];
    return [dot(rel, st.row_cosine) / st.pixel_spacing[1], dot(rel, st.col_cosine) / st.pixel_spacing[0],
      dot(w, st.normal)];
  }

  // A point placed by the user at (x, y) on slice k of stack j, projected into every stack.
  function makePoint(j, k, x, y) {
    var st = D.stacks[j];
    var w = pixelToWorld(st, x, y, k);
    var proj = {};
    D.stacks.forEach(function (other, m) {
      var pr = projectWorld(other, w);
      proj[String(m)] = m === j ? [x, y, pr[2]] : pr;
    });
    return { series_id: st.series_id, instance_number: st.instances[k], x: x, y: y, x_text: null, y_text: null,
      stack: j, slice: k, world: w, proj: proj, from_points_file: false };
  }

  // ------------------------------------------------------------------ small DOM helpers
  function el(tag, attrs, kids) {
    var e = document.createElement(tag);
    Object.keys(attrs || {}).forEach(function (k) {
      if (k === "text") e.textContent = attrs[k];
      else if (k === "cls") e.className = attrs[k];
      else e.setAttribute(k, attrs[k]);
    });
    (kids || []).forEach(function (c) { if (c) e.appendChild(typeof c === "string" ? document.createTextNode(c) : c); });
    return e;
  }
  function svg(tag, attrs) {
    var e = document.createElementNS(SVGNS, tag);
    Object.keys(attrs || {}).forEach(function (k) { e.setAttribute(k, attrs[k]); });
    return e;
  }
  function fmt(v, n) { return v === null || v === undefined ? "—" : Number(v).toFixed(n); }
  function signed(v, n) { return (v >= 0 ? "+" : "−") + Math.abs(v).toFixed(n); }
  function rowById(id) { for (var i = 0; i < D.rows.length; i++) if (D.rows[i].row_id === id) return D.rows[i]; return null; }
  function usable(r) { return r.point && (r.moved || r.accepted || !r.unusable); }

  // ------------------------------------------------------------------ page skeleton
  var app = document.getElementById("app");
  var title = "Study " + D.study_id + (D.study_uid ? " · " + D.study_uid : "") + " · " + D.split;
  var nearSel = el("select", { id: "near", title: "Points of other slices drawn faded when this close (mm)" },
    NEAR_CHOICES.map(function (v) {
      var o = el("option", { value: String(v), text: isFinite(v) ? "within " + v + " mm" : "all" });
      if (v === S.near) o.selected = true;
      return o;
    }));
  var viewsSel = el("select", { id: "nviews", title: "Views side by side" }, [1, 2, 3].map(function (n) {
    var o = el("option", { value: String(n), text: n + (n === 1 ? " view" : " views") });
    if (n === S.nViews) o.selected = true;
    return o;
  }));
  var saveBtn = el("button", { id: "save", type: "button", title: "Download this study's points CSV for `radspine predict --points`" }, ["Save points"]);
  var status = el("span", { id: "status", "aria-live": "polite" });
  app.appendChild(el("header", {}, [
    el("h1", { text: title }),
    el("label", {}, ["Views ", viewsSel]), el("label", {}, ["Other points ", nearSel]), saveBtn, status,
  ]));
  var notes = (D.note ? [D.note] : []).concat(D.notes);
  if (!D.stacks.length) notes.unshift("no readable series: nothing to show");
  var notesBox = el("ul", { id: "notes", cls: notes.length ? "" : "empty" });
  notes.forEach(function (n) { notesBox.appendChild(el("li", { text: n })); });
  app.appendChild(notesBox);
  var viewsBox = el("div", { id: "views" });
  app.appendChild(viewsBox);
  app.appendChild(el("p", { cls: "help", text: "Wheel or slider: slices · drag a point: move it (the row is marked moved) · " +
    "drag elsewhere: window/level · shift-drag or middle button: pan · ctrl-wheel or +/−: zoom · double-click: reset · " +
    "click a row: jump to its point. Save points downloads points_study_" + D.study_id + ".csv in the localize format " +
    "(moved points replaced, the others kept; a point the localizer flagged is left out, as predict left it " +
    "ungraded, unless you move it or press 'grade here'): radspine predict --points FILE re-grades the study there." }));
  var legend = el("p", { cls: "legend" });
  D.severities.forEach(function (s, g) {
    legend.appendChild(el("span", { cls: "dot", style: "background:" + D.grade_colors[g] }));
    legend.appendChild(document.createTextNode(s + "  "));
  });
  legend.appendChild(document.createTextNode("· " + Object.keys(D.tags).map(function (t) { return t + " " + D.tags[t]; }).join(", ") +
    " · solid: the point lies on the shown slice; faded: it lies on another slice (or series) and is drawn where it " +
    "projects, with its signed distance Δ from the shown slice plane in mm (+ = toward higher slice numbers)."));
  app.appendChild(legend);
  var filterDefs = svg("svg", { width: "0", height: "0", style: "position:absolute" });
  app.appendChild(filterDefs);

  // ------------------------------------------------------------------ views
  function makeView(i) {
    var fid = "wl-" + i;
    var filter = svg("filter", { id: fid, "color-interpolation-filters": "sRGB" });
    var ct = svg("feComponentTransfer", {});
    ["feFuncR", "feFuncG", "feFuncB"].forEach(function (f) { ct.appendChild(svg(f, { type: "linear", slope: "1", intercept: "0" })); });
    filter.appendChild(ct);
    filterDefs.appendChild(filter);
    var sel = el("select", { cls: "stack" }, D.stacks.map(function (st, j) { return el("option", { value: String(j), text: st.label }); }));
    var info = el("span", { cls: "info" });
    var img = el("img", { cls: "slice", alt: "", draggable: "false", style: "filter:url(#" + fid + ")" });
    var overlay = svg("svg", { "class": "overlay" });
    var msg = el("div", { cls: "msg" });
    var edges = ["left", "right", "top", "bottom"].map(function (e) { return el("div", { cls: "edge " + e }); });
    var stage = el("div", { cls: "stage", tabindex: "0" }, [img, overlay, msg].concat(edges));
    var slider = el("input", { type: "range", min: "0", max: "0", step: "1", value: "0", cls: "slider", "aria-label": "slice" });
    var box = el("section", { cls: "view", "data-view": String(i) }, [el("div", { cls: "view-head" }, [sel, info]), stage, slider]);
    var v = { i: i, box: box, sel: sel, info: info, img: img, overlay: overlay, msg: msg, edges: edges, stage: stage,
      slider: slider, func: ct.childNodes, stack: null, k: 0, zoom: 1, panX: 0, panY: 0, lo: 0, hi: 255 };
    sel.addEventListener("change", function () { setStack(v, Number(sel.value)); });
    slider.addEventListener("input", function () { setSlice(v, Number(slider.value)); });
    img.addEventListener("error", function () {
      if (!img.getAttribute("src")) return;
      S.imageErrors[v.stack + ":" + v.k] = true;
      showMissing(v, "could not be decoded");
    });
    img.addEventListener("load", function () { v.msg.textContent = ""; v.msg.className = "msg"; });
    bindPointer(v);
    return v;
  }

  function geometry(v) {
    var st = D.stacks[v.stack];
    var W = v.stage.clientWidth, H = v.stage.clientHeight;
    var physW = st.cols * st.pixel_spacing[1], physH = st.rows * st.pixel_spacing[0];
    var s = Math.min(W / physW, H / physH) * v.zoom; // screen px per mm
    var imgW = physW * s, imgH = physH * s;
    return { st: st, s: s, ox: (W - imgW) / 2 + v.panX, oy: (H - imgH) / 2 + v.panY, w: imgW, h: imgH };
  }
  // Screen position (stage px) of the centre of pixel (x, y): pixel x spans [x - 0.5, x + 0.5] in DICOM terms.
  function toScreen(g, x, y) { return [g.ox + (x + 0.5) * g.st.pixel_spacing[1] * g.s, g.oy + (y + 0.5) * g.st.pixel_spacing[0] * g.s]; }
  function toPixel(g, sx, sy) { return [(sx - g.ox) / (g.st.pixel_spacing[1] * g.s) - 0.5, (sy - g.oy) / (g.st.pixel_spacing[0] * g.s) - 0.5]; }

  function setStack(v, j, k) {
    if (j === null || j === undefined || !D.stacks[j]) {
      v.stack = null;
      v.img.removeAttribute("src");
      v.msg.textContent = "no series to show";
      v.msg.className = "msg shown";
      v.overlay.innerHTML = "";
      return;
    }
    v.stack = j;
    v.sel.value = String(j);
    v.zoom = 1; v.panX = 0; v.panY = 0;
    var st = D.stacks[j];
    v.slider.max = String(st.instances.length - 1);
    setSlice(v, k === undefined ? st.default_slice : k);
  }
  function setSlice(v, k) {
    if (v.stack === null) return;
    var st = D.stacks[v.stack];
    v.k = Math.max(0, Math.min(st.instances.length - 1, k));
    v.slider.value = String(v.k);
    var src = st.images[v.k];
    if (!src) {
      v.img.removeAttribute("src");
      showMissing(v, "missing from this page");
    } else if (S.imageErrors[v.stack + ":" + v.k]) {
      v.img.removeAttribute("src");
      showMissing(v, "could not be decoded");
    } else {
      if (v.img.getAttribute("src") !== src) v.img.setAttribute("src", src);
      v.msg.textContent = ""; v.msg.className = "msg";
    }
    render(v);
  }
  function showMissing(v, why) {
    var st = D.stacks[v.stack];
    v.msg.textContent = "Image of slice " + (v.k + 1) + " (instance " + st.instances[v.k] + ") " + why + "; points are still placed by geometry.";
    v.msg.className = "msg shown";
    v.box.setAttribute("data-missing", "1");
  }

  function applyWindow(v) {
    var w = Math.max(1, v.hi - v.lo);
    for (var i = 0; i < v.func.length; i++) {
      v.func[i].setAttribute("slope", String(255 / w));
      v.func[i].setAttribute("intercept", String(-v.lo / w));
    }
  }

  function render(v) {
    if (v.stack === null) return;
    var g = geometry(v), st = g.st;
    v.img.style.left = g.ox + "px"; v.img.style.top = g.oy + "px";
    v.img.style.width = g.w + "px"; v.img.style.height = g.h + "px";
    applyWindow(v);
    var off = st.offsets[v.k];
    v.info.textContent = "slice " + (v.k + 1) + "/" + st.instances.length + " · instance " + st.instances[v.k] +
      " · " + slicePosition(st, off) + " · next slice toward " + st.edges.next_slice;
    v.edges[0].textContent = st.edges.left; v.edges[1].textContent = st.edges.right;
    v.edges[2].textContent = st.edges.top; v.edges[3].textContent = st.edges.bottom;
    v.box.setAttribute("data-stack", String(v.stack));
    v.box.setAttribute("data-slice", String(v.k));
    v.box.removeAttribute("data-missing");
    if (!st.images[v.k] || S.imageErrors[v.stack + ":" + v.k]) v.box.setAttribute("data-missing", "1");
    drawPoints(v, g);
  }

  // A slice plane's position as a patient coordinate along its main axis, e.g. "L 5.0 mm" (LPS: +x left).
  function slicePosition(st, off) {
    var n = st.normal, a = 0;
    for (var i = 1; i < 3; i++) if (Math.abs(n[i]) > Math.abs(n[a])) a = i;
    var c = off * (n[a] > 0 ? 1 : -1);
    return [["L", "R"], ["P", "A"], ["S", "I"]][a][c >= 0 ? 0 : 1] + " " + Math.abs(c).toFixed(1) + " mm";
  }
  function pointLabel(r) { return r.level_name + " " + r.tag; }
  // Whether a left/right condition's patient side is on the screen's left in this stack (never by array order).
  function sideOnLeft(st, condition) {
    var side = condition.indexOf("left_") === 0 ? "L" : condition.indexOf("right_") === 0 ? "R" : null;
    return side !== null && st.edges.left === side;
  }

  function drawPoints(v, g) {
    var ov = v.overlay;
    while (ov.firstChild) ov.removeChild(ov.firstChild);
    var st = g.st, j = String(v.stack);
    var drawn = [];
    D.rows.forEach(function (r) {
      var p = r.point;
      if (!p || !p.proj[j]) return;
      var pr = p.proj[j];
      var own = p.stack === v.stack && p.slice === v.k;
      var d = pr[2] - st.offsets[v.k];
      if (!own && !(Math.abs(d) <= S.near)) return;
      if (pr[0] < -0.5 || pr[0] > st.cols - 0.5 || pr[1] < -0.5 || pr[1] > st.rows - 0.5) return;
      drawn.push({ r: r, x: pr[0], y: pr[1], d: d, own: own });
    });
    // Labels are placed solid points first, then faded ones nearest the slice first; a label that would cover
    // one already placed is left out (the point stays, and its tooltip still says what and how far it is).
    var boxes = [];
    function fits(b) {
      for (var i = 0; i < boxes.length; i++) {
        var o = boxes[i];
        if (b[0] < o[2] && o[0] < b[2] && b[1] < o[3] && o[1] < b[3]) return false;
      }
      boxes.push(b);
      return true;
    }
    drawn.sort(function (a, b) { return (b.own ? 1 : 0) - (a.own ? 1 : 0) || Math.abs(a.d) - Math.abs(b.d); });
    var groups = drawn.map(function (q) {
      var r = q.r, xy = toScreen(g, q.x, q.y);
      var color = D.grade_colors[r.grade];
      var grp = svg("g", { "class": "pt " + (q.own ? "on" : "off") + (r.moved ? " moved" : "") + (r.row_id === S.selected ? " selected" : ""),
        "data-row": r.row_id, "data-x": String(q.x), "data-y": String(q.y), "data-d": q.d.toFixed(3) });
      if (r.row_id === S.selected) grp.appendChild(svg("circle", { "class": "ring", cx: xy[0], cy: xy[1], r: 11 }));
      grp.appendChild(svg("circle", { "class": "dot", cx: xy[0], cy: xy[1], r: q.own ? 6 : 5, fill: color }));
      var text = pointLabel(r) + (q.own ? "" : " Δ" + signed(q.d, 1) + " mm") + (r.moved ? " (moved)" : "");
      // Solid labels on the screen side of the patient side they name (axial recesses), else to the right;
      // faded ones to the left, so the two kinds rarely meet.
      var right = q.own ? !sideOnLeft(st, r.condition) : false;
      var w = text.length * (q.own ? 6.2 : 5.6), x0 = right ? xy[0] + 9 : xy[0] - 9 - w;
      if (fits([x0, xy[1] - 8, x0 + w, xy[1] + 6]) || q.own) {
        var t = svg("text", { x: xy[0] + (right ? 9 : -9), y: xy[1] + 4, "text-anchor": right ? "start" : "end" });
        t.textContent = text;
        grp.appendChild(t);
      }
      var tip = svg("title", {});
      tip.textContent = r.level_name + " " + r.condition_short + ": " + D.severities[r.grade] + " " +
        r.probs.map(function (p) { return p.toFixed(2); }).join("/") + (q.own ? "" : " · Δ" + signed(q.d, 1) + " mm from this slice");
      grp.appendChild(tip);
      return grp;
    });
    // Faded points underneath, so a solid one is never hidden by them.
    groups.reverse().forEach(function (grp) { ov.appendChild(grp); });
  }

  // ------------------------------------------------------------------ pointer: drag points, window/level, pan, zoom
  function stageXY(v, e) { var b = v.stage.getBoundingClientRect(); return [e.clientX - b.left, e.clientY - b.top]; }

  function bindPointer(v) {
    var drag = null;
    v.stage.addEventListener("pointerdown", function (e) {
      if (v.stack === null) return;
      S.active = v.i;
      v.stage.focus({ preventScroll: true });
      var xy = stageXY(v, e);
      var grp = e.target.closest ? e.target.closest("g.pt") : null;
      if (S.placing && e.button === 0) {
        var g0 = geometry(v), px = toPixel(g0, xy[0], xy[1]);
        movePoint(rowById(S.placing), v, px[0], px[1]);
        S.placing = null;
        e.preventDefault();
        return;
      }
      if (grp && e.button === 0 && !e.shiftKey) {
        drag = { kind: "point", row: rowById(grp.getAttribute("data-row")), grp: grp, start: xy, moved: false };
      } else if (e.button === 1 || (e.button === 0 && e.shiftKey)) {
        drag = { kind: "pan", start: xy, panX: v.panX, panY: v.panY };
      } else if (e.button === 0) {
        drag = { kind: "wl", start: xy, lo: v.lo, hi: v.hi };
      } else {
        return;
      }
      v.stage.setPointerCapture(e.pointerId);
      e.preventDefault();
    });
    v.stage.addEventListener("pointermove", function (e) {
      if (!drag) return;
      var xy = stageXY(v, e), dx = xy[0] - drag.start[0], dy = xy[1] - drag.start[1];
      if (drag.kind === "point") {
        if (Math.abs(dx) + Math.abs(dy) >= 2) drag.moved = true;
        if (!drag.moved) return;
        drag.grp.setAttribute("transform", "translate(" + dx + "," + dy + ")");
        drag.last = xy;
      } else if (drag.kind === "pan") {
        v.panX = drag.panX + dx; v.panY = drag.panY + dy; render(v);
      } else {
        var w = Math.max(2, (drag.hi - drag.lo) + dx), c = (drag.hi + drag.lo) / 2 - dy;
        v.lo = c - w / 2; v.hi = c + w / 2; applyWindow(v);
      }
    });
    function end(e) {
      if (!drag) return;
      var d = drag;
      drag = null;
      if (v.stage.hasPointerCapture(e.pointerId)) v.stage.releasePointerCapture(e.pointerId);
      if (d.kind !== "point") return;
      if (d.moved && e.type === "pointerup") {
        var xy = stageXY(v, e);
        var g = geometry(v);
        // Where the point was drawn plus how far the pointer went: grabbing a point off-centre does not move it.
        var was = toScreen(g, Number(d.grp.getAttribute("data-x")), Number(d.grp.getAttribute("data-y")));
        var px = toPixel(g, was[0] + xy[0] - d.start[0], was[1] + xy[1] - d.start[1]);
        movePoint(d.row, v, px[0], px[1]);
      } else {
        select(d.row.row_id, false);
        renderAll();
      }
    }
    v.stage.addEventListener("pointerup", end);
    v.stage.addEventListener("pointercancel", end);
    v.stage.addEventListener("wheel", function (e) {
      if (v.stack === null) return;
      e.preventDefault();
      if (e.ctrlKey) {
        zoomAt(v, stageXY(v, e), e.deltaY < 0 ? 1.25 : 0.8);
      } else if (e.deltaY !== 0) {
        setSlice(v, v.k + (e.deltaY > 0 ? 1 : -1));
      }
    }, { passive: false });
    v.stage.addEventListener("dblclick", function () { v.zoom = 1; v.panX = 0; v.panY = 0; v.lo = 0; v.hi = 255; render(v); });
    v.stage.addEventListener("keydown", function (e) {
      var W = v.stage.clientWidth, H = v.stage.clientHeight;
      if (e.key === "ArrowUp" || e.key === "PageUp") setSlice(v, v.k - 1);
      else if (e.key === "ArrowDown" || e.key === "PageDown") setSlice(v, v.k + 1);
      else if (e.key === "+" || e.key === "=") zoomAt(v, [W / 2, H / 2], 1.25);
      else if (e.key === "-") zoomAt(v, [W / 2, H / 2], 0.8);
      else return;
      e.preventDefault();
    });
  }
  function zoomAt(v, xy, f) {
    var z = Math.max(0.5, Math.min(16, v.zoom * f));
    f = z / v.zoom;
    // Keep the pixel under the cursor where it is.
    var W = v.stage.clientWidth, H = v.stage.clientHeight;
    var cx = W / 2 + v.panX, cy = H / 2 + v.panY;
    v.panX += (xy[0] - cx) * (1 - f); v.panY += (xy[1] - cy) * (1 - f);
    v.zoom = z;
    render(v);
  }

  function movePoint(r, v, x, y) {
    if (!r) return;
    var st = D.stacks[v.stack];
    x = Math.max(0, Math.min(st.cols - 1, x)); y = Math.max(0, Math.min(st.rows - 1, y));
    // Three decimals: a thousandth of a pixel, far below what a drag can mean.
    x = Math.round(x * 1000) / 1000; y = Math.round(y * 1000) / 1000;
    r.point = makePoint(v.stack, v.k, x, y);
    r.moved = true;
    select(r.row_id, false);
    renderAll();
    setStatus(pointLabel(r) + " moved to series " + r.point.series_id + " instance " + r.point.instance_number +
      " (" + x.toFixed(1) + ", " + y.toFixed(1) + "); Save points to grade it there.");
  }

  // ------------------------------------------------------------------ rows table
  var table = el("table", { id: "rows" });
  var head = ["level", "condition", "grade", "P(Normal/Mild) · P(Moderate) · P(Severe)", "expected severity",
    "graded from", "point", "measured (published cut-offs: context, not the grade)", "image evidence (TreeSHAP)",
    "prior / context (TreeSHAP)"];
  table.appendChild(el("thead", {}, [el("tr", {}, head.map(function (h) { return el("th", { text: h }); }))]));
  var tbody = el("tbody", {});
  table.appendChild(tbody);
  app.appendChild(el("h2", { text: "Rows" }));
  app.appendChild(table);

  function contribText(cs) {
    if (!cs.length) return "—";
    return cs.map(function (c) { return c.plain + " (" + signed(c.value, 2) + ")"; }).join(", ");
  }
  function pointCell(r) {
    var td = el("td", { cls: "point" });
    var p = r.point;
    if (p) {
      td.appendChild(el("div", { text: "series " + p.series_id + " · instance " + p.instance_number + " · (" +
        Number(p.x).toFixed(1) + ", " + Number(p.y).toFixed(1) + ")" }));
    } else {
      td.appendChild(el("div", { text: "no point" }));
    }
    if (r.flag && r.flag !== "given") td.appendChild(el("div", { cls: "flag", text: "flag: " + r.flag }));
    if (r.confidence !== null) td.appendChild(el("div", { cls: "conf", text: "confidence " + fmt(r.confidence, 2) }));
    if (r.moved) td.appendChild(el("span", { cls: "badge moved", text: "moved" }));
    if (p && !usable(r)) td.appendChild(el("span", { cls: "badge out", text: "left out of Save points (flagged)" }));
    var btns = el("div", { cls: "btns" });
    if (r.moved) btns.appendChild(el("button", { type: "button", "data-act": "undo", text: "undo move" }));
    if (p && r.unusable && !r.moved && !r.accepted) btns.appendChild(el("button", { type: "button", "data-act": "keep",
      title: "Grade at this point despite the flag", text: "grade here" }));
    btns.appendChild(el("button", { type: "button", "data-act": "place", text: S.placing === r.row_id ? "click a slice…" : (p ? "re-place" : "place") }));
    td.appendChild(btns);
    return td;
  }
  function renderTable() {
    while (tbody.firstChild) tbody.removeChild(tbody.firstChild);
    D.rows.forEach(function (r) {
      var color = D.grade_colors[r.grade];
      var meas = el("td", { cls: "meas" });
      if (!r.measurements.length) meas.textContent = "—";
      r.measurements.forEach(function (m) { meas.appendChild(el("div", { cls: m.measured ? "" : "unmeasured", text: m.text })); });
      var tr = el("tr", { "data-row": r.row_id, cls: (r.row_id === S.selected ? "selected " : "") + (r.moved ? "moved" : "") }, [
        el("td", { text: r.level_name }),
        el("td", { text: r.condition_short }),
        el("td", { cls: "grade", style: "color:" + color }, [el("span", { cls: "dot", style: "background:" + color }), D.severities[r.grade]]),
        el("td", { cls: "num", text: r.probs.map(function (p) { return p.toFixed(2); }).join(" · ") }),
        el("td", { cls: "num", text: r.expected_severity.toFixed(2) }),
        el("td", { cls: "src", text: r.graded_from }),
        pointCell(r),
        meas,
        el("td", { cls: "expl", text: contribText(r.image_evidence) }),
        el("td", { cls: "expl", text: contribText(r.prior_context) }),
      ]);
      tbody.appendChild(tr);
    });
  }
  tbody.addEventListener("click", function (e) {
    var tr = e.target.closest("tr");
    if (!tr) return;
    var r = rowById(tr.getAttribute("data-row"));
    var act = e.target.getAttribute && e.target.getAttribute("data-act");
    if (act === "undo") { r.point = r.original; r.moved = false; setStatus(pointLabel(r) + ": move undone"); }
    else if (act === "keep") { r.accepted = true; setStatus(pointLabel(r) + ": will be graded at its flagged point"); }
    else if (act === "place") { S.placing = r.row_id; setStatus("click on a slice to place " + pointLabel(r)); }
    else { jumpTo(r); return; }
    renderAll();
  });

  function select(id, scroll) {
    S.selected = id;
    if (scroll) {
      var tr = tbody.querySelector('tr[data-row="' + id + '"]');
      if (tr && tr.scrollIntoView) tr.scrollIntoView({ block: "nearest" });
    }
  }

  // Show the row's point on its own slice: in a view already showing its stack, else one showing a stack of
  // the same series type, else the active view.
  function jumpTo(r) {
    select(r.row_id, false);
    var p = r.point;
    if (!p || p.stack === null) { renderAll(); setStatus(pointLabel(r) + ": no point on a shown series"); return; }
    var views = S.views.slice(0, S.nViews);
    var v = views.filter(function (w) { return w.stack === p.stack; })[0] ||
      views.filter(function (w) { return w.stack !== null && D.stacks[w.stack].description === D.stacks[p.stack].description; })[0] ||
      views[S.active] || views[0];
    if (v.stack !== p.stack) setStack(v, p.stack, p.slice); else setSlice(v, p.slice);
    renderAll();
  }

  // ------------------------------------------------------------------ saving
  function pointsCsv() {
    var rows = D.rows.slice().sort(function (a, b) {
      return CONDITION_ORDER.indexOf(a.condition) - CONDITION_ORDER.indexOf(b.condition) ||
        LEVEL_ORDER.indexOf(a.level) - LEVEL_ORDER.indexOf(b.level);
    });
    var lines = ["study_id,series_id,instance_number,condition,level,x,y"];
    var kept = 0, moved = 0, out = 0;
    rows.forEach(function (r) {
      if (!r.point) return;
      if (!usable(r)) { out += 1; return; }
      var p = r.point;
      var x = !r.moved && p.x_text ? p.x_text : String(p.x), y = !r.moved && p.y_text ? p.y_text : String(p.y);
      lines.push([D.study_id, p.series_id, p.instance_number, r.condition_name, r.level_name, x, y].join(","));
      if (r.moved) moved += 1; else kept += 1;
    });
    return { text: lines.join("\n") + "\n", kept: kept, moved: moved, out: out };
  }
  function save() {
    var csv = pointsCsv();
    var name = "points_study_" + D.study_id + ".csv";
    var url = URL.createObjectURL(new Blob([csv.text], { type: "text/csv" }));
    var a = el("a", { href: url, download: name, style: "display:none" });
    document.body.appendChild(a);
    a.click();
    setTimeout(function () { URL.revokeObjectURL(url); a.remove(); }, 1000);
    S.lastSaved = { name: name, text: csv.text };
    setStatus("saved " + name + ": " + (csv.kept + csv.moved) + " points (" + csv.moved + " moved" +
      (csv.out ? ", " + csv.out + " flagged left out" : "") + "): radspine predict --points " + name);
  }
  saveBtn.addEventListener("click", save);
  function setStatus(t) { status.textContent = t; }

  // ------------------------------------------------------------------ layout
  function renderAll() {
    S.views.forEach(function (v, i) { v.box.style.display = i < S.nViews ? "" : "none"; if (i < S.nViews) render(v); });
    renderTable();
  }
  function setViews(n) {
    S.nViews = n;
    viewsBox.setAttribute("data-n", String(n));
    renderAll();
  }
  for (var i = 0; i < 3; i++) {
    var v = makeView(i);
    S.views.push(v);
    viewsBox.appendChild(v.box);
  }
  viewsBox.setAttribute("data-n", String(S.nViews));
  S.views.forEach(function (v, i) {
    var j = i < D.default_views.length ? D.default_views[i] : (D.stacks.length ? Math.min(i, D.stacks.length - 1) : null);
    setStack(v, j);
  });
  viewsSel.addEventListener("change", function () { setViews(Number(viewsSel.value)); });
  nearSel.addEventListener("change", function () { S.near = Number(nearSel.value); renderAll(); });
  window.addEventListener("resize", renderAll);
  renderAll();

  // For people debugging a page and for the browser tests: the state and the geometry functions.
  window.radspineViewer = { data: D, state: S, render: renderAll, setStack: setStack, setSlice: setSlice,
    pixelToWorld: pixelToWorld, projectWorld: projectWorld, toScreen: function (v, x, y) { return toScreen(geometry(v), x, y); },
    pointsCsv: pointsCsv, jumpTo: function (id) { jumpTo(rowById(id)); }, ready: true };
  document.body.setAttribute("data-ready", "1");
})();
