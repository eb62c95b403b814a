"""Per-study visual report: predicted points on the slices, coloured by grade, with the features behind them.

One PNG per study (matplotlib Agg, no pyplot state) plus ``study_<id>.json`` and an ``index.html`` linking them:

* top row: the mid-sagittal T2 slice with the 5 canal points, the para-sagittal T1 slice of each side
  with its 5 foramina (3 image panels);
* one row per level: the axial slice with both subarticular recesses (5 image panels) and, beside it,
  a text panel with the three probabilities and expected severity of the level's 5 conditions and the
  top TreeSHAP contributions (in plain names) toward each row's predicted grade.

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
        if series in _SERIES_PLAIN and len(parts) == 3:
            itype, cls, feat = parts
            bits = [_SERIES_PLAIN[series], _image_type_plain(itype), f"{_CLASS_PLAIN.get(cls, cls)} {_words(feat)}"]
            return " · ".join(b for b in bits if b)
        return name
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


# -------------------------------------------------------------------------------------- predictions I/O
def predictions_path(predictions: str | Path) -> Path:
    """``predictions.csv`` of a predict output folder (or the file itself)."""
    p = Path(predictions)
    return p if p.suffix == ".csv" else p / "predictions.csv"


def load_predictions(predictions: str | Path) -> pd.DataFrame:
    """Read ``predictions.csv`` written by ``radspine predict``; keys come from ``row_id``.

    Returns one row per row_id with ``study_id, condition, level`` (snake keys), the three probabilities,
    ``expected_severity``, ``grade`` (argmax) and the point columns (``series_id``/``instance_number`` −1 and
    NaN x/y when the row has no point). Raises DatasetError naming the file when it is unusable.
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


def top_contributions(
    bundle, table: pd.DataFrame, grades: pd.Series | None = None, top_k: int = TOP_K
) -> dict[str, list[Contribution]]:
    """Top ``top_k`` features by |TreeSHAP| toward each row's grade (``grades`` by row_id, else the argmax).

    Uses :meth:`radspine.models.bundle.Bundle.shap_values` (LightGBM/XGBoost native TreeSHAP on the raw,
    pre-calibration score). The bias term is left out. Returns ``{row_id: [Contribution, ...]}``.
    """
    if grades is None:
        probs = bundle.predict_proba(table)
        g = probs[list(SEVERITY_COLUMNS)].to_numpy().argmax(axis=1)
    else:
        g = grades.reindex(table["row_id"]).fillna(0).to_numpy(dtype=int)
    out: dict[str, list[Contribution]] = {}
    for k, col in enumerate(SEVERITY_COLUMNS):
        rows = np.flatnonzero(g == k)
        if rows.size == 0:
            continue
        sv = bundle.shap_values(table.iloc[rows], grade=col)
        names = [c for c in sv.columns if c not in ("row_id", "bias")]
        vals = sv[names].to_numpy(dtype=float)
        order = np.argsort(-np.abs(vals), axis=1, kind="stable")[:, :top_k]
        for i, rid in enumerate(sv["row_id"]):
            out[str(rid)] = [
                Contribution(names[j], plain_feature_name(names[j]), float(vals[i, j]))
                for j in order[i]
                if vals[i, j] != 0.0
            ]
    return out


def contributions_for(
    predictions_dir: str | Path,
    preds: pd.DataFrame,
    model_dir: str | Path | None,
    split: str = "test",
    features: str | Path | None = None,
    top_k: int = TOP_K,
) -> tuple[dict[str, list[Contribution]], str]:
    """Contributions for every predicted row, and a note for the report when they are unavailable."""
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
    return top_contributions(bundle, table.reset_index(drop=True), grades, top_k), ""


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
    kind: str  # "image" | "text" | "empty"
    title: str
    bbox_px: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)  # x0, y0, x1, y1
    xlim: tuple[float, float] = (0.0, 1.0)
    ylim: tuple[float, float] = (0.0, 1.0)
    series_id: int = -1
    instance_number: int = -1
    image_shape: tuple[int, int] = (0, 0)
    points: list[DrawnPoint] = field(default_factory=list)


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
        ax.annotate(label, (p.x, p.y), xytext=(7 if right else -7, 0), textcoords="offset points",
                    ha="left" if right else "right", va="center", fontsize=6, color="white", zorder=3,
                    bbox={"boxstyle": "square,pad=0.1", "fc": "black", "ec": "none", "alpha": 0.55})
        ax.plot([p.x], [p.y], linestyle="none", marker="o", markersize=7, markerfacecolor=p.color,
                markeredgecolor="white", markeredgewidth=0.8, antialiased=False, zorder=5)
    info.points = placed
    return info


def _clip(text: str, n: int) -> str:
    return text if len(text) <= n else text[: n - 1] + "…"


def _draw_text_panel(ax, level: str, rows: pd.DataFrame, contribs: dict[str, list[Contribution]], note: str) -> PanelInfo:
    """Probabilities, expected severity and top contributions of the 5 conditions of one level.

    Two columns (canal + foramina | recesses) so 5 conditions × (1 + top-k) lines fit beside the axial slice.
    """
    from matplotlib.transforms import offset_copy

    ax.set_axis_off()
    line = 8.6  # points per line at fontsize 7

    def put(col: float, i: int, text: str, color: str = "black", weight: str = "normal", indent: float = 0.0) -> None:
        tr = offset_copy(ax.transAxes, fig=ax.figure, x=indent, y=-i * line, units="points")
        ax.text(col, 1.0, text, transform=tr, fontsize=7, family="monospace", color=color, weight=weight,
                va="top", ha="left", linespacing=1.0)

    put(0.0, 0, f"{LEVEL_NAMES[level]} · P(Normal/Mild)/P(Moderate)/P(Severe) · expected severity 0–1 · "
        "top features toward the predicted grade (TreeSHAP, raw score)", weight="bold")
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
            g = int(r["grade"])
            flag = f" [{_clip(str(r['flag']), 28)}]" if r.get("flag") else ""
            put(col, i, f"{CONDITION_SHORT[cond]:<13} {SEVERITIES[g]:<11} {_probs_text(r)} sev {r['expected_severity']:.2f}{flag}",
                color=GRADE_COLORS[g], weight="bold")
            feats = contribs.get(r["row_id"], [])
            if feats:
                # One text per block (not per line): text drawing dominates the render time.
                put(col, i + 1, "\n".join(f"{'+' if c.value > 0 else '−'}{abs(c.value):.3f}  {_clip(c.plain, 66)}"
                                          for c in feats), indent=10)
            i += 1 + len(feats)
    if note:
        put(0.5, 1 + 2 * (1 + TOP_K), _clip(note, 80), color="dimgray")
    return PanelInfo(name=f"text_{level}", kind="text", title=LEVEL_NAMES[level])


def build_study_figure(
    study,
    preds: pd.DataFrame,
    contribs: dict[str, list[Contribution]] | None = None,
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
    from matplotlib.lines import Line2D

    contribs = contribs or {}
    fig = Figure(figsize=(15.0, 18.0), dpi=dpi)
    FigureCanvasAgg(fig)
    gs = fig.add_gridspec(6, 3, height_ratios=[1.8, 1, 1, 1, 1, 1], left=0.02, right=0.99, top=0.95, bottom=0.01,
                          hspace=0.28, wspace=0.06)
    cache = _SeriesCache(study)
    notes: list[str] = []
    panels: list[PanelInfo] = []
    axes = {}
    for j, (name, title, conds, levels) in enumerate(IMAGE_PANELS):
        ax = fig.add_subplot(gs[0, j] if j < 3 else gs[j - 2, 0])
        rows = preds[preds["condition"].isin(conds) & preds["level"].isin(levels)]
        # Canal/foramina in level order, recesses left then right: the order the slice choice breaks ties in.
        rows = rows.assign(_c=rows["condition"].map(CONDITIONS.index), _l=rows["level"].map(LEVELS.index))
        rows = rows.sort_values(["_l", "_c"]).drop(columns=["_c", "_l"])
        panels.append(_draw_image_panel(ax, name, title, rows, cache, notes))
        axes[name] = ax
    for i, lv in enumerate(LEVELS):
        ax = fig.add_subplot(gs[i + 1, 1:])
        panels.append(_draw_text_panel(ax, lv, preds[preds["level"] == lv], contribs, note if i == 0 else ""))
        axes[panels[-1].name] = ax
    handles = [Line2D([], [], linestyle="none", marker="o", markersize=8, markerfacecolor=c, markeredgecolor="white")
               for c in GRADE_COLORS]
    fig.legend(handles, list(SEVERITIES), loc="upper right", ncol=3, fontsize=9, frameon=False)
    fig.suptitle(f"Study {study.study_id} · {study.split} · point colour = predicted grade; "
                 "labels: P(Normal/Mild)/P(Moderate)/P(Severe)", x=0.02, ha="left", fontsize=11)
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


def _row_records(preds: pd.DataFrame, contribs: dict[str, list[Contribution]]) -> list[dict]:
    cols = ["row_id", "condition", "level", *SEVERITY_COLUMNS, "expected_severity", "grade", *POINT_COLUMNS, "flag"]
    recs = []
    for r in preds[cols].to_dict("records"):
        r = {k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in r.items()}
        r["top_features"] = [asdict(c) for c in contribs.get(r["row_id"], [])]
        recs.append(r)
    return recs


def render_study(
    study,
    preds: pd.DataFrame,
    out_dir: str | Path,
    contribs: dict[str, list[Contribution]] | None = None,
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
    write_text_atomic(path, index_html(docs, failed, GRADE_COLORS))
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
) -> int:
    """Render the report of every predicted study (or ``study_ids``) and the index; return how many rendered.

    A study that fails is logged, listed as failed in the index and skipped; the batch goes on. Feature
    contributions need the model bundle (``model_dir``, default ``<predictions_dir>/model``) and the features
    table predict wrote (found beside the predictions unless ``features`` is given).
    """
    from radspine.io.dataset import Dataset

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
    n = 0
    for sid in wanted:
        try:
            render_study(ds.study(sid, split), sub, out, contribs, note=note, dpi=dpi)
            failed.pop(str(sid), None)
            n += 1
        except Exception as err:  # noqa: BLE001 - one bad study must not stop the batch
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("study %s: report skipped: %s", sid, why)
            failed[str(sid)] = why
    write_json_atomic(failed_path, failed)
    write_index(out)
    return n
