"""`radspine view`'s library call: one self-contained HTML page per predicted study and an index.

Reads what ``radspine predict`` wrote (``predictions.csv``, the points CSV it graded at, its features table)
and the dataset's DICOM series; writes ``study_<id>.html`` (images embedded, so it opens from the file system
with no server and no network), ``index.html`` and ``viewer_index.json`` (the index's data, merged across runs
so viewing one more study keeps the others listed).
"""

from __future__ import annotations

import json
import logging
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from radspine.errors import DatasetError, ModelError
from radspine.fsutil import write_json_atomic, write_text_atomic

log = logging.getLogger(__name__)

INDEX_JSON = "viewer_index.json"


@dataclass
class ViewerResult:
    """What :func:`build_viewer` wrote."""

    index: Path
    pages: dict[int, Path] = field(default_factory=dict)
    failed: dict[int, str] = field(default_factory=dict)
    note: str = ""

    @property
    def n(self) -> int:
        return len(self.pages)


def find_points_file(predictions_dir: str | Path, split: str = "test") -> Path | None:
    """The points CSV ``radspine predict`` graded at: named in its ``predict_log.json`` (predict and demo
    layouts), else a ``points.csv`` beside the predictions."""
    d = Path(predictions_dir)
    d = d.parent if d.suffix == ".csv" else d
    for log_path in (d / "predict_work" / "predict_log.json", d / "work" / split / "predict_log.json"):
        if log_path.is_file():
            try:
                p = json.loads(log_path.read_text()).get("points")
            except json.JSONDecodeError:
                continue
            if p and Path(p).is_file():
                return Path(p)
    return d / "points.csv" if (d / "points.csv").is_file() else None


def read_points_text(path: str | Path) -> pd.DataFrame:
    """A points CSV with ``x``/``y`` also kept as the text written (``x_text``/``y_text``), so a page can write
    unmoved points back byte for byte; raises DatasetError naming the file when it is not in the schema."""
    from radspine.points import SCHEMA_COLUMNS

    path = Path(path)
    try:
        raw = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError, UnicodeDecodeError) as err:
        raise DatasetError(f"{path}: unreadable points CSV: {str(err).splitlines()[0]}") from None
    missing = [c for c in SCHEMA_COLUMNS if c not in raw.columns]
    if missing:
        raise DatasetError(f"{path}: not a points CSV (missing columns {missing})")
    out = raw[list(SCHEMA_COLUMNS)].copy()
    try:
        for c in ("study_id", "series_id", "instance_number"):
            out[c] = out[c].astype("int64")
        for c in ("x", "y"):
            out[f"{c}_text"] = raw[c].str.strip()
            out[c] = out[c].astype(float)
    except ValueError as err:
        raise DatasetError(f"{path}: {err}") from None
    return out


def _study_uids(predictions_dir: str | Path) -> dict[int, str]:
    from radspine.report import predictions_path

    path = predictions_path(predictions_dir)
    head = pd.read_csv(path, nrows=0).columns
    if "study_uid" not in head:
        return {}
    df = pd.read_csv(path, usecols=["study_id", "study_uid"], dtype={"study_uid": str}).dropna()
    return {int(s): str(u) for s, u in zip(df["study_id"], df["study_uid"], strict=True)}


class _PageJob:
    """One study's viewer page as a picklable callable (for :func:`radspine.parallel.map_items`); returns the
    index entry of the page it wrote."""

    def __init__(self, preds: pd.DataFrame, out: Path, contribs: dict, note: str, uids: dict[int, str],
                 pts: pd.DataFrame | None, max_px: int, fmt: str, quality: int) -> None:
        self.preds, self.out, self.contribs, self.note, self.uids = preds, out, contribs, note, uids
        self.pts, self.max_px, self.fmt, self.quality = pts, max_px, fmt, quality

    def __call__(self, study) -> dict:
        from radspine.io.volumes import load_study_volumes
        from radspine.viewer.page import study_html
        from radspine.viewer.payload import study_payload, study_summary

        sid = int(study.study_id)
        payload = study_payload(
            study, self.preds[self.preds["study_id"] == sid], load_study_volumes(study), contribs=self.contribs,
            note=self.note, study_uid=self.uids.get(sid, ""),
            points=self.pts[self.pts["study_id"] == sid] if self.pts is not None else None,
            max_px=self.max_px, fmt=self.fmt, quality=self.quality,
        )
        page = self.out / f"study_{sid}.html"
        write_text_atomic(page, study_html(payload))
        summary = study_summary(payload)
        summary["page"] = page.name
        summary["bytes"] = page.stat().st_size
        return summary


def build_viewer(
    data_dir: str | Path,
    predictions_dir: str | Path,
    out_dir: str | Path,
    *,
    model_dir: str | Path | None = None,
    split: str = "test",
    study_ids: list[int] | None = None,
    features: str | Path | None = None,
    points: str | Path | None = None,
    top_k: int = 3,
    max_px: int = 512,
    image_format: str = "webp",
    quality: int = 85,
    workers: int | None = 1,
) -> ViewerResult:
    """Write one viewer page per predicted study (or ``study_ids``) and the index; return what was written.

    Args:
        predictions_dir: output folder of ``radspine predict`` (or its ``predictions.csv``).
        model_dir / features: as for ``radspine report`` (feature contributions; found beside the predictions
            by default; without them the pages say why none are shown).
        points: the points CSV predict graded at (default: the one its ``predict_log.json`` names); the
            page's "Save points" writes its unmoved rows back exactly.
        max_px / image_format / quality: stored slice images: longer side ≤ ``max_px``, ``webp`` (quality 100
            = lossless) or ``png``.
        workers: processes that build the pages (:func:`radspine.parallel.map_items`; None = the cores):
            decoding a study's series and encoding its slices takes seconds, like a report.

    A study that fails is logged, listed in the index as not built, and skipped; the batch goes on.
    """
    from radspine.io.dataset import Dataset
    from radspine.parallel import map_items
    from radspine.report import contributions_for, load_predictions, predictions_path
    from radspine.viewer.page import index_html
    from radspine.viewer.slices import FORMATS

    if image_format not in FORMATS:
        raise DatasetError(f"unknown image format {image_format!r} (use one of {', '.join(sorted(FORMATS))})")
    preds = load_predictions(predictions_dir)
    ds = Dataset.open(data_dir)
    if not ds.has_split(split):
        raise DatasetError(f"{data_dir}: no {split} split")
    known = set(preds["study_id"])
    wanted = sorted(known) if study_ids is None else [int(s) for s in study_ids]
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
    pts_path = Path(points) if points is not None else find_points_file(predictions_dir, split)
    if points is not None and not pts_path.is_file():
        raise DatasetError(f"points file not found: {pts_path}")
    pts = read_points_text(pts_path) if pts_path is not None else None
    if pts is None:
        log.warning("%s: no points CSV found beside the predictions; 'Save points' writes predictions.csv's "
                    "coordinates (6 decimals)", predictions_dir)
    uids = _study_uids(predictions_dir)

    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    idx_path = out / INDEX_JSON
    try:
        index = json.loads(idx_path.read_text()) if idx_path.is_file() else {}
    except json.JSONDecodeError:
        log.warning("%s: corrupt, rebuilt from this run's studies", idx_path)
        index = {}
    studies, failed = index.get("studies", {}), index.get("failed", {})
    result = ViewerResult(index=out / "index.html", note=note)
    todo = []
    for sid in wanted:
        try:
            todo.append(ds.study(sid, split))
        except Exception as err:  # noqa: BLE001 - one bad study must not stop the batch
            why = str(err).splitlines()[0] if str(err) else type(err).__name__
            log.warning("study %s: viewer page skipped: %s", sid, why)
            failed[str(sid)] = why
            result.failed[sid] = why
    job = _PageJob(sub, out, contribs, note, uids, pts, max_px, image_format, quality)
    for o in map_items(job, todo, key=lambda st: int(st.study_id), workers=workers, desc="viewer pages"):
        sid = int(o.key)
        if o.ok:
            studies[str(sid)] = o.value
            failed.pop(str(sid), None)
            result.pages[sid] = out / o.value["page"]
        else:  # map_items logged it
            failed[str(sid)] = o.error
            result.failed[sid] = o.error
    write_json_atomic(idx_path, {"studies": studies, "failed": failed})
    write_text_atomic(result.index, index_html(list(studies.values()), failed))
    return result
