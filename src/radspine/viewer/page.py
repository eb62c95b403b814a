"""The viewer's HTML: a study page (the shipped script and style inlined, the study's data as JSON) and the
index of studies. The script is hand-written plain JavaScript shipped in ``static/``: no build step, no
framework and no CDN, so a page opens from the file system on a machine without network and keeps working
as long as browsers run ES2017."""

from __future__ import annotations

import json
from functools import cache
from html import escape
from pathlib import Path

STATIC = Path(__file__).resolve().parent / "static"


@cache
def static_text(name: str) -> str:
    """A shipped script or style sheet (package data under ``radspine/viewer/static``)."""
    return (STATIC / name).read_text(encoding="utf-8")


def _json_for_script(obj) -> str:
    """JSON safe inside ``<script type="application/json">``: no ``<`` at all, so no ``</script>``."""
    return json.dumps(obj, separators=(",", ":"), allow_nan=False).replace("<", "\\u003c")


def study_html(payload: dict) -> str:
    """One study's self-contained page: the viewer script builds everything from the embedded JSON."""
    sid = payload["study_id"]
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\">"
        "<meta name=\"viewport\" content=\"width=device-width, initial-scale=1\">"
        f"<title>Study {sid} · radspine viewer</title><style>{static_text('viewer.css')}</style></head>\n"
        "<body><div id=\"app\"><noscript>The study viewer needs JavaScript; the data is in this file's "
        "radspine-data block.</noscript></div>\n"
        f"<script type=\"application/json\" id=\"radspine-data\">{_json_for_script(payload)}</script>\n"
        f"<script>{static_text('viewer.js')}</script>\n</body></html>\n"
    )


def _fmt(v, spec: str, none: str = "—") -> str:
    return none if v is None else format(v, spec)


def index_html(summaries: list[dict], failed: dict[str, str]) -> str:
    """The index: one row per study, most severe finding first; a button re-sorts by most doubtful point."""
    from radspine.constants import SEVERITIES
    from radspine.report import GRADE_COLORS

    rows = []
    order = sorted(summaries, key=lambda s: (-(s.get("max_expected_severity") or 0.0), s["study_id"]))
    for s in order:
        g = int(s.get("worst_grade", 0))
        counts = " / ".join(str(n) for n in s.get("n_by_grade", []))
        doubt = "<br>".join(escape(d) for d in s.get("doubtful", []))
        notes = "<br>".join(escape(n) for n in s.get("notes", []))
        mc = s.get("min_confidence")
        rows.append(
            f'<tr data-severity="{_fmt(s.get("max_expected_severity"), ".6f", "0")}" '
            f'data-doubtful="{int(s.get("n_doubtful", 0))}" data-confidence="{_fmt(mc, ".6f", "1")}" '
            f'data-study="{int(s["study_id"])}">'
            f'<td><a href="{escape(s["page"])}">{int(s["study_id"])}</a>'
            + (f'<div class="uid">{escape(s["study_uid"])}</div>' if s.get("study_uid") else "")
            + f'</td><td><span class="dot" style="background:{GRADE_COLORS[g]}"></span>{escape(s.get("worst", ""))}</td>'
            f'<td class="num">{_fmt(s.get("max_expected_severity"), ".2f")}</td><td class="num">{counts}</td>'
            f'<td class="num">{int(s.get("n_doubtful", 0))}</td><td>{doubt}</td><td class="num">{_fmt(mc, ".2f")}</td>'
            f'<td class="num">{s.get("bytes", 0) / 1e6:.2f}</td><td class="notes">{notes}</td></tr>'
        )
    fails = "".join(f"<li>study {escape(sid)}: {escape(why)}</li>" for sid, why in sorted(failed.items()))
    legend = " ".join(f'<span class="dot" style="background:{c}"></span>{escape(s)}' for s, c in zip(SEVERITIES, GRADE_COLORS))
    return (
        "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>radspine study viewer</title>"
        f"<style>{static_text('index.css')}</style></head><body>\n<h1>radspine study viewer</h1>\n"
        f"<p>{len(order)} studies. Colour = grade: {legend}. Expected severity is P(Moderate)·0.5 + P(Severe) "
        "(0–1). A doubtful point is one the localizer flagged (doubtful, failed, not localised): its row was "
        "not graded from the image.</p>\n"
        "<p>Sort: <button id=\"by-severity\" type=\"button\">most severe finding</button> "
        "<button id=\"by-doubt\" type=\"button\">most doubtful points</button></p>\n"
        "<table id=\"studies\"><thead><tr><th>study</th><th>most severe finding</th><th>max expected severity</th>"
        f"<th>rows {' / '.join(SEVERITIES)}</th><th>doubtful points</th><th>which</th>"
        "<th>lowest point confidence</th><th>page MB</th><th>notes</th></tr></thead>\n<tbody>"
        + "\n".join(rows) + "</tbody></table>\n"
        + (f"<h2>Not built</h2><ul>{fails}</ul>\n" if fails else "")
        + f"<script>{static_text('index.js')}</script>\n</body></html>\n"
    )
