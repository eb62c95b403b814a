"""The study viewer: stored slices, point geometry, pages and index (no browser), then the page in headless
Chromium: points at their predicted pixels, scrolling, a missing image, a study without axial series, the
JavaScript geometry against radspine.geometry, and the loop drag → Save points → ``predict --points``."""

from __future__ import annotations

import json
import re
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine.constants import CONDITIONS, LEVELS, SEVERITY_COLUMNS, row_id
from radspine.viewer import build_viewer

GRADE_RGB = [(0x00, 0x9E, 0x73), (0xE6, 0x9F, 0x00), (0xCC, 0x25, 0x29)]


# ---------------------------------------------------------------------------------------------- fixtures
@pytest.fixture(scope="module")
def fake_pred(phantom_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A predict-shaped folder for two phantom train studies: the label coordinates as the points (points.csv
    beside predictions.csv), probabilities rotated so every grade appears, one doubtful point."""
    from radspine.geometry import instance_to_world
    from radspine.io.dataset import Dataset
    from radspine.io.dicom import read_series

    ds = Dataset.open(phantom_root)
    coords = ds.coordinates.copy()
    ids = sorted(coords["study_id"].unique())[:2]
    coords = coords[coords["study_id"].isin(ids)].reset_index(drop=True)
    vols: dict[int, list] = {}
    world = []
    for r in coords.itertuples():
        if r.series_id not in vols:
            info = next(s for s in ds.study(r.study_id, "train").series if s.series_id == r.series_id)
            vols[r.series_id] = read_series(info.path, study_id=r.study_id, series_id=r.series_id)
        vol = next(v for v in vols[r.series_id] if r.instance_number in v.instance_numbers)
        world.append(instance_to_world(vol, r.x, r.y, r.instance_number))
    coords[["world_x", "world_y", "world_z"]] = np.array(world)
    coords["row_id"] = [row_id(s, c, lv) for s, c, lv in zip(coords["study_id"], coords["condition"], coords["level"])]
    rows = []
    for i, (sid, c, lv) in enumerate((s, c, lv) for s in ids for c in CONDITIONS for lv in LEVELS):
        # The second study is the more severe one; the first holds the doubtful point (the index sorts both ways).
        p = np.roll([0.7, 0.2, 0.1] if sid == ids[1] else [0.6, 0.3, 0.1], i % 3) if i % 7 else np.array([0.4, 0.3, 0.3])
        rows.append({"row_id": row_id(sid, c, lv), **dict(zip(SEVERITY_COLUMNS, p, strict=True))})
    preds = pd.DataFrame(rows).merge(
        coords[["row_id", "series_id", "instance_number", "x", "y", "world_x", "world_y", "world_z"]], on="row_id", how="left")
    preds["flag"] = ""
    preds["confidence"] = 0.9
    preds["graded_from"] = "model"
    preds["dural_sac_area_mm2"] = np.where(preds["row_id"].str.contains("spinal"), 82.0, np.nan)
    preds.loc[preds["row_id"] == row_id(ids[0], "left_neural_foraminal_narrowing", "l2_l3"), "flag"] = "doubtful: low confidence"
    out = tmp_path_factory.mktemp("viewer_pred")
    preds.to_csv(out / "predictions.csv", index=False)
    # The points file as localize writes it (CSV names, pandas' own float text).
    from radspine.constants import CONDITION_NAMES, LEVEL_NAMES
    from radspine.points import SCHEMA_COLUMNS

    pts = coords[list(SCHEMA_COLUMNS)].assign(condition=coords["condition"].map(CONDITION_NAMES),
                                               level=coords["level"].map(LEVEL_NAMES))
    pts.to_csv(out / "points.csv", index=False)
    return out


@pytest.fixture(scope="module")
def fake_pages(fake_pred: Path, phantom_root: Path, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("viewer_pages")
    res = build_viewer(phantom_root, fake_pred, out, split="train")
    assert res.n == 2 and not res.failed
    return res


def _payload(page: Path) -> dict:
    m = re.search(r'<script type="application/json" id="radspine-data">(.*?)</script>', page.read_text(), re.S)
    return json.loads(m.group(1))


def _stacks(phantom_root: Path, sid: int, split: str = "train") -> list:
    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.viewer.payload import _stacks_in_order

    return _stacks_in_order(load_study_volumes(Dataset.open(phantom_root).study(sid, split)))


# ------------------------------------------------------------------------------------------- no browser
def test_slices_are_windowed_small_and_decodable() -> None:
    from PIL import Image

    from radspine.viewer.slices import direction_letter, display_shape, encode_slice, window_stack

    rng = np.random.default_rng(0)
    stack = rng.normal(300.0, 80.0, size=(3, 96, 80)).astype(np.float32)
    stack[1, 10, 10] = np.nan
    u8 = window_stack(stack)
    assert u8.dtype == np.uint8 and u8.shape == stack.shape
    lo, hi = np.percentile(stack[np.isfinite(stack)], [0.5, 99.8])
    assert (u8[stack <= lo] == 0).all() and (u8[stack >= hi] == 255).all()
    assert display_shape(1024, 768, 512) == (512, 384) and display_shape(96, 80, 512) == (96, 80)
    for fmt, q in (("png", 90), ("webp", 100)):  # both lossless: the decoded slice is the stored one
        im = Image.open(__import__("io").BytesIO(encode_slice(u8[0], (96, 80), fmt, q)))
        assert im.size == (80, 96)
        np.testing.assert_array_equal(np.asarray(im.convert("L")), u8[0])
    small = Image.open(__import__("io").BytesIO(encode_slice(u8[0], display_shape(96, 80, 48), "webp", 80)))
    assert small.size == (40, 48)
    # LPS: +x patient left, +y posterior, +z superior.
    assert [direction_letter(v) for v in ([1, 0.1, 0], [-1, 0, 0], [0, -1, 0.2], [0, 0, 1], [0.1, 0, -1])] == \
        ["L", "R", "A", "S", "I"]


def test_payload_points_follow_dicom_geometry(fake_pages, fake_pred: Path, phantom_root: Path) -> None:
    """Own slice: the predicted pixel exactly; every other stack: radspine.geometry's projection and plane offset."""
    from radspine.geometry import continuous_index, pixel_to_world, project_point

    preds = pd.read_csv(fake_pred / "predictions.csv").set_index("row_id")
    sid, page = next(iter(fake_pages.pages.items()))
    d = _payload(page)
    vols = _stacks(phantom_root, sid)
    assert [s["series_id"] for s in d["stacks"]] == [v.series_id for v in vols]
    assert [s["description"] for s in d["stacks"]][:2] == ["Sagittal T2/STIR", "Sagittal T1"]
    assert len(d["rows"]) == 25
    checked = 0
    for r in d["rows"]:
        p, want = r["point"], preds.loc[r["row_id"]]
        assert (p["series_id"], p["instance_number"]) == (want["series_id"], want["instance_number"])
        own = vols[p["stack"]]
        assert own.series_id == p["series_id"] and own.instance_numbers[p["slice"]] == p["instance_number"]
        assert p["proj"][str(p["stack"])][:2] == [want["x"], want["y"]]
        world = pixel_to_world(own, want["x"], want["y"], p["slice"])
        np.testing.assert_allclose(p["world"], [want["world_x"], want["world_y"], want["world_z"]], atol=1e-6)
        for j, vol in enumerate(vols):
            if j == p["stack"]:
                continue
            k, y, x = continuous_index(vol, world)
            np.testing.assert_allclose(p["proj"][str(j)], [x, y, world @ vol.normal], atol=1e-3)
            near = project_point(vol, world)  # the slice the page shows the point nearest to, and how far
            np.testing.assert_allclose(p["proj"][str(j)][2] - d["stacks"][j]["offsets"][near.slice_index],
                                       near.distance_mm, atol=1e-3)
            checked += 1
    assert checked == 25 * (len(vols) - 1)
    doubtful = next(r for r in d["rows"] if r["flag"].startswith("doubtful"))
    assert doubtful["unusable"] and doubtful["condition"] == "left_neural_foraminal_narrowing"


def test_unmoved_points_keep_their_text(fake_pages, fake_pred: Path) -> None:
    from radspine.viewer.build import read_points_text

    pts = read_points_text(fake_pred / "points.csv")
    lines = (fake_pred / "points.csv").read_text().splitlines()[1:]
    assert [line.rsplit(",", 2)[1:] for line in lines] == pts[["x_text", "y_text"]].values.tolist()
    d = _payload(next(iter(fake_pages.pages.values())))
    texts = {(r["point"]["x_text"], r["point"]["y_text"]) for r in d["rows"]}
    assert texts <= set(map(tuple, pts[["x_text", "y_text"]].values.tolist()))


def test_view_command_pages_index_and_errors(fake_pred: Path, phantom_root: Path, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radspine.cli import app

    runner = CliRunner()
    out = tmp_path / "viewer"
    res = runner.invoke(app, ["view", "--data", str(phantom_root), "--split", "train", "--predictions", str(fake_pred),
                              "--out", str(out), "--format", "png", "--workers", "2", "--quiet"])
    assert res.exit_code == 0, res.output
    assert res.stdout.strip().splitlines()[-1] == f"2 study page(s) → {out / 'index.html'}"
    index = (out / "index.html").read_text()
    order = [int(s) for s in re.findall(r'data-study="(\d+)"', index)]
    summ = json.loads((out / "viewer_index.json").read_text())["studies"]
    sev = [summ[str(s)]["max_expected_severity"] for s in order]
    assert len(order) == 2 and sev == sorted(sev, reverse=True)
    for s in order:
        page = out / f"study_{s}.html"
        assert page.stat().st_size < 2_000_000 and "http://" not in page.read_text().replace("http://www.w3.org", "")
        assert _payload(page)["image_format"] == "png"
    # Two processes build the pages one process builds, byte for byte.
    serial = build_viewer(phantom_root, fake_pred, tmp_path / "serial", split="train", image_format="png", workers=1)
    assert sorted(serial.pages) == sorted(order)
    for s in order:
        assert (tmp_path / "serial" / f"study_{s}.html").read_bytes() == (out / f"study_{s}.html").read_bytes()
    # One study again: the other stays in the index.
    res = runner.invoke(app, ["view", "--data", str(phantom_root), "--split", "train", "--predictions", str(fake_pred),
                              "--out", str(out), "--study", str(order[0]), "--quiet"])
    assert res.exit_code == 0 and len(re.findall(r'data-study="', (out / "index.html").read_text())) == 2
    for args, msg in (
        (["--study", "123"], "no predictions for study 123"),
        (["--format", "gif"], "unknown image format 'gif'"),
        (["--points", str(tmp_path / "nope.csv")], "points file not found"),
    ):
        res = runner.invoke(app, ["view", "--data", str(phantom_root), "--split", "train", "--predictions",
                                  str(fake_pred), "--out", str(tmp_path / "v2"), *args])
        assert res.exit_code == 2 and msg in res.output and "Traceback" not in res.output, res.output


# ---------------------------------------------------------------------------------------------- browser
@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory):
    from helpers.browser import start_browser

    downloads = tmp_path_factory.mktemp("downloads")
    drv = start_browser(downloads)
    drv.downloads = downloads
    yield drv
    drv.quit()


_DRAWN_JS = """
var rid = arguments[0], kind = arguments[1], out = null;
document.querySelectorAll('section.view').forEach(function (sec) {
  if (out || sec.style.display === 'none') return;
  var g = sec.querySelector('g.pt.' + kind + '[data-row="' + rid + '"]');
  if (!g) return;
  var c = g.querySelector('circle.dot').getBoundingClientRect(), im = sec.querySelector('img.slice').getBoundingClientRect();
  var t = g.querySelector('text');
  out = {view: +sec.getAttribute('data-view'), stack: +sec.getAttribute('data-stack'), slice: +sec.getAttribute('data-slice'),
         cx: (c.left + c.right) / 2, cy: (c.top + c.bottom) / 2, d: +g.getAttribute('data-d'),
         label: t ? t.textContent : '', img: [im.left, im.top, im.width, im.height]};
});
return out;
"""


def _expected_screen(drawn: dict, stack: dict, x: float, y: float) -> tuple[float, float]:
    """Where pixel (x, y) of a stack lies on screen: the image spans the stack's pixel grid edge to edge."""
    left, top, w, h = drawn["img"]
    return left + (x + 0.5) / stack["cols"] * w, top + (y + 0.5) / stack["rows"] * h


def _screenshot(drv) -> np.ndarray:
    import io

    from PIL import Image

    return np.asarray(Image.open(io.BytesIO(drv.get_screenshot_as_png())).convert("RGB")).astype(int)


def test_each_point_is_drawn_at_its_predicted_pixel(browser, fake_pages, fake_pred: Path) -> None:
    from helpers.browser import open_page, severe_console_errors

    preds = pd.read_csv(fake_pred / "predictions.csv").set_index("row_id")
    sid, page = next(iter(fake_pages.pages.items()))
    open_page(browser, page)
    d = browser.execute_script("return window.radspineViewer.data")
    shots: dict[tuple[int, int, int], np.ndarray] = {}
    for r in d["rows"]:
        want = preds.loc[r["row_id"]]
        browser.execute_script("window.radspineViewer.jumpTo(arguments[0])", r["row_id"])
        got = browser.execute_script(_DRAWN_JS, r["row_id"], "on")
        assert got is not None, f"{r['row_id']}: not drawn on its own slice"
        st = d["stacks"][got["stack"]]
        assert (st["series_id"], st["instances"][got["slice"]]) == (want["series_id"], want["instance_number"])
        ex, ey = _expected_screen(got, st, want["x"], want["y"])
        assert abs(got["cx"] - ex) < 0.5 and abs(got["cy"] - ey) < 0.5, (r["row_id"], got, ex, ey)
        # The screenshot shows the grade's colour there (the marker's fill, opaque at its centre); one screenshot
        # per slice shown, with no row selected (the selection ring could cross another point).
        browser.execute_script("window.radspineViewer.state.selected = null; window.radspineViewer.render()")
        key = (got["view"], got["stack"], got["slice"])
        if key not in shots:
            shots[key] = _screenshot(browser)
        px = shots[key][int(round(got["cy"] - 0.5)), int(round(got["cx"] - 0.5))]
        assert np.abs(px - GRADE_RGB[r["grade"]]).max() <= 12, (r["row_id"], px, r["grade"])
    assert not severe_console_errors(browser)


def test_scrolling_fades_a_point_with_its_signed_distance(browser, fake_pages, phantom_root: Path) -> None:
    from helpers.browser import open_page
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.actions.wheel_input import ScrollOrigin
    from selenium.webdriver.common.by import By

    from radspine.geometry import pixel_to_world

    sid, page = next(iter(fake_pages.pages.items()))
    open_page(browser, page)
    rid = row_id(sid, "spinal_canal_stenosis", "l2_l3")
    browser.execute_script("window.radspineViewer.jumpTo(arguments[0])", rid)
    before = browser.execute_script(_DRAWN_JS, rid, "on")
    stage = browser.find_elements(By.CSS_SELECTOR, "section.view .stage")[before["view"]]
    d = browser.execute_script("return window.radspineViewer.data")
    n = len(d["stacks"][before["stack"]]["instances"])
    step = 1 if before["slice"] + 1 < n else -1
    ActionChains(browser).scroll_from_origin(ScrollOrigin.from_element(stage), 0, 120 * step).perform()
    after = browser.execute_script(_DRAWN_JS, rid, "off")
    assert after is not None and after["slice"] == before["slice"] + step
    assert browser.find_elements(By.CSS_SELECTOR, "section.view input.slider")[before["view"]].get_attribute("value") == str(after["slice"])
    assert (after["cx"], after["cy"]) == pytest.approx((before["cx"], before["cy"]), abs=0.01)
    vol = _stacks(phantom_root, sid)[before["stack"]]
    r = next(r for r in d["rows"] if r["row_id"] == rid)
    world = pixel_to_world(vol, r["point"]["x"], r["point"]["y"], before["slice"])
    dist = float(world @ vol.normal - vol.slice_offsets[after["slice"]])
    assert after["d"] == pytest.approx(dist, abs=1e-3) and abs(dist) > 0.5
    assert f"Δ{'+' if dist >= 0 else '−'}{abs(dist):.1f} mm" in after["label"]
    # Window/level: a drag on the image (not on a point) changes the display window.
    slope_js = "return document.querySelector('#wl-' + arguments[0] + ' feFuncR').getAttribute('slope')"
    slope0 = browser.execute_script(slope_js, before["view"])
    ActionChains(browser).move_to_element_with_offset(stage, -int(stage.size["width"] * 0.4), -int(stage.size["height"] * 0.4)) \
        .click_and_hold().move_by_offset(-60, 0).release().perform()
    slope1 = browser.execute_script(slope_js, before["view"])
    assert float(slope1) > float(slope0) == 1.0


def test_js_geometry_matches_radspine_geometry(browser, fake_pages, phantom_root: Path) -> None:
    from helpers.browser import open_page

    from radspine.geometry import continuous_index, pixel_to_world

    sid, page = next(iter(fake_pages.pages.items()))
    open_page(browser, page)
    vols = _stacks(phantom_root, sid)
    rng = np.random.default_rng(1)
    for j, vol in enumerate(vols):
        k = int(rng.integers(len(vol.instance_numbers)))
        x, y = (float(v) for v in rng.uniform(0, vol.pixels.shape[1] - 1, 2))
        w_js = browser.execute_script(
            "var V = window.radspineViewer; return V.pixelToWorld(V.data.stacks[arguments[0]], arguments[1], arguments[2], arguments[3])",
            j, x, y, k)
        world = pixel_to_world(vol, x, y, k)
        np.testing.assert_allclose(w_js, world, atol=1e-9)
        for m, other in enumerate(vols):
            p_js = browser.execute_script("var V = window.radspineViewer; return V.projectWorld(V.data.stacks[arguments[0]], arguments[1])",
                                          m, list(map(float, world)))
            kk, yy, xx = continuous_index(other, world)
            np.testing.assert_allclose(p_js, [xx, yy, world @ other.normal], atol=1e-9)


def test_drag_marks_the_row_and_save_writes_the_points_format(browser, fake_pages, fake_pred: Path) -> None:
    from helpers.browser import open_page
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By

    sid, page = next(iter(fake_pages.pages.items()))
    open_page(browser, page)
    rid = row_id(sid, "spinal_canal_stenosis", "l3_l4")
    browser.execute_script("window.radspineViewer.jumpTo(arguments[0])", rid)
    got = browser.execute_script(_DRAWN_JS, rid, "on")
    d = browser.execute_script("return window.radspineViewer.data")
    st = d["stacks"][got["stack"]]
    dot = browser.find_element(By.CSS_SELECTOR, f'section.view[data-view="{got["view"]}"] g.pt.on[data-row="{rid}"] circle.dot')
    ActionChains(browser).click_and_hold(dot).move_by_offset(0, 10).move_by_offset(0, 10).release().perform()
    r = browser.execute_script("var id = arguments[0]; return window.radspineViewer.data.rows.filter("
                               "function (r) { return r.row_id === id; })[0]", rid)
    orig = pd.read_csv(fake_pred / "predictions.csv").set_index("row_id").loc[rid]
    px_per_row = got["img"][3] / st["rows"]
    assert r["moved"] and r["point"]["y"] == pytest.approx(orig["y"] + 20 / px_per_row, abs=2e-3)
    assert r["point"]["x"] == pytest.approx(orig["x"], abs=2e-3)
    assert "moved" in browser.find_element(By.CSS_SELECTOR, f'#rows tr[data-row="{rid}"]').get_attribute("class")
    csv = browser.execute_script("return window.radspineViewer.pointsCsv()")
    lines = csv["text"].splitlines()
    orig_lines = (fake_pred / "points.csv").read_text().splitlines()
    assert lines[0] == orig_lines[0]
    moved = [ln for ln in lines[1:] if ",Spinal Canal Stenosis,L3/L4," in ln]
    assert len(moved) == 1 and moved[0] not in orig_lines
    kept = [ln for ln in lines[1:] if ln not in moved]
    doubtful = [ln for ln in orig_lines if ln.startswith(f"{sid},") and ",Left Neural Foraminal Narrowing,L2/L3," in ln]
    want = [ln for ln in orig_lines[1:] if ln.startswith(f"{sid},") and ",Spinal Canal Stenosis,L3/L4," not in ln
            and ln not in doubtful]
    assert sorted(kept) == sorted(want) and len(kept) == 23  # 25 less the moved row and the doubtful one
    assert csv["moved"] == 1 and csv["out"] == 1
    # The doubtful point is kept once a person says so; undo puts the moved one back.
    browser.find_element(By.CSS_SELECTOR, f'#rows tr[data-row="{row_id(sid, "left_neural_foraminal_narrowing", "l2_l3")}"] button[data-act="keep"]').click()
    browser.find_element(By.CSS_SELECTOR, f'#rows tr[data-row="{rid}"] button[data-act="undo"]').click()
    csv = browser.execute_script("return window.radspineViewer.pointsCsv()")
    assert sorted(csv["text"].splitlines()[1:]) == sorted(ln for ln in orig_lines[1:] if ln.startswith(f"{sid},"))


def test_missing_image_and_missing_axial_series_still_open(browser, fake_pages, fake_pred: Path, phantom_root: Path,
                                                          tmp_path: Path) -> None:
    from helpers.browser import open_page, severe_console_errors
    from selenium.webdriver.common.by import By

    from radspine.constants import AX_T2
    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.report import load_predictions
    from radspine.viewer.page import study_html
    from radspine.viewer.payload import study_payload

    sid, page = next(iter(fake_pages.pages.items()))
    d = _payload(page)
    k0 = d["stacks"][0]["default_slice"]
    d["stacks"][0]["images"][k0] = None  # not stored
    d["stacks"][1]["images"][d["stacks"][1]["default_slice"]] = "data:image/webp;base64,AAAA"  # undecodable
    broken = tmp_path / "broken.html"
    broken.write_text(study_html(d))
    open_page(browser, broken)
    msgs = [e.text for e in browser.find_elements(By.CSS_SELECTOR, "section.view .msg")]
    assert "missing from this page" in msgs[0] and f"instance {d['stacks'][0]['instances'][k0]}" in msgs[0]
    assert "could not be decoded" in msgs[1]
    assert browser.execute_script(_DRAWN_JS, d["rows"][0]["row_id"], "on") is not None  # points still placed
    assert not [m for m in severe_console_errors(browser) if "data:image" not in m]

    # A study without an axial series: two views, the notes say so, the recess rows are listed without a point.
    study = Dataset.open(phantom_root).study(sid, "train")
    vols = load_study_volumes(study)
    vols.axial = []
    vols.problems[AX_T2] = "no Axial T2 series"
    preds = load_predictions(fake_pred)
    preds = preds[preds["study_id"] == sid].copy()
    recess = preds["condition"].str.contains("subarticular")
    preds.loc[recess, ["series_id", "instance_number"]] = -1
    preds.loc[recess, ["x", "y", "world_x", "world_y", "world_z"]] = np.nan
    preds.loc[recess, "flag"] = "not localised: no Axial T2 series"
    no_ax = tmp_path / "no_axial.html"
    no_ax.write_text(study_html(study_payload(study, preds, vols)))
    open_page(browser, no_ax)
    assert "no Axial T2 series" in browser.find_element(By.ID, "notes").text
    views = browser.find_elements(By.CSS_SELECTOR, "section.view")
    assert sum(v.is_displayed() for v in views) == 2
    rows = browser.find_elements(By.CSS_SELECTOR, "#rows tbody tr")
    assert len(rows) == 25 and sum("no point" in r.text for r in rows) == 10
    assert not severe_console_errors(browser)


def test_index_sorts_by_severity_then_by_doubt(browser, fake_pages) -> None:
    from helpers.browser import open_page
    from selenium.webdriver.common.by import By

    browser.get(fake_pages.index.resolve().as_uri())
    order = lambda: [int(tr.get_attribute("data-study")) for tr in browser.find_elements(By.CSS_SELECTOR, "#studies tbody tr")]  # noqa: E731
    summ = json.loads((fake_pages.index.parent / "viewer_index.json").read_text())["studies"]
    by_severity = sorted(map(int, summ), key=lambda s: -summ[str(s)]["max_expected_severity"])
    by_doubt = sorted(map(int, summ), key=lambda s: -summ[str(s)]["n_doubtful"])
    assert order() == by_severity and by_doubt == by_severity[::-1]
    browser.find_element(By.ID, "by-doubt").click()
    assert order() == by_doubt
    browser.find_element(By.ID, "by-severity").click()
    assert order() == by_severity
    link = browser.find_elements(By.CSS_SELECTOR, "#studies tbody tr a")[0].get_attribute("href")
    open_page(browser, Path(link.removeprefix("file://")))


# -------------------------------------------------------------------- the loop on the demo: drag, save, re-grade
def _one_study_data(src: Path, sid: int, dst: Path) -> Path:
    """A dataset root with only study ``sid`` of the test split (its images linked, not copied)."""
    (dst / "test_images").mkdir(parents=True)
    (dst / "test_images" / str(sid)).symlink_to((src / "test_images" / str(sid)).resolve())
    desc = pd.read_csv(src / "test_series_descriptions.csv")
    desc[desc["study_id"] == sid].to_csv(dst / "test_series_descriptions.csv", index=False)
    return dst


def _study_lines(path: Path, sid: int, dst: Path) -> Path:
    """The study's lines of a points CSV (and its detail sidecar), text unchanged."""
    from radspine.points import detail_path

    for src, out in ((path, dst), (detail_path(path), detail_path(dst))):
        lines = src.read_text().splitlines()
        out.parent.mkdir(parents=True, exist_ok=True)
        out.write_text("\n".join([lines[0], *(ln for ln in lines[1:] if ln.startswith(f"{sid},"))]) + "\n")
    return dst


def test_demo_page_drag_save_and_regrade(demo_run: dict, browser, tmp_path: Path) -> None:
    """The issue's loop: open a demo study's page, drag one point, save, `predict --points` the saved file: that
    row's image features change, every other row's own features stay identical."""
    from helpers.browser import open_page, severe_console_errors, wait_for_file
    from selenium.webdriver.common.action_chains import ActionChains
    from selenium.webdriver.common.by import By
    from typer.testing import CliRunner

    from radspine.cli import app
    from radspine.points import is_unusable, read_points_csv

    root = Path(demo_run["out"])
    assert demo_run["viewer"]["index"] == str(root / "viewer" / "index.html")
    index = (root / "viewer" / "index.html").read_text()
    ids = [int(s) for s in re.findall(r'data-study="(\d+)"', index)]
    assert sorted(ids) == sorted(pd.read_csv(root / "data" / "test_series_descriptions.csv")["study_id"].unique())
    pts = pd.read_csv(root / "points_detail.csv", keep_default_na=False)
    ok = pts[(pts["condition"] == "Spinal Canal Stenosis") & (pts["level"] == "L3/L4") & (pts["flag"] == "")]
    sid = int(ok["study_id"].iloc[0])
    rid = row_id(sid, "spinal_canal_stenosis", "l3_l4")
    page = root / "viewer" / f"study_{sid}.html"
    open_page(browser, page)
    d = browser.execute_script("return window.radspineViewer.data")
    model_rows = [r for r in d["rows"] if r["graded_from"] == "model"]
    assert model_rows and all(r["image_evidence"] or r["prior_context"] for r in model_rows)
    browser.execute_script("window.radspineViewer.jumpTo(arguments[0])", rid)
    got = browser.execute_script(_DRAWN_JS, rid, "on")
    st = d["stacks"][got["stack"]]
    x0, y0 = (float(ok[ok["study_id"] == sid][c].iloc[0]) for c in ("x", "y"))
    assert (got["cx"], got["cy"]) == pytest.approx(_expected_screen(got, st, x0, y0), abs=0.5)
    dy = round(4 * got["img"][3] / st["rows"])  # about four image pixels down
    dot = browser.find_element(By.CSS_SELECTOR, f'section.view[data-view="{got["view"]}"] g.pt.on[data-row="{rid}"] circle.dot')
    ActionChains(browser).click_and_hold(dot).move_by_offset(0, dy // 2).move_by_offset(0, dy - dy // 2).release().perform()
    for old in browser.downloads.glob(f"points_study_{sid}*.csv"):
        old.unlink()
    browser.find_element(By.ID, "save").click()
    saved = wait_for_file(browser.downloads, f"points_study_{sid}*.csv")
    assert not severe_console_errors(browser)

    # The download is a valid points CSV: the moved row replaced, the others' lines unchanged.
    got_pts = read_points_csv(saved)
    assert set(got_pts["study_id"]) == {sid}
    orig_path = _study_lines(root / "points.csv", sid, tmp_path / "orig" / "points.csv")
    orig = orig_path.read_text().splitlines()
    new = saved.read_text().splitlines()
    assert new[0] == orig[0]
    changed = [ln for ln in new[1:] if ln not in orig]
    assert len(changed) == 1 and ",Spinal Canal Stenosis,L3/L4," in changed[0]
    mv = got_pts[(got_pts["condition"] == "spinal_canal_stenosis") & (got_pts["level"] == "l3_l4")].iloc[0]
    assert mv["y"] == pytest.approx(y0 + dy * st["rows"] / got["img"][3], abs=2e-3) and mv["x"] == pytest.approx(x0, abs=2e-3)
    # Points the localizer flagged unusable are left out (predict did not grade them either), the rest kept as is.
    flagged = pts[(pts["study_id"] == sid) & pts["flag"].map(is_unusable)]
    flagged = {f",{c},{lv}," for c, lv in zip(flagged["condition"], flagged["level"])}
    want = [ln for ln in orig[1:] if ",Spinal Canal Stenosis,L3/L4," not in ln and not any(f in ln for f in flagged)]
    assert sorted(ln for ln in new[1:] if ln not in changed) == sorted(want)

    # Re-grade: the original points (with their flags) vs the saved file, on this study alone.
    data = _one_study_data(root / "data", sid, tmp_path / "data")
    runner = CliRunner()
    for name, given in (("a", orig_path), ("b", saved)):
        res = runner.invoke(app, ["predict", "--data", str(data), "--model", str(root / "model"), "--out",
                                  str(tmp_path / name / "submission.csv"), "--points", str(given), "--workers", "1", "--quiet"])
        assert res.exit_code == 0, res.output
    fa = pd.read_parquet(tmp_path / "a" / "predict_work" / "features" / "features.parquet").set_index("row_id")
    fb = pd.read_parquet(tmp_path / "b" / "predict_work" / "features" / "features.parquet").set_index("row_id")
    # Context columns read the neighbouring levels, the other side and the canal at the level, by design.
    across = ("ctx_", "geo_gap_prev_mm", "geo_gap_next_mm", "geo_lateral_mm")
    own = [c for c in fa.columns if not c.startswith(across) and c in fb.columns]
    rad = [c for c in own if c.startswith("rad_sagt2_original_firstorder")]
    assert fb.loc[rid, "pt_z"] != fa.loc[rid, "pt_z"] or fb.loc[rid, "pt_y"] != fa.loc[rid, "pt_y"]
    assert not np.allclose(fa.loc[rid, rad].to_numpy(float), fb.loc[rid, rad].to_numpy(float), equal_nan=True)
    others = [r for r in fa.index if r != rid]
    pd.testing.assert_frame_equal(fa.loc[others, own], fb.loc[others, own])
    pb = pd.read_csv(tmp_path / "b" / "predictions.csv").set_index("row_id")
    assert pb.loc[rid, "y"] == pytest.approx(mv["y"], abs=1e-5)
