"""Per-study visual report: predicted points on the slices, coloured by grade, with the features behind them.

One PNG per study (matplotlib Agg, no pyplot state) plus ``study_<id>.json`` and an ``index.html`` linking them:

* top row: the mid-sagittal T2 slice with the 5 canal points, the para-sagittal T1 slice of each side
  with its 5 foramina (3 image panels);
* one row per level: the axial slice with both subarticular recesses (5 image panels) and, beside it,
  a text panel with, per condition of the level: the three probabilities and expected severity, where
  the grade came from (model, or priors with the reason) and the point's flag, the named measurements
  with units and the published reference cut-offs as context (:func:`measurement_text`), and the top
  TreeSHAP contributions toward the predicted grade split into image evidence (``rad_ mor_ cnn_``) and
  prior/context (level, condition, ``ctx_ geo_ has_``), in plain names;
* a legend above explaining the colours, the point labels, the units and the (Δ mm) tags.

Colours (fixed, colour-blind safe, see :data:`GRADE_COLORS`): Normal/Mild bluish green, Moderate orange,
Severe red. A point is drawn at its predicted pixel when the panel shows its own slice; a point predicted
on another slice of the panel's stack is drawn at its in-plane projection and labelled with its distance
from the shown plane (Δ mm).
"""

from __future__ import annotations

import json
import logging
import re
from collections import Counter
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Final

import numpy as np
import pandas as pd

from radspine.constants import (
    CONDITIONS,
    LEVEL_NAMES,
    LEVELS,
    SERIES_SHORT,
    SEVERITIES,
    SEVERITY_COLUMNS,
    parse_row_id,
)
from radspine.errors import DatasetError, ModelError, RadspineError
from radspine.fsutil import atomic_path, write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

# Okabe–Ito-like colours, readable for colour-blind viewers and never grey (so a grey slice cannot mimic one).
GRADE_COLORS: Final[tuple[str, str, str]] = ("#009E73", "#E69F00", "#CC2529")
CONDITION_SHORT: Final[dict[str, str]] = {
    "spinal_canal_stenosis": "Spinal canal",
    "left_neural_foraminal_narrowing": "Left foramen",
    "right_neural_foraminal_narrowing": "Right foramen",
    "left_subarticular_stenosis": "Left recess",
    "right_subarticular_stenosis": "Right recess",
}
# Image panels: name → (title stem, conditions whose points it shows, levels).
IMAGE_PANELS: Final[tuple[tuple[str, str, tuple[str, ...], tuple[str, ...]], ...]] = (
    ("sagittal_t2", "Mid-sagittal T2 · canal", ("spinal_canal_stenosis",), LEVELS),
    ("foramina_left", "Para-sagittal T1 · left foramina", ("left_neural_foraminal_narrowing",), LEVELS),
    ("foramina_right", "Para-sagittal T1 · right foramina", ("right_neural_foraminal_narrowing",), LEVELS),
    *(
        (f"axial_{lv}", f"Axial · {LEVEL_NAMES[lv]} recesses",
         ("left_subarticular_stenosis", "right_subarticular_stenosis"), (lv,))
        for lv in LEVELS
    ),
)
N_IMAGE_PANELS: Final[int] = len(IMAGE_PANELS)  # 1 + 2 + 5 = 8
N_TEXT_PANELS: Final[int] = len(LEVELS)
POINT_COLUMNS: Final[tuple[str, ...]] = ("series_id", "instance_number", "x", "y")
DEFAULT_DPI: Final[int] = 72
TOP_K: Final[int] = 3
# Font sizes in points; at the default 72 DPI one point is one pixel, so these are the glyph heights in px.
LABEL_FONTSIZE: Final[float] = 9.0
TEXT_FONTSIZE: Final[float] = 8.0
FIGSIZE_IN: Final[tuple[float, float]] = (20.0, 27.0)


# ------------------------------------------------------------------------------------------ plain names
_SERIES_PLAIN = {"sagt1": "T1 sagittal", "sagt2": "T2 sagittal", "axt2": "T2 axial"}
assert set(_SERIES_PLAIN) == set(SERIES_SHORT.values())
_CLASS_PLAIN = {
    "firstorder": "first-order", "glcm": "GLCM", "glrlm": "GLRLM", "glszm": "GLSZM", "gldm": "GLDM",
    "ngtdm": "NGTDM", "shape": "3D shape", "shape2D": "shape",
}  # fmt: skip
_CONTEXT_PLAIN = {"prev": "level above", "next": "level below", "other": "other side", "canal": "canal at this level"}
_GEO_PLAIN = {
    "geo_level_idx": "level index",
    "geo_gap_prev_mm": "gap to the level above (mm)",
    "geo_gap_next_mm": "gap to the level below (mm)",
    "geo_lateral_mm": "distance from the canal (mm)",
}
_DERIVED_PLAIN = {
    "level_idx": "level (L1/L2…L5/S1)", "side_code": "side (left/right)", "condition_idx": "condition",
    "group_idx": "condition group", "bias": "baseline (bias)", "has_point": "point localised",
}  # fmt: skip
# pyradiomics abbreviations that camel-case splitting would mangle.
_WORD_PLAIN = {
    "Id": "ID", "Idm": "IDM", "Idmn": "IDMN", "Idn": "IDN", "Imc1": "IMC1", "Imc2": "IMC2", "MCC": "MCC",
    "10Percentile": "10th percentile", "90Percentile": "90th percentile",
}  # fmt: skip
_CAMEL = re.compile(r"\d+D|[A-Z]+(?=[A-Z][a-z]|\d|$)|[A-Z]?[a-z]+|\d+|[A-Z]+")
# Morphometry columns (``mor_<name>``, see radspine.features.morphometry.MEASUREMENTS) in words.
# No units here: the report lists the contribution in brackets after the name, the value with its unit.
_MOR_PLAIN = {
    "dural_sac_area_mm2": "dural sac area", "canal_ap_mm": "canal AP", "canal_ap_sag_mm": "canal AP on sagittal",
    "foramen_area_mm2": "foramen area", "foramen_height_mm": "foramen height", "recess_depth_mm": "recess depth",
    "disc_height_mm": "disc height", "disc_csf_t2_ratio": "disc/CSF T2 signal ratio",
}  # fmt: skip
# Structure-mask ROIs of radiomics columns ``rad_<series>_<roi>_...`` (radspine.features.radiomics.MASK_ROIS).
_ROI_PLAIN = {"sac": "dural sac mask", "foramen": "foramen mask", "recess": "recess mask"}


def _words(camel: str) -> str:
    """``GrayLevelNonUniformity`` → ``gray level non uniformity`` (acronyms kept)."""
    if camel in _WORD_PLAIN:
        return _WORD_PLAIN[camel]
    parts = _CAMEL.findall(camel) or [camel]
    return " ".join(p if (p.isupper() and len(p) > 1) or p[0].isdigit() else p.lower() for p in parts)


def _image_type_plain(image_type: str) -> str:
    """pyradiomics image type → plain words; '' for the original image."""
    if image_type == "original":
        return ""
    m = re.fullmatch(r"log-sigma-(\d+)-(\d+)-mm-(\d)D", image_type)
    if m:
        return f"LoG σ {m.group(1)}.{m.group(2)} mm"
    if image_type.startswith("wavelet"):
        return "wavelet " + image_type.partition("-")[2]
    if image_type.startswith("lbp"):
        return "LBP " + " ".join(image_type.split("-")[1:])
    return {"squareroot": "square root"}.get(image_type, image_type)


def plain_feature_name(name: str) -> str:
    """A feature column in words, e.g. ``rad_sagt2_original_glcm_Contrast`` → ``T2 sagittal · GLCM contrast``.

    Also ``cnn_3`` → ``CNN embedding 3``, ``ctx_prev_<col>`` → ``level above: <col in words>``, ``geo_*``,
    ``has_*`` and the graders' derived columns (``level_idx``…). Unknown names come back unchanged.
    """
    if name in _DERIVED_PLAIN:
        return _DERIVED_PLAIN[name]
    if name in _GEO_PLAIN:
        return _GEO_PLAIN[name]
    prefix, _, rest = name.partition("_")
    if prefix == "rad":
        series, _, rest2 = rest.partition("_")
        parts = rest2.split("_")
        roi = parts.pop(0) if len(parts) == 4 and parts[0] in _ROI_PLAIN else ""
        if series in _SERIES_PLAIN and len(parts) == 3:
            itype, cls, feat = parts
            bits = [_SERIES_PLAIN[series], _ROI_PLAIN.get(roi, ""), _image_type_plain(itype),
                    f"{_CLASS_PLAIN.get(cls, cls)} {_words(feat)}"]
            return " · ".join(b for b in bits if b)
        return name
    if prefix == "mor" and rest in _MOR_PLAIN:
        return _MOR_PLAIN[rest]
    if prefix == "cnn" and rest.isdigit():
        return f"CNN embedding {int(rest)}"
    if prefix == "ctx":
        where, _, col = rest.partition("_")
        if where in _CONTEXT_PLAIN and col:
            return f"{_CONTEXT_PLAIN[where]}: {plain_feature_name(col)}"
        return f"study context: {rest.replace('_', ' ')}"
    if prefix == "geo":
        for key, what in (("plane_dist_", "point-to-slice distance (mm)"), ("inside_", "patch inside the image")):
            if rest.startswith(key):
                return f"{rest[len(key):].replace('_', ' ')} patch: {what}"
        return f"geometry: {rest.replace('_', ' ')}"
    if prefix == "has" and rest in _SERIES_PLAIN:
        return f"{_SERIES_PLAIN[rest]} present"
    return name


IMAGE_PREFIXES: Final[tuple[str, ...]] = ("rad_", "mor_", "cnn_")


def feature_kind(name: str) -> str:
    """``"image"`` for evidence read off this level's images (``rad_``, ``mor_``, ``cnn_``), else ``"prior"``.

    ``prior`` covers what the model knows before looking at the level's pixels: the level and condition
    codes, ``geo_*`` point geometry, ``has_*`` series presence and ``ctx_*`` neighbour/other-side context.
    """
    return "image" if name.startswith(IMAGE_PREFIXES) else "prior"


# ------------------------------------------------------------------------------------------ measurements
# predictions.csv measurement column → (words, unit, decimals); order = display order.
MEASUREMENT_LABELS: Final[dict[str, tuple[str, str, int]]] = {
    "dural_sac_area_mm2": ("dural sac", "mm²", 0),
    "canal_ap_mm": ("canal AP", "mm", 1),
    "foramen_area_mm2": ("foramen", "mm²", 0),
    "foramen_height_mm": ("foramen height", "mm", 1),
    "recess_depth_mm": ("recess depth", "mm", 1),
    "disc_height_mm": ("disc height", "mm", 1),
}


def _measurement_groups() -> dict[str, tuple[str, ...]]:
    """Condition groups each named measurement applies to (predict's own table, so both stay in step)."""
    from radspine.predict import MEASUREMENT_COLUMNS

    assert set(MEASUREMENT_COLUMNS) == set(MEASUREMENT_LABELS), "report and predict disagree on measurements"
    return {name: MEASUREMENT_COLUMNS[name][1] for name in MEASUREMENT_LABELS}


def cutoff_text(name: str) -> str:
    """Published reference cut-offs of a measurement in short words, '' when there are none.

    ``dural_sac_area_mm2`` → ``ref. < 100 relative, < 75 absolute central stenosis``: the grade words the
    cut-offs share are said once. Taken from :data:`radspine.features.morphometry.REFERENCE_CUTOFFS`.
    """
    from radspine.features.morphometry import REFERENCE_CUTOFFS

    cuts = REFERENCE_CUTOFFS.get(name, [])
    if not cuts:
        return ""
    words = [str(c["grade"]).split() for c in cuts]
    n_common = 0
    if len(words) > 1:
        while all(len(w) > n_common + 1 for w in words) and len({tuple(w[-n_common - 1:]) for w in words}) == 1:
            n_common += 1
    parts = [f"< {float(c['below']):g} {' '.join(w[:len(w) - n_common])}" for c, w in zip(cuts, words, strict=True)]
    tail = f" {' '.join(words[0][len(words[0]) - n_common:])}" if n_common else ""
    return "ref. " + ", ".join(parts) + tail


def measurement_text(name: str, value: float, reason: str = "") -> str:
    """One measurement in words with its unit and, as context, the published cut-offs.

    ``("dural_sac_area_mm2", 82.0)`` → ``dural sac 82 mm² (ref. < 100 relative, < 75 absolute central
    stenosis)``; a NaN value → ``dural sac not measured (<reason>)``.
    """
    words, unit, decimals = MEASUREMENT_LABELS[name]
    if value is None or not np.isfinite(value):
        return f"{words} not measured ({reason or 'no reason recorded'})"
    ref = cutoff_text(name)
    return f"{words} {value:.{decimals}f} {unit}" + (f" ({ref})" if ref else "")


def row_measurements(row: pd.Series) -> list[dict]:
    """The named measurements of one prediction row that apply to its condition group.

    Each is ``{"name", "value" (None when NaN), "unit", "text"}``; ``text`` is :func:`measurement_text`.
    """
    from radspine.constants import CONDITION_GROUP

    group = CONDITION_GROUP.get(str(row["condition"]), "")
    out = []
    for name, groups in _measurement_groups().items():
        if group not in groups:
            continue
        v = float(row.get(name, np.nan))
        out.append({"name": name, "value": v if np.isfinite(v) else None, "unit": MEASUREMENT_LABELS[name][1],
                    "text": measurement_text(name, v, str(row.get(f"{name}_reason", "")))})
    return out


def measurements_phrase(meas: list[dict], row: pd.Series | dict) -> str:
    """The measured values with their cut-offs, then the unmeasured ones grouped by reason (said once).

    E.g. ``dural sac 82 mm² (ref. …), disc height 9.5 mm; canal AP not measured (no point)``.
    """
    done = [m["text"] for m in meas if m["value"] is not None]
    why: dict[str, list[str]] = {}
    for m in meas:
        if m["value"] is None:
            reason = str(row.get(f"{m['name']}_reason", "")) or "no reason recorded"
            why.setdefault(reason, []).append(MEASUREMENT_LABELS[m["name"]][0])
    missing = [f"{', '.join(names)} not measured ({reason})" for reason, names in why.items()]
    return "; ".join(x for x in (", ".join(done), *missing) if x)


def _not_measured_reason(row: dict, in_file: bool, given: str) -> str:
    """Why a measurement of a row is NaN, from what predictions.csv says about the row.

    predict does not write a per-measurement reason yet, so it is inferred: the point first (no point,
    an unusable flag), then a row graded from the priors, else the structure could not be measured.
    """
    from radspine.points import is_unusable

    if not in_file:
        return "not in predictions.csv"
    if given:
        return given
    if int(row["series_id"]) < 0 or not np.isfinite(row["x"]):
        return "no point"
    flag = str(row.get("flag", ""))
    if is_unusable(flag):
        return f"point {flag.split(';')[0].strip()}"
    if str(row.get("graded_from", "model")).startswith("priors"):
        return "row graded from the priors"
    return "structure not measurable on the patch"


# -------------------------------------------------------------------------------------- predictions I/O
def predictions_path(predictions: str | Path) -> Path:
    """``predictions.csv`` of a predict output folder (or the file itself)."""
    p = Path(predictions)
    return p if p.suffix == ".csv" else p / "predictions.csv"


def load_predictions(predictions: str | Path) -> pd.DataFrame:
    """Read ``predictions.csv`` written by ``radspine predict``; keys come from ``row_id``.

    Returns one row per row_id with ``study_id, condition, level`` (snake keys), the three probabilities,
    ``expected_severity``, ``grade`` (argmax) and the point columns (``series_id``/``instance_number`` −1 and
    NaN x/y when the row has no point), ``flag``, ``graded_from`` (``model`` or ``priors: <reason>``),
    ``confidence``, the named measurements of :data:`MEASUREMENT_LABELS` (NaN where not measured) and a
    ``<name>_reason`` per measurement ('' when measured). Columns an older predict did not write get
    defaults. Raises DatasetError naming the file when it is unusable.
    """
    from radspine.predict import expected_severity

    path = predictions_path(predictions)
    if not path.is_file():
        raise DatasetError(f"{path}: no predictions.csv (run `radspine predict` first)")
    try:
        df = pd.read_csv(path)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable CSV: {str(err).splitlines()[0]}") from None
    missing = [c for c in ("row_id", *SEVERITY_COLUMNS) if c not in df.columns]
    if missing:
        raise DatasetError(f"{path}: missing columns {missing}")
    try:
        keys = [parse_row_id(str(r)) for r in df["row_id"]]
    except ValueError as err:
        raise DatasetError(f"{path}: {err}") from None
    out = pd.DataFrame(keys, columns=["study_id", "condition", "level"])
    out.insert(0, "row_id", df["row_id"].astype(str).to_numpy())
    probs = df[list(SEVERITY_COLUMNS)].apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    if not np.isfinite(probs).all() or (probs < 0).any():
        raise DatasetError(f"{path}: probabilities must be finite and non-negative")
    for j, c in enumerate(SEVERITY_COLUMNS):
        out[c] = probs[:, j]
    out["expected_severity"] = (
        df["expected_severity"].to_numpy(dtype=float) if "expected_severity" in df else expected_severity(probs)
    )
    out["grade"] = probs.argmax(axis=1)
    for c in ("series_id", "instance_number"):
        out[c] = pd.to_numeric(df[c], errors="coerce").fillna(-1).astype("int64") if c in df else -1
    for c in ("x", "y", "world_x", "world_y", "world_z"):
        out[c] = pd.to_numeric(df[c], errors="coerce").to_numpy(dtype=float) if c in df else np.nan
    out["flag"] = df["flag"].fillna("").astype(str).to_numpy() if "flag" in df else ""
    out["graded_from"] = df["graded_from"].fillna("").astype(str).to_numpy() if "graded_from" in df else "model"
    out["confidence"] = pd.to_numeric(df["confidence"], errors="coerce").to_numpy(float) if "confidence" in df else np.nan
    for name in MEASUREMENT_LABELS:
        out[name] = pd.to_numeric(df[name], errors="coerce").to_numpy(float) if name in df else np.nan
    records = out.to_dict("records")
    for name in MEASUREMENT_LABELS:
        given = df[f"{name}_reason"].fillna("").astype(str).tolist() if f"{name}_reason" in df else [""] * len(df)
        out[f"{name}_reason"] = [
            "" if np.isfinite(r[name]) else _not_measured_reason(r, name in df, g)
            for r, g in zip(records, given, strict=True)
        ]
    return out


def find_features_table(predictions_dir: str | Path, split: str = "test") -> Path | None:
    """The features table ``radspine predict`` used, by its default locations (predict / demo layouts)."""
    d = Path(predictions_dir)
    if d.suffix == ".csv":
        d = d.parent
    for c in (
        d / "predict_work" / "features" / "features.parquet",  # predict's default --work
        d / "work" / split / "features" / "features.parquet",  # radspine demo
        d / "features" / "features.parquet",
    ):
        if c.is_file():
            return c
    return None


def find_model_dir(predictions_dir: str | Path) -> Path | None:
    """``<dir>/model`` when it is a bundle (the demo layout), else None."""
    d = Path(predictions_dir)
    d = d.parent if d.suffix == ".csv" else d
    return d / "model" if (d / "model" / "bundle.json").is_file() else None


@dataclass(frozen=True)
class Contribution:
    """One feature's TreeSHAP contribution to a row's raw score of its predicted grade."""

    feature: str
    plain: str
    value: float
    kind: str = "image"  # "image" (rad_/mor_/cnn_) | "prior" (level, condition, ctx_/geo_/has_), see feature_kind


@dataclass(frozen=True)
class Explanation:
    """Why a row got its grade: the top features overall and, separately, image evidence and prior/context.

    The split exists because the level index alone tops most rows (some levels are simply more often
    stenotic), which says nothing about this patient's images.
    """

    top: list[Contribution]
    image: list[Contribution]
    prior: list[Contribution]


def _row_plain(feature: str, level: str, condition: str, side: str) -> str:
    """Plain name of a feature on one row: the level/side/condition codes say which one they are."""
    if feature in ("level_idx", "geo_level_idx"):
        return f"level {LEVEL_NAMES.get(level, level)}"
    if feature == "side_code" and side in ("left", "right"):
        return f"side {side}"
    if feature in ("condition_idx", "group_idx"):
        return f"condition {CONDITION_SHORT.get(condition, condition).lower()}"
    return plain_feature_name(feature)


def _ranked(names: list[str], values: np.ndarray, top_k: int, plain) -> list[Contribution]:
    """Top ``top_k`` non-zero contributions by |value| (stable: ties keep column order)."""
    order = np.argsort(-np.abs(values), kind="stable")
    picked = [j for j in order if values[j] != 0.0][:top_k]
    return [Contribution(names[j], plain(names[j]), float(values[j]), feature_kind(names[j])) for j in picked]


def explain_values(
    names: list[str], values: np.ndarray, top_k: int = TOP_K, *, level: str = "", condition: str = "", side: str = ""
) -> Explanation:
    """Split one row's SHAP values (bias excluded) into its top features, image evidence and prior/context."""
    values = np.asarray(values, dtype=float)
    kinds = np.array([feature_kind(n) for n in names])
    plain = lambda f: _row_plain(f, level, condition, side)  # noqa: E731 - a one-line closure over the row
    img = np.flatnonzero(kinds == "image")
    pri = np.flatnonzero(kinds == "prior")
    return Explanation(
        top=_ranked(names, values, top_k, plain),
        image=_ranked([names[j] for j in img], values[img], top_k, plain),
        prior=_ranked([names[j] for j in pri], values[pri], top_k, plain),
    )


def _shap_by_grade(bundle, table: pd.DataFrame, grades: pd.Series | None):
    """Yield (table rows, SHAP frame) per predicted grade: each row's contributions toward its own grade."""
    if grades is None:
        probs = bundle.predict_proba(table)
        g = probs[list(SEVERITY_COLUMNS)].to_numpy().argmax(axis=1)
    else:
        g = grades.reindex(table["row_id"]).fillna(0).to_numpy(dtype=int)
    for k, col in enumerate(SEVERITY_COLUMNS):
        rows = np.flatnonzero(g == k)
        if rows.size:
            yield table.iloc[rows], bundle.shap_values(table.iloc[rows], grade=col)


def top_contributions(
    bundle, table: pd.DataFrame, grades: pd.Series | None = None, top_k: int = TOP_K
) -> dict[str, list[Contribution]]:
    """Top ``top_k`` features by |TreeSHAP| toward each row's grade (``grades`` by row_id, else the argmax).

    Uses :meth:`radspine.models.bundle.Bundle.shap_values` (LightGBM/XGBoost native TreeSHAP on the raw,
    pre-calibration score). The bias term is left out. Returns ``{row_id: [Contribution, ...]}``.
    """
    out: dict[str, list[Contribution]] = {}
    for _, sv in _shap_by_grade(bundle, table, grades):
        names = [c for c in sv.columns if c not in ("row_id", "bias")]
        vals = sv[names].to_numpy(dtype=float)
        for i, rid in enumerate(sv["row_id"]):
            out[str(rid)] = _ranked(names, vals[i], top_k, plain_feature_name)
    return out


def explain_rows(
    bundle, table: pd.DataFrame, grades: pd.Series | None = None, top_k: int = TOP_K
) -> dict[str, Explanation]:
    """:func:`explain_values` of every row of ``table`` toward its grade; ``{row_id: Explanation}``."""
    out: dict[str, Explanation] = {}
    for sub, sv in _shap_by_grade(bundle, table, grades):
        names = [c for c in sv.columns if c not in ("row_id", "bias")]
        vals = sv[names].to_numpy(dtype=float)
        keys = sub.set_index("row_id")
        for i, rid in enumerate(sv["row_id"]):
            r = keys.loc[rid]
            out[str(rid)] = explain_values(names, vals[i], top_k, level=str(r["level"]),
                                           condition=str(r["condition"]), side=str(r.get("side", "")))
    return out


def contributions_for(
    predictions_dir: str | Path,
    preds: pd.DataFrame,
    model_dir: str | Path | None,
    split: str = "test",
    features: str | Path | None = None,
    top_k: int = TOP_K,
) -> tuple[dict[str, Explanation], str]:
    """Explanations for every predicted row, and a note for the report when they are unavailable."""
    model_dir = Path(model_dir) if model_dir else find_model_dir(predictions_dir)
    if model_dir is None:
        return {}, "no model bundle given (--model): feature contributions not shown"
    fpath = Path(features) if features else find_features_table(predictions_dir, split)
    if fpath is None or not fpath.is_file():
        return {}, f"no features table found beside {predictions_dir}: feature contributions not shown"
    from radspine.models.bundle import Bundle

    bundle = Bundle.load(model_dir)
    meta_path = fpath.parent / "meta.json"
    if meta_path.is_file():
        bundle.check_features_meta(json.loads(meta_path.read_text()), str(meta_path))
    try:
        table = pd.read_parquet(fpath)
    except Exception as err:  # pyarrow raises several unrelated types for corrupt files
        raise DatasetError(f"{fpath}: cannot read parquet: {str(err).splitlines()[0]}") from None
    table = table[table["row_id"].isin(set(preds["row_id"]))]
    if table.empty:
        return {}, f"{fpath}: holds none of the predicted rows: feature contributions not shown"
    grades = preds.set_index("row_id")["grade"]
    return explain_rows(bundle, table.reset_index(drop=True), grades, top_k), ""


# ------------------------------------------------------------------------------------------- rendering
@dataclass
class DrawnPoint:
    """A point drawn on an image panel, in the panel's pixel coordinates (column x, row y)."""

    row_id: str
    condition: str
    level: str
    x: float
    y: float
    grade: int
    color: str
    off_plane_mm: float  # distance of the predicted point from the shown slice plane


@dataclass
class PanelInfo:
    """Where a panel ended up in the PNG (display pixels, origin bottom-left) and what it shows."""

    name: str
    kind: str  # "image" | "text" | "legend" | "empty"
    title: str
    bbox_px: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x0, y0, x1, y1
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] = (0.0, 1.0)
    series_id: int = -1
    instance_number: int = -1
    image_shape: tuple[int, int] = (0, 0)
    points: list[DrawnPoint] = field(default_factory=list)
    lines: list[str] = field(default_factory=list)  # text panels: the lines drawn, in order


@dataclass
class StudyReport:
    """What :func:`render_study` wrote."""

    study_id: int
    png: Path
    json: Path
    size_px: tuple[int, int]  # width, height
    panels: list[PanelInfo]
    notes: list[str]

    @property
    def image_panels(self) -> list[PanelInfo]:
        """Panels that show a slice."""
        return [p for p in self.panels if p.kind == "image"]


class _SeriesCache:
    """Reads each series of a study once; remembers why one could not be read."""

    def __init__(self, study) -> None:
        self.study = study
        self.info = {s.series_id: s for s in study.series}
        self.stacks: dict[int, list] = {}
        self.errors: dict[int, str] = {}

    def volume_with(self, series_id: int, instance: int):
        """(Volume, slice index) of the stack holding ``instance``; raises RadspineError naming the series."""
        from radspine.io.dicom import read_series

        if series_id not in self.info:
            raise DatasetError(f"study {self.study.study_id}: series {series_id} is not in the dataset")
        if series_id in self.errors:
            raise RadspineError(self.errors[series_id])
        if series_id not in self.stacks:
            s = self.info[series_id]
            try:
                self.stacks[series_id] = read_series(s.path, study_id=self.study.study_id, series_id=series_id,
                                                     description=s.description)
            except RadspineError as err:
                self.errors[series_id] = str(err)
                raise
        for vol in self.stacks[series_id]:
            if instance in set(vol.instance_numbers.tolist()):
                return vol, vol.slice_index(instance)
        raise DatasetError(f"study {self.study.study_id}: series {series_id} has no instance {instance}")


def _world_of(row: pd.Series, cache: _SeriesCache) -> np.ndarray:
    """World point of a prediction row: from its own slice when readable, else its world_* columns."""
    from radspine.geometry import pixel_to_world

    try:
        vol, k = cache.volume_with(int(row["series_id"]), int(row["instance_number"]))
        return pixel_to_world(vol, float(row["x"]), float(row["y"]), k)
    except RadspineError:
        return np.array([row["world_x"], row["world_y"], row["world_z"]], dtype=float)


def _choose_slice(rows: pd.DataFrame) -> tuple[int, int] | None:
    """(series_id, instance) shown by a panel: the one most of its points were predicted on."""
    ok = rows[(rows["series_id"] >= 0) & rows["x"].notna() & rows["y"].notna()]
    if ok.empty:
        return None
    counts = Counter(zip(ok["series_id"].astype(int), ok["instance_number"].astype(int)))
    # most_common keeps first-seen order among ties, i.e. level order.
    return counts.most_common(1)[0][0]


def _probs_text(r: pd.Series) -> str:
    return "/".join(f"{r[c]:.2f}" for c in SEVERITY_COLUMNS)


def _draw_image_panel(ax, name: str, title: str, rows: pd.DataFrame, cache: _SeriesCache, notes: list[str]) -> PanelInfo:
    """Show the chosen slice and the panel's points; a placeholder when nothing can be shown."""
    from radspine.geometry import continuous_index

    info = PanelInfo(name=name, kind="empty", title=title)
    pick = _choose_slice(rows)
    if pick is None:
        ax.text(0.5, 0.5, "not localised", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        notes.append(f"{name}: no localised point")
        return info
    sid, inst = pick
    try:
        vol, k = cache.volume_with(sid, inst)
    except RadspineError as err:
        msg = str(err).splitlines()[0]
        ax.text(0.5, 0.5, "slice unreadable", ha="center", va="center", transform=ax.transAxes, fontsize=9)
        ax.set_title(title, fontsize=9)
        ax.set_axis_off()
        notes.append(f"{name}: {msg}")
        return info
    img = vol.pixels[k]
    lo, hi = np.percentile(img, [1, 99])
    row_mm, col_mm = vol.pixel_spacing
    ax.imshow(img, cmap="gray", vmin=lo, vmax=hi if hi > lo else lo + 1, interpolation="nearest",
              aspect=row_mm / col_mm, resample=False)
    # Which screen side is patient left: from the world direction of +column, never from array order.
    left_on = "right" if vol.row_cosine[0] > 0 else "left"
    desc = cache.info[sid].description
    full = f"{title}\n{desc} · series {sid} · instance {inst}"
    if name.startswith("axial"):
        full += f" · patient left on {left_on}"
    ax.set_title(full, fontsize=8)
    ax.set_xticks([])
    ax.set_yticks([])
    info = PanelInfo(name=name, kind="image", title=full, series_id=sid, instance_number=inst,
                     image_shape=(int(img.shape[0]), int(img.shape[1])))
    normal = vol.normal
    stack_instances = set(vol.instance_numbers.tolist())
    placed = []
    for _, r in rows.iterrows():
        if r["series_id"] < 0 or not np.isfinite(r["x"]) or not np.isfinite(r["y"]):
            continue
        world = _world_of(r, cache)
        if int(r["series_id"]) == sid and int(r["instance_number"]) in stack_instances:
            # Same stack: in-plane pixel coordinates are shared by every slice, so the prediction is exact.
            x, y = float(r["x"]), float(r["y"])
        elif np.isfinite(world).all():
            _, y, x = (float(v) for v in continuous_index(vol, world))
        else:
            notes.append(f"{r['row_id']}: predicted on series {int(r['series_id'])} without world position; not drawn")
            continue
        off = float((world - vol.positions[k]) @ normal) if np.isfinite(world).all() else float("nan")
        grade = int(r["grade"])
        placed.append(DrawnPoint(r["row_id"], r["condition"], r["level"], x, y, grade, GRADE_COLORS[grade], off))
    xs = [p.x for p in placed]
    for p in placed:
        r = rows.loc[rows["row_id"] == p.row_id].iloc[0]
        # Sagittal panels hold one point per level, axial panels one per side.
        tag = ("L" if p.condition.startswith("left") else "R") if "subarticular" in p.condition else LEVEL_NAMES[p.level]
        label = f"{tag} {_probs_text(r)}"
        if np.isfinite(p.off_plane_mm) and abs(p.off_plane_mm) > 0.5 * max(vol.slice_spacing, 1e-6):
            label += f" (Δ{p.off_plane_mm:+.1f} mm)"
        # Labels point away from the other points of the panel so they do not cover them.
        right = p.x >= np.mean(xs) if len(xs) > 1 and name.startswith("axial") else True
        # A dark box with a thin coloured edge: readable on bright CSF and dark bone alike at 72 DPI, and
        # tied to its point's grade colour. Markers are drawn above (zorder 5) so a label never hides one.
        ax.annotate(label, (p.x, p.y), xytext=(8 if right else -8, 0), textcoords="offset points",
                    ha="left" if right else "right", va="center", fontsize=LABEL_FONTSIZE, color="white",
                    weight="bold", zorder=3,
                    bbox={"boxstyle": "round,pad=0.2", "fc": "black", "ec": p.color, "lw": 1.0, "alpha": 0.75})
        ax.plot([p.x], [p.y], linestyle="none", marker="o", markersize=7, markerfacecolor=p.color,
                markeredgecolor="white", markeredgewidth=0.8, antialiased=False, zorder=5)
    info.points = placed
    return info


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _signed(v: float) -> str:
    """``+0.41`` / ``−0.0042``: small contributions keep a digit that is not zero."""
    return f"{'+' if v > 0 else '−'}{abs(v):.2f}" if abs(v) >= 0.01 else f"{'+' if v > 0 else '−'}{abs(v):.1g}"


def _contrib_list(cs: list[Contribution]) -> str:
    return ", ".join(f"{c.plain} ({_signed(c.value)})" for c in cs)


def _from_priors(r: pd.Series | dict) -> bool:
    return str(r.get("graded_from", "") or "").startswith("priors")


def row_status(r: pd.Series | dict) -> tuple[str, str]:
    """(short tag for the row's header, one line in words): where the grade came from and the point's flag."""
    from radspine.points import is_unusable

    src = str(r.get("graded_from", "") or "model")
    flag = str(r.get("flag", "") or "")
    tags, words = [], []
    if src.startswith("priors"):
        tags.append("PRIORS")
        words.append(f"graded from the priors ({src.partition(':')[2].strip() or 'no reason recorded'})")
    else:
        words.append(f"graded by the {src}")
    if flag and flag != "given":
        bad = is_unusable(flag)
        if bad:
            tags.append("NOT LOCALISED" if flag.startswith("not localised") else "DOUBTFUL")
        words.append(f"point {'flagged' if bad else 'note'}: {flag}")
    return (f" [{', '.join(tags)}]" if tags else ""), " · ".join(words)


def row_lines(r: pd.Series | dict, expl: Explanation | None, width: int = 96) -> tuple[str, list[str]]:
    """The header and body lines of one prediction row in a level's text panel (and the index).

    Body: the grade's source and point flag, the measurements with their reference cut-offs, then the
    image evidence and, under its own heading after it, the prior/context contributions.
    """
    import textwrap

    cond = str(r["condition"])
    g = int(r["grade"])
    tag, status = row_status(r)
    conf = r.get("confidence", np.nan)
    conf_txt = f" conf {float(conf):.2f}" if conf is not None and np.isfinite(conf) else ""
    header = (f"{CONDITION_SHORT[cond]:<13} {SEVERITIES[g]:<11} {_probs_text(r)} sev {r['expected_severity']:.2f}"
              f"{conf_txt}{tag or ' · model'}")
    # The plain "graded by the model" is said by the header tag; a line only when there is more to say.
    status = "" if status == "graded by the model" else status

    def wrap(text: str) -> list[str]:
        return textwrap.wrap(text, width=width, initial_indent="  ", subsequent_indent="      ",
                             break_on_hyphens=False) or ["  " + text]

    body = wrap(status) if status else []
    meas = row_measurements(r)
    if meas:
        body += wrap("measured: " + measurements_phrase(meas, r))
    if _from_priors(r):
        # The model's SHAP for a row it did not grade would explain a grade nobody reported.
        body += wrap("image evidence / prior: none (the model did not grade this row)")
    elif expl is not None:
        body += wrap("image evidence: " + (_contrib_list(expl.image) or "none"))
        body += wrap("prior/context: " + (_contrib_list(expl.prior) or "none"))
    return header, body


def _draw_text_panel(ax, level: str, rows: pd.DataFrame, contribs: dict[str, Explanation], note: str) -> PanelInfo:
    """Per condition of one level: grade and probabilities, its source and flag, measurements, explanation.

    Two columns (canal + foramina | recesses) beside the axial slice. One text artist per block (not per
    line): text drawing dominates the render time.
    """
    from matplotlib.transforms import offset_copy

    ax.set_axis_off()
    fs = TEXT_FONTSIZE
    line = fs * 1.2
    bb = ax.get_position()
    col_pt = bb.width * ax.figure.get_figwidth() * 72 / 2
    # DejaVu Sans Mono advances 0.602 em per glyph; a few glyphs of gap before the next column.
    width = max(40, int(col_pt / (0.602 * fs)) - 6)
    drawn: list[str] = []

    def put(col: float, i: int, text: str, color: str = "black", weight: str = "normal") -> None:
        tr = offset_copy(ax.transAxes, fig=ax.figure, x=0.0, y=-i * line, units="points")
        ax.text(col, 1.0, text, transform=tr, fontsize=fs, family="monospace", color=color, weight=weight,
                va="top", ha="left", linespacing=1.2)
        drawn.extend(text.split("\n"))

    put(0.0, 0, f"{LEVEL_NAMES[level]} · grade  P(Normal/Mild)/P(Moderate)/P(Severe)  expected severity 0–1 "
        "· measurements with published cut-offs (context, not the grade) · TreeSHAP toward the grade",
        weight="bold")
    columns = ((0.0, CONDITIONS[:3]), (0.5, CONDITIONS[3:]))
    for col, conds in columns:
        i = 1
        for cond in conds:
            sel = rows[rows["condition"] == cond]
            if sel.empty:
                put(col, i, f"{CONDITION_SHORT[cond]:<13} no prediction")
                i += 1
                continue
            r = sel.iloc[0]
            header, body = row_lines(r, contribs.get(r["row_id"]), width)
            put(col, i, header, color=GRADE_COLORS[int(r["grade"])], weight="bold")
            put(col, i + 1, "\n".join(body))
            i += 1 + len(body)
        if col == 0.5 and note:
            put(col, i, _clip(note, width), color="dimgray")
    return PanelInfo(name=f"text_{level}", kind="text", title=LEVEL_NAMES[level], lines=drawn)


LEGEND_LINES: Final[tuple[str, ...]] = (
    "Point colour = predicted grade (most probable): green Normal/Mild, orange Moderate, red Severe. "
    "Point label: level (axial: L/R side) and P(Normal/Mild)/P(Moderate)/P(Severe).",
    "(Δ+2.0 mm) after a label: the point was predicted on another slice of the stack; it is drawn where it "
    "projects onto the shown slice, and Δ is its signed distance from the shown slice plane in mm.",
    "Units: areas in mm², lengths (canal AP, foramen height, recess depth, disc height) in mm. "
    "'ref. < 100 relative, < 75 absolute ...' = published reference cut-offs (Schönström/Hamanishi, "
    "Verbiest, Ciric, Hasegawa), shown as context only: the grade is the model's, never a cut-off.",
    "Explanations (TreeSHAP on the raw score of the predicted grade; + pushes toward it, − away): "
    "image evidence = radiomics, morphometry and CNN features of this level's images; prior/context = "
    "level, condition, side, neighbour/other-side context, point geometry, series presence.",
    "[PRIORS]: the row was graded from the training priors (reason given); [DOUBTFUL] / [NOT LOCALISED]: "
    "the localiser's flag on the point, whose image features were then not used.",
)


def _draw_legend_panel(ax) -> PanelInfo:
    """The figure's legend: grade colours (markers drawn like the points) and what labels, units mean."""
    from matplotlib.lines import Line2D

    ax.set_axis_off()
    handles = [Line2D([], [], linestyle="none", marker="o", markersize=11, markerfacecolor=c, markeredgecolor="white")
               for c in GRADE_COLORS]
    ax.legend(handles, list(SEVERITIES), loc="upper left", bbox_to_anchor=(0.0, 1.0), ncol=1, fontsize=10,
              frameon=True, title="predicted grade", title_fontsize=10)
    import textwrap

    wrapped = [w for t in LEGEND_LINES for w in textwrap.wrap(t, 235, subsequent_indent="    ")]
    ax.text(0.105, 1.0, "\n".join(wrapped), transform=ax.transAxes, fontsize=9.5, va="top", ha="left",
            linespacing=1.3)
    return PanelInfo(name="legend", kind="legend", title="legend", lines=list(LEGEND_LINES))


def build_study_figure(
    study,
    preds: pd.DataFrame,
    contribs: dict[str, Explanation] | None = None,
    *,
    note: str = "",
    dpi: int = DEFAULT_DPI,
):
    """Draw one study's report; returns (PNG bytes, size in px, panels, notes). Nothing is written.

    ``preds`` are the study's rows from :func:`load_predictions`.
    """
    import io

    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    contribs = contribs or {}
    fig = Figure(figsize=FIGSIZE_IN, dpi=dpi)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(7, 3, height_ratios=[0.42, 1.75, 1, 1, 1, 1, 1], left=0.015, right=0.99, top=0.975,
                          bottom=0.005, hspace=0.2, wspace=0.05)
    cache = _SeriesCache(study)
    notes: list[str] = []
    panels: list[PanelInfo] = []
    axes = {}
    ax = fig.add_subplot(gs[0, :])
    panels.append(_draw_legend_panel(ax))
    axes["legend"] = ax
    for j, (name, title, conds, levels) in enumerate(IMAGE_PANELS):
        ax = fig.add_subplot(gs[1, j] if j < 3 else gs[j - 1, 0])
        rows = preds[preds["condition"].isin(conds) & preds["level"].isin(levels)]
        # Canal/foramina in level order, recesses left then right: the order the slice choice breaks ties in.
        rows = rows.assign(_c=rows["condition"].map(CONDITIONS.index), _l=rows["level"].map(LEVELS.index))
        rows = rows.sort_values(["_l", "_c"]).drop(columns=["_c", "_l"])
        panels.append(_draw_image_panel(ax, name, title, rows, cache, notes))
        axes[name] = ax
    for i, lv in enumerate(LEVELS):
        ax = fig.add_subplot(gs[i + 2, 1:])
        panels.append(_draw_text_panel(ax, lv, preds[preds["level"] == lv], contribs, note if i == 0 else ""))
        axes[panels[-1].name] = ax
    fig.suptitle(f"Study {study.study_id} · {study.split}", x=0.015, ha="left", fontsize=13, weight="bold")
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=dpi)
    # Extents read after the PNG is drawn, when the image aspect has been applied: what the PNG holds.
    for p in panels:
        ax = axes[p.name]
        bb = ax.get_window_extent()
        p.bbox_px = (float(bb.x0), float(bb.y0), float(bb.x1), float(bb.y1))
        p.xlim = tuple(map(float, ax.get_xlim()))  # type: ignore[assignment]
        p.ylim = tuple(map(float, ax.get_ylim()))  # type: ignore[assignment]
    w, h = fig.canvas.get_width_height()
    return buf.getvalue(), (int(w), int(h)), panels, notes


def _row_records(preds: pd.DataFrame, contribs: dict[str, Explanation]) -> list[dict]:
    """The JSON rows: prediction, point, source/flag, measurements (with text) and the split explanation."""
    cols = ["row_id", "condition", "level", *SEVERITY_COLUMNS, "expected_severity", "grade", *POINT_COLUMNS, "flag",
            "graded_from", "confidence"]
    recs = []
    for (_, full), r in zip(preds.iterrows(), preds[cols].to_dict("records"), strict=True):
        r = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
        e = None if _from_priors(full) else contribs.get(r["row_id"])
        r["status"] = row_status(full)[1]
        r["measurements"] = row_measurements(full)
        r["top_features"] = [asdict(c) for c in e.top] if e else []
        r["image_evidence"] = [asdict(c) for c in e.image] if e else []
        r["prior_context"] = [asdict(c) for c in e.prior] if e else []
        recs.append(r)
    return recs


def render_study(
    study,
    preds: pd.DataFrame,
    out_dir: str | Path,
    contribs: dict[str, Explanation] | None = None,
    *,
    note: str = "",
    dpi: int = DEFAULT_DPI,
) -> StudyReport:
    """Write ``study_<id>.png`` and ``study_<id>.json`` (atomically) for one study; return what was drawn."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    sp = preds[preds["study_id"] == study.study_id]
    if sp.empty:
        raise DatasetError(f"study {study.study_id}: no rows in the predictions")
    data, size, panels, notes = build_study_figure(study, sp, contribs, note=note, dpi=dpi)
    png = out / f"study_{study.study_id}.png"
    with atomic_path(png) as tmp:
        tmp.write_bytes(data)
    contribs = contribs or {}
    doc = {
        "study_id": int(study.study_id),
        "split": study.split,
        "png": png.name,
        "size_px": list(size),
        "grade_colors": dict(zip(SEVERITIES, GRADE_COLORS, strict=True)),
        "legend": list(LEGEND_LINES),
        "note": note,
        "notes": notes,
        "max_expected_severity": float(sp["expected_severity"].max()),
        "n_by_grade": {s: int((sp["grade"] == i).sum()) for i, s in enumerate(SEVERITIES)},
        "rows": _row_records(sp, contribs),
        "panels": [asdict(p) for p in panels],
    }
    js = out / f"study_{study.study_id}.json"
    write_json_atomic(js, doc)
    return StudyReport(int(study.study_id), png, js, size, panels, notes)


class _RenderJob:
    """One study's report as a picklable callable (for :func:`radspine.parallel.map_items`)."""

    def __init__(self, preds: pd.DataFrame, out: Path, contribs: dict, note: str, dpi: int):
        self.preds, self.out, self.contribs, self.note, self.dpi = preds, out, contribs, note, dpi

    def __call__(self, study) -> int:
        render_study(study, self.preds, self.out, self.contribs, note=self.note, dpi=self.dpi)
        return int(study.study_id)


def write_index(report_dir: str | Path) -> Path:
    """(Re)write ``index.html`` listing every ``study_*.json`` in the folder (atomic)."""
    from radspine.report_html import index_html

    d = Path(report_dir)
    docs = []
    for js in sorted(d.glob("study_*.json")):
        try:
            docs.append(json.loads(js.read_text()))
        except json.JSONDecodeError:
            log.warning("%s: corrupt report sidecar, left out of the index", js)
    failed_path = d / "failed.json"
    failed = json.loads(failed_path.read_text()) if failed_path.is_file() else {}
    path = d / "index.html"
    write_text_atomic(path, index_html(docs, failed, GRADE_COLORS, LEGEND_LINES))
    return path


def render_reports(
    data_dir: str | Path,
    predictions_dir: str | Path,
    report_dir: str | Path,
    *,
    model_dir: str | Path | None = None,
    split: str = "test",
    study_ids: list[int] | None = None,
    features: str | Path | None = None,
    top_k: int = TOP_K,
    dpi: int = DEFAULT_DPI,
    workers: int | None = 1,
) -> int:
    """Render the report of every predicted study (or ``study_ids``) and the index; return how many rendered.

    A study that fails is logged, listed as failed in the index and skipped; the batch goes on. Feature
    contributions need the model bundle (``model_dir``, default ``<predictions_dir>/model``) and the features
    table predict wrote (found beside the predictions unless ``features`` is given). ``workers``: processes
    that draw the studies (:func:`radspine.parallel.map_items`; None = the cores): drawing the text of a
    figure takes seconds, so a demo's 20 reports are worth spreading.
    """
    from radspine.io.dataset import Dataset
    from radspine.parallel import map_items

    preds = load_predictions(predictions_dir)
    ds = Dataset.open(data_dir)
    if not ds.has_split(split):
        raise DatasetError(f"{data_dir}: no {split} split")
    wanted = sorted(set(preds["study_id"])) if study_ids is None else [int(s) for s in study_ids]
    known = set(preds["study_id"])
    for s in wanted:
        if s not in known:
            raise DatasetError(f"{predictions_path(predictions_dir)}: no predictions for study {s}")
    sub = preds[preds["study_id"].isin(wanted)]
    try:
        contribs, note = contributions_for(predictions_dir, sub, model_dir, split, features, top_k)
    except ModelError as err:
        if model_dir is not None:
            raise  # the user named this bundle: a mismatch is their mistake to hear about
        contribs, note = {}, f"feature contributions not shown: {str(err).splitlines()[0]}"
        log.warning("%s", note)
    out = Path(report_dir)
    out.mkdir(parents=True, exist_ok=True)
    failed_path = out / "failed.json"
    failed = json.loads(failed_path.read_text()) if failed_path.is_file() else {}
    studies = []
    for sid in wanted:
        try:
            studies.append(ds.study(sid, split))
        except Exception as err:  # noqa: BLE001 - one bad study must not stop the batch
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("study %s: report skipped: %s", sid, why)
            failed[str(sid)] = why
    n = 0
    job = _RenderJob(sub, out, contribs, note, dpi)
    for o in map_items(job, studies, key=lambda st: int(st.study_id), workers=workers, desc="reports"):
        if o.ok:
            failed.pop(str(o.key), None)
            n += 1
        else:
            failed[str(o.key)] = o.error
    write_json_atomic(failed_path, failed)
    write_index(out)
    return n
