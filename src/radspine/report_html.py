"""The small static ``index.html`` of a report folder: one row per study linking its PNG and JSON."""

from __future__ import annotations

from html import escape

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 13px; }
img.thumb { width: 260px; }
.dot { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin: 0 0.3em 0 1em; }
table.rows td { font-size: 12px; }
.h { color: #555; font-style: italic; }
"""


def _signed(v: float) -> str:
    """Same numbers as the PNG: two decimals, one significant digit below 0.01."""
    return f"{'+' if v > 0 else '−'}{abs(v):.2f}" if abs(v) >= 0.01 else f"{'+' if v > 0 else '−'}{abs(v):.1g}"


def _contribs(cs: list[dict]) -> str:
    return ", ".join(f"{escape(c['plain'])} ({_signed(c['value'])})" for c in cs) or "—"


def _rows_table(d: dict, colors: tuple[str, ...]) -> str:
    """One study's rows by level: grade, source/flag, measurements (cut-offs as context), explanation."""
    from radspine.constants import CONDITIONS, LEVEL_NAMES, LEVELS, SEVERITIES

    def order(r: dict) -> tuple[int, int]:
        lv, c = r.get("level"), r.get("condition")
        return (LEVELS.index(lv) if lv in LEVELS else 99, CONDITIONS.index(c) if c in CONDITIONS else 99)

    out = []
    for r in sorted(d.get("rows", []), key=order):
        g = int(r["grade"])
        meas = "<br>".join(escape(m["text"]) for m in r.get("measurements", [])) or "—"
        expl = (f'<span class="h">image evidence:</span> {_contribs(r.get("image_evidence", []))}<br>'
                f'<span class="h">prior/context:</span> {_contribs(r.get("prior_context", []))}')
        out.append(
            f"<tr><td>{escape(LEVEL_NAMES.get(r['level'], r['level']))}</td><td>{escape(r['condition'].replace('_', ' '))}</td>"
            f'<td style="color:{escape(colors[g])}"><b>{escape(SEVERITIES[g])}</b> '
            f"{r['normal_mild']:.2f}/{r['moderate']:.2f}/{r['severe']:.2f}</td>"
            f"<td>{escape(r.get('status', ''))}</td><td>{meas}</td><td>{expl}</td></tr>"
        )
    return (
        "<details><summary>rows</summary><table class=\"rows\"><tr><th>level</th><th>condition</th>"
        "<th>grade, P(N/M)/P(Mod)/P(Sev)</th><th>graded from · point</th>"
        "<th>measured (published cut-offs: context, not the grade)</th><th>why (TreeSHAP)</th></tr>"
        + "".join(out) + "</table></details>"
    )


def index_html(
    docs: list[dict], failed: dict[str, str], colors: tuple[str, ...], legend_lines: tuple[str, ...] = ()
) -> str:
    """HTML listing study reports (``study_<id>.json`` contents), each with its rows by level (measurements,
    source, explanation), the legend lines, and the studies that failed to render."""
    from radspine.constants import SEVERITIES

    legend = "".join(
        f'<span class="dot" style="background:{escape(c)}"></span>{escape(s)}' for s, c in zip(SEVERITIES, colors)
    )
    rows = []
    for d in sorted(docs, key=lambda d: d["study_id"]):
        png = escape(d["png"])
        counts = ", ".join(f"{escape(k)} {v}" for k, v in d.get("n_by_grade", {}).items())
        notes = "<br>".join(escape(n) for n in [d.get("note", ""), *d.get("notes", [])] if n)
        rows.append(
            f'<tr><td><a href="{png}">{d["study_id"]}</a><br><a href="study_{d["study_id"]}.json">json</a></td>'
            f'<td><a href="{png}"><img class="thumb" src="{png}" alt="study {d["study_id"]}"></a></td>'
            f'<td>{d.get("max_expected_severity", float("nan")):.2f}</td><td>{counts}</td><td>{notes}</td></tr>'
            f'<tr><td></td><td colspan=4>{_rows_table(d, colors)}</td></tr>'
        )
    for sid, why in sorted(failed.items()):
        rows.append(f"<tr><td>{escape(sid)}</td><td colspan=3>not rendered</td><td>{escape(why)}</td></tr>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>radspine study reports</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>radspine study reports</h1>\n"
        f"<p>Point colour = predicted grade: {legend}</p>\n"
        "<p>Each PNG shows the mid-sagittal T2 with the canal points, the para-sagittal T1 of each side with the "
        "foramina and one axial slice per level with both recesses; beside each level, the probabilities, "
        "where each grade came from, the measurements and the features that pushed each row toward its "
        "predicted grade (TreeSHAP, raw model score), image evidence apart from prior/context.</p>\n"
        f"<ul>{''.join(f'<li>{escape(t)}</li>' for t in legend_lines)}</ul>\n"
        "<table><tr><th>study</th><th>report</th><th>max expected severity</th><th>rows per grade</th>"
        "<th>notes</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>\n"
    )
