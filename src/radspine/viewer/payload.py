"""One study's viewer data: its stacks (images + geometry), its 25 rows (grades, measurements, explanations)
and each row's point projected into every stack through the DICOM geometry (:mod:`radspine.geometry`).

The page only draws what this builds: a point's pixel on its own slice is the predicted one as is, and its
place on every other stack is the projection of its world position, with the signed distance of that
position from each slice plane (never an array-index mapping between series).
"""

from __future__ import annotations

import logging
from collections import Counter
from typing import Final

import numpy as np
import pandas as pd

from radspine.constants import (
    AX_T2,
    CONDITION_NAMES,
    CONDITIONS,
    LEVEL_NAMES,
    LEVELS,
    SAG_T1,
    SAG_T2,
    SEVERITIES,
    SEVERITY_COLUMNS,
)
from radspine.io.volumes import StudyVolumes
from radspine.types import Study, Volume

log = logging.getLogger(__name__)

PAYLOAD_VERSION: Final[int] = 1
# Short condition tags drawn beside a point (the legend spells them out).
TAGS: Final[dict[str, str]] = {
    "spinal_canal_stenosis": "SCS",
    "left_neural_foraminal_narrowing": "LNF",
    "right_neural_foraminal_narrowing": "RNF",
    "left_subarticular_stenosis": "LSS",
    "right_subarticular_stenosis": "RSS",
}
_TYPE_ORDER: Final[tuple[str, ...]] = (SAG_T2, SAG_T1, AX_T2)


def _finite(v) -> float | None:
    try:
        f = float(v)
    except (TypeError, ValueError):
        return None
    return f if np.isfinite(f) else None


def _stacks_in_order(vols: StudyVolumes) -> list[Volume]:
    """Sagittal T2/STIR, Sagittal T1, then each axial stack; primary stack of a type first."""
    return [v for t in _TYPE_ORDER for v in vols.stacks(t)]


def _stack_label(vol: Volume, vols: list[Volume]) -> str:
    same = [v for v in vols if v.series_id == vol.series_id]
    label = f"{vol.description} · series {vol.series_id}"
    if len(same) > 1:
        label += f" · stack {same.index(vol) + 1}/{len(same)}"
    return label


def _point_of(row: pd.Series, given: dict[tuple[str, str], dict]) -> dict | None:
    """The row's point: exact values from the points file when it has the row, else predictions.csv's."""
    key = (str(row["condition"]), str(row["level"]))
    if key in given:
        return dict(given[key], from_points_file=True)
    x, y = _finite(row.get("x")), _finite(row.get("y"))
    if int(row.get("series_id", -1)) < 0 or x is None or y is None:
        return None
    return {"series_id": int(row["series_id"]), "instance_number": int(row["instance_number"]), "x": x, "y": y,
            "x_text": None, "y_text": None, "from_points_file": False}


def _project(point: dict, row: pd.Series, stacks: list[Volume], notes: list[str]) -> dict:
    """World position of a point and its projection ``[x, y, offset along the normal]`` into every stack."""
    from radspine.geometry import continuous_index, pixel_to_world

    own = next((j for j, v in enumerate(stacks) if v.series_id == point["series_id"]
                and np.any(v.instance_numbers == point["instance_number"])), None)
    if own is not None:
        vol = stacks[own]
        k = vol.slice_index(point["instance_number"])
        world = pixel_to_world(vol, point["x"], point["y"], k)
    else:
        world = np.array([np.nan if _finite(row.get(c)) is None else _finite(row.get(c))
                          for c in ("world_x", "world_y", "world_z")], dtype=float)
        k = None
        where = ("its world position" if np.isfinite(world).all() else "nowhere (no world position either)")
        notes.append(f"{row['row_id']}: series {point['series_id']} instance {point['instance_number']} is not "
                     f"among the readable stacks; drawn at {where}")
    proj: dict[str, list[float]] = {}
    if np.isfinite(world).all():
        for j, vol in enumerate(stacks):
            offset = round(float(world @ vol.normal), 4)
            if j == own:
                proj[str(j)] = [point["x"], point["y"], offset]  # the predicted pixel itself, exactly
            else:
                _, yy, xx = continuous_index(vol, world)
                proj[str(j)] = [round(float(xx), 4), round(float(yy), 4), offset]
    return {**{k_: point[k_] for k_ in ("series_id", "instance_number", "x", "y", "x_text", "y_text", "from_points_file")},
            "stack": own, "slice": k, "world": [float(v) for v in world] if np.isfinite(world).all() else None,
            "proj": proj}


def _default_slice(j: int, vol: Volume, rows: list[dict]) -> int:
    """The slice most of the study's points lie on in this stack, else the middle one."""
    on = Counter(r["point"]["slice"] for r in rows if r["point"] and r["point"]["stack"] == j)
    return on.most_common(1)[0][0] if on else len(vol.instance_numbers) // 2


def _measurement_lines(meas: list[dict], r: pd.Series) -> list[dict]:
    """Measured values with their cut-offs, one line each; unmeasured ones grouped by reason (said once)."""
    from radspine.report import MEASUREMENT_LABELS

    lines = [{"text": m["text"], "measured": True} for m in meas if m["value"] is not None]
    why: dict[str, list[str]] = {}
    for m in meas:
        if m["value"] is None:
            why.setdefault(str(r.get(f"{m['name']}_reason", "")) or "no reason recorded", []).append(
                MEASUREMENT_LABELS[m["name"]][0])
    return lines + [{"text": f"{', '.join(names)} not measured ({reason})", "measured": False}
                    for reason, names in why.items()]


def _row_record(r: pd.Series, expl) -> dict:
    from radspine.points import is_unusable
    from radspine.report import CONDITION_SHORT, row_measurements, row_status

    prior_graded = str(r.get("graded_from", "")).startswith("priors")
    contrib = lambda cs: [{"plain": c.plain, "value": round(float(c.value), 4), "feature": c.feature} for c in cs]  # noqa: E731
    return {
        "row_id": str(r["row_id"]),
        "condition": str(r["condition"]),
        "condition_name": CONDITION_NAMES[str(r["condition"])],
        "condition_short": CONDITION_SHORT[str(r["condition"])],
        "tag": TAGS[str(r["condition"])],
        "level": str(r["level"]),
        "level_name": LEVEL_NAMES[str(r["level"])],
        "probs": [round(float(r[c]), 4) for c in SEVERITY_COLUMNS],
        "expected_severity": round(float(r["expected_severity"]), 4),
        "grade": int(r["grade"]),
        "graded_from": str(r.get("graded_from", "") or "model"),
        "flag": str(r.get("flag", "") or ""),
        "unusable": bool(is_unusable(str(r.get("flag", "") or ""))),
        "confidence": _finite(r.get("confidence")),
        "status": row_status(r)[1],
        "measurements": _measurement_lines(row_measurements(r), r),
        # The model's explanation of a row it did not grade would explain a grade nobody reported.
        "image_evidence": [] if prior_graded or expl is None else contrib(expl.image),
        "prior_context": [] if prior_graded or expl is None else contrib(expl.prior),
    }


def study_payload(
    study: Study,
    preds: pd.DataFrame,
    vols: StudyVolumes,
    *,
    contribs: dict | None = None,
    points: pd.DataFrame | None = None,
    note: str = "",
    study_uid: str = "",
    max_px: int = 512,
    fmt: str = "webp",
    quality: int = 85,
) -> dict:
    """Everything one study's page shows, as a JSON-ready dict (images embedded as data URIs).

    Args:
        preds: the study's rows from :func:`radspine.report.load_predictions`.
        vols: the study's stacks (:func:`radspine.io.volumes.load_study_volumes`).
        contribs: ``{row_id: Explanation}`` (:func:`radspine.report.contributions_for`); empty → none shown.
        points: the study's rows of the points CSV predict graded at (schema columns, CSV names): their x/y
            are kept exactly, so the page's "Save points" writes unmoved rows back unchanged.
        note: why explanations are missing, if they are.
    """
    from radspine.constants import CONDITION_KEYS, LEVEL_KEYS
    from radspine.report import GRADE_COLORS
    from radspine.viewer.slices import stack_geometry, stack_images

    contribs = contribs or {}
    notes: list[str] = [why for why in vols.problems.values() if why]
    stacks = _stacks_in_order(vols)
    given: dict[tuple[str, str], dict] = {}
    if points is not None:
        for p in points.itertuples(index=False):
            given[(CONDITION_KEYS.get(p.condition, p.condition), LEVEL_KEYS.get(p.level, p.level))] = {
                "series_id": int(p.series_id), "instance_number": int(p.instance_number),
                "x": float(p.x), "y": float(p.y),
                # The text as written in the points file: "Save points" writes an unmoved row back unchanged.
                "x_text": getattr(p, "x_text", None), "y_text": getattr(p, "y_text", None)}
    order = {(c, lv): (LEVELS.index(lv), CONDITIONS.index(c)) for c in CONDITIONS for lv in LEVELS}
    preds = preds.assign(_o=[order[(c, lv)] for c, lv in zip(preds["condition"], preds["level"], strict=True)])
    rows = []
    for _, r in preds.sort_values("_o").iterrows():
        rec = _row_record(r, contribs.get(str(r["row_id"])))
        pt = _point_of(r, given)
        rec["point"] = _project(pt, r, stacks, notes) if pt is not None else None
        rows.append(rec)
    missing_rows = {(c, lv) for c in CONDITIONS for lv in LEVELS} - {(r["condition"], r["level"]) for r in rows}
    if missing_rows:
        notes.append(f"{len(missing_rows)} of 25 rows are not in the predictions")

    out_stacks = []
    for j, vol in enumerate(stacks):
        images, shape, problems = stack_images(vol, max_px=max_px, fmt=fmt, quality=quality)
        notes.extend(problems)
        for d in vol.meta.get("dropped_files", []) or []:
            notes.append(f"series {vol.series_id}: file {d.get('file', '?')} not shown: {d.get('error', 'unreadable')}")
        out_stacks.append({"label": _stack_label(vol, stacks), "description": vol.description,
                           "series_id": int(vol.series_id), "stack_index": int(vol.stack_index),
                           "image_shape": shape, "images": images, "default_slice": _default_slice(j, vol, rows),
                           **stack_geometry(vol)})
    first = {t: next((j for j, v in enumerate(stacks) if v.description == t), None) for t in _TYPE_ORDER}
    # The axial stack that holds most recess points goes in the third view.
    ax_counts = Counter(r["point"]["stack"] for r in rows if r["point"] and r["point"]["stack"] is not None
                        and stacks[r["point"]["stack"]].description == AX_T2)
    if ax_counts:
        first[AX_T2] = ax_counts.most_common(1)[0][0]
    return {
        "version": PAYLOAD_VERSION,
        "study_id": int(study.study_id),
        "study_uid": study_uid,
        "split": study.split,
        "severities": list(SEVERITIES),
        "grade_colors": list(GRADE_COLORS),
        "tags": {TAGS[c]: CONDITION_NAMES[c] for c in CONDITIONS},
        "stacks": out_stacks,
        "default_views": [j for j in (first[SAG_T2], first[SAG_T1], first[AX_T2]) if j is not None],
        "rows": rows,
        "note": note,
        "notes": list(dict.fromkeys(notes)),
        "image_format": fmt,
    }


def study_summary(payload: dict) -> dict:
    """The index's line for a study: its most severe finding and its most doubtful point."""
    rows = payload["rows"]
    worst = max(rows, key=lambda r: r["expected_severity"]) if rows else None
    doubtful = [r for r in rows if r["unusable"] or r["point"] is None]
    confs = [r["confidence"] for r in rows if r["confidence"] is not None and r["point"] is not None]
    return {
        "study_id": payload["study_id"],
        "study_uid": payload.get("study_uid", ""),
        "max_expected_severity": worst["expected_severity"] if worst else None,
        "worst": (f"{worst['level_name']} {worst['condition_short'].lower()}: {payload['severities'][worst['grade']]}"
                  if worst else ""),
        "worst_grade": worst["grade"] if worst else 0,
        "n_by_grade": [sum(r["grade"] == g for r in rows) for g in range(3)],
        "n_doubtful": len(doubtful),
        "doubtful": [f"{r['level_name']} {r['condition_short'].lower()}: {r['flag'] or 'no point'}" for r in doubtful][:5],
        "min_confidence": min(confs) if confs else None,
        "notes": payload["notes"][:6],
    }
