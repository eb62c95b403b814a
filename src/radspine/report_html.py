"""The small static ``index.html`` of a report folder: one row per study linking its PNG and JSON."""

from __future__ import annotations

from html import escape

_STYLE = """
body { font-family: sans-serif; margin: 1.5em; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 4px 8px; vertical-align: top; font-size: 13px; }
img.thumb { width: 260px; }
.dot { display: inline-block; width: 0.8em; height: 0.8em; border-radius: 50%; margin: 0 0.3em 0 1em; }
"""


def index_html(docs: list[dict], failed: dict[str, str], colors: tuple[str, ...]) -> str:
    """HTML listing study reports (``study_<id>.json`` contents) and the studies that failed to render."""
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
        )
    for sid, why in sorted(failed.items()):
        rows.append(f"<tr><td>{escape(sid)}</td><td colspan=3>not rendered</td><td>{escape(why)}</td></tr>")
    return (
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>radspine study reports</title>"
        f"<style>{_STYLE}</style></head><body>\n<h1>radspine study reports</h1>\n"
        f"<p>Point colour = predicted grade: {legend}</p>\n"
        "<p>Each PNG shows the mid-sagittal T2 with the canal points, the para-sagittal T1 of each side with the "
        "foramina and one axial slice per level with both recesses; beside each level, the probabilities and "
        "the features that pushed each row toward its predicted grade (TreeSHAP, raw model score).</p>\n"
        "<table><tr><th>study</th><th>report</th><th>max expected severity</th><th>rows per grade</th>"
        "<th>notes</th></tr>\n" + "\n".join(rows) + "\n</table></body></html>\n"
    )
