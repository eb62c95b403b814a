"""`radspine predict`: unlabeled studies → localize → patches → features → graders → submission.csv.

Every study gets its 25 rows: a study (or row) that fails at any stage is filled from the training
priors stored in the model bundle, and the reason is logged in ``predict_log.json``. Each study's DICOM
files are decoded once: the per-study feature job localises the study from the same volumes it cuts
patches from. Given points (``points=``, e.g. corrected by a person) replace the localizer for the
studies they cover.
"""

from __future__ import annotations

import hashlib
import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from radspine.constants import CONDITION_GROUP, CONDITION_KEYS, LEVEL_KEYS, SEVERITY_COLUMNS
from radspine.errors import RadspineError
from radspine.fsutil import write_csv_atomic, write_json_atomic

log = logging.getLogger(__name__)

# Expected severity on the 0–1 scale (Normal/Mild 0–0.33, Moderate 0.34–0.66, Severe 0.67–1):
# a certain grade maps to 0, 0.5 and 1, each inside its own band.
SEVERITY_SCALE = np.array([0.0, 0.5, 1.0])

# Named measurements in predictions.csv (issue 11): column → (feature column, condition groups it applies to).
MEASUREMENT_COLUMNS: dict[str, tuple[str, tuple[str, ...]]] = {
    "dural_sac_area_mm2": ("mor_dural_sac_area_mm2", ("spinal",)),
    "canal_ap_mm": ("mor_canal_ap_mm", ("spinal",)),
    "foramen_area_mm2": ("mor_foramen_area_mm2", ("foraminal",)),
    "foramen_height_mm": ("mor_foramen_height_mm", ("foraminal",)),
    "recess_depth_mm": ("mor_recess_depth_mm", ("subarticular",)),
    "disc_height_mm": ("mor_disc_height_mm", ("spinal", "foraminal", "subarticular")),
}
# A localizer that had no labels for a condition writes its points with this flag: those rows come from
# the priors (there is nothing to grade), and the reason is logged.
_UNTRAINED_FLAG = "not localised: no"


def expected_severity(probs: np.ndarray) -> np.ndarray:
    """Continuous severity in [0, 1] of (n, 3) grade probabilities: P(Moderate)·0.5 + P(Severe)·1."""
    p = np.asarray(probs, dtype=np.float64)
    return p @ SEVERITY_SCALE / np.clip(p.sum(axis=1), 1e-12, None)


def _has_images(study) -> bool:
    from radspine.io.dicom import list_dicom_files

    for s in study.series:
        try:
            if list_dicom_files(s.path):
                return True
        except RadspineError:
            continue
    return False


def _file_id(path: Path) -> str:
    h = hashlib.sha256()
    for f in sorted(Path(path).glob("*")):
        if f.is_file():
            h.update(f.name.encode())
            h.update(str(f.stat().st_size).encode())
            h.update(str(f.stat().st_mtime_ns).encode())
    return h.hexdigest()[:10]


def _measurements(table: pd.DataFrame) -> pd.DataFrame:
    """The named measurement columns per row (NaN where not measured or not this condition's)."""
    out = pd.DataFrame({"row_id": table["row_id"].to_numpy()})
    groups = table["group"].to_numpy()
    for name, (col, applies) in MEASUREMENT_COLUMNS.items():
        vals = table[col].to_numpy(dtype=float) if col in table else np.full(len(table), np.nan)
        out[name] = np.where(np.isin(groups, applies), vals, np.nan)
    return out


def _zero_shot_points(data_dir: Path, split: str, localizer_dir: str | Path | None, given: pd.DataFrame | None,
                      pts_path: Path, workers: int | None, scheduler: str | None) -> None:
    """Points of a prediction without a model: the given ones where there are, else the shipped (or given)
    localizer's, written to ``pts_path`` (+ detail)."""
    from radspine.localize.infer import localize_dataset, shipped_localizer_dir
    from radspine.points import write_points

    loc_dir = Path(localizer_dir) if localizer_dir else shipped_localizer_dir()
    pts = localize_dataset(data_dir, loc_dir, pts_path, split=split, workers=workers, scheduler=scheduler)
    if given is not None and len(given):
        from radspine.constants import CONDITION_NAMES, LEVEL_NAMES

        g = given.assign(condition=given["condition"].map(lambda c: CONDITION_NAMES.get(c, c)),
                         level=given["level"].map(lambda v: LEVEL_NAMES.get(v, v)))  # fmt: skip
        key = ["study_id", "condition", "level"]
        pts = pd.concat([g, pts.merge(g[key], on=key, how="left", indicator=True).query("_merge == 'left_only'")
                         .drop(columns="_merge")], ignore_index=True)  # fmt: skip
        write_points(pts, pts_path)


def predict(
    data_dir: str | Path,
    model_dir: str | Path | None,
    out_csv: str | Path,
    *,
    split: str = "test",
    points: str | Path | None = None,
    points_out: str | Path | None = None,
    localizer_dir: str | Path | None = None,
    work_dir: str | Path | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    quiet: bool = True,
    study_uids: dict[int, str] | None = None,
) -> dict:
    """Write a complete, validated submission for every study of ``split``; return a summary dict.

    Args:
        data_dir: dataset root (competition layout).
        model_dir: bundle from ``radspine tune`` (with ``features/`` and, unless given, ``localizer/``). None =
            zero-shot: the points of the shipped (or given) localizer, every grade from the real RSNA 2024
            priors (nothing to grade with), so a user sees where radspine looks before training anything.
        out_csv: submission path (written atomically, 25 rows per study).
        points: grade at these points (the ``localize`` CSV format, e.g. corrected in a viewer) for the
            studies they cover; the localizer runs only for the others. Rows without a point fall back.
        points_out: where to write the points graded at (default: beside the work files).
        localizer_dir: localizer model (default ``MODELDIR/localizer``, else the shipped one).
        work_dir: intermediate files (default ``<out_csv folder>/predict_work``).
        study_uids: study_id → StudyInstanceUID (a plain DICOM export), carried into ``predictions.csv``.
    """
    from radspine.constants import CONDITION_NAMES, LEVEL_NAMES
    from radspine.features.extract import extract_features
    from radspine.io.dataset import Dataset
    from radspine.models.bundle import embedders_dir, load_features_config
    from radspine.models.bundle import localizer_dir as bundle_localizer_dir
    from radspine.points import attach_detail_flags, read_points, read_points_csv
    from radspine.submission import build_submission, write_submission

    t0 = time.perf_counter()
    zero_shot = model_dir is None
    model_dir = None if zero_shot else Path(model_dir)
    out_csv = Path(out_csv)
    work = Path(work_dir) if work_dir else out_csv.parent / "predict_work"
    work.mkdir(parents=True, exist_ok=True)
    bundle, cfg = (None, None) if zero_shot else load_features_config(model_dir)
    ds = Dataset.open(data_dir)
    if not ds.has_split(split):
        raise RadspineError(f"{data_dir}: no {split} split (need {split}_series_descriptions.csv)")
    studies = ds.studies(split)
    study_ids = [s.study_id for s in studies]
    if not study_ids:
        raise RadspineError(f"{data_dir}: no studies in the {split} split")
    skipped: dict[str, str] = {}
    warned: set[str] = set()  # causes already logged once for the whole split
    pts_path = Path(points_out) if points_out else work / "points.csv"
    given = None
    if points is not None:
        given = attach_detail_flags(read_points_csv(Path(points)), Path(points))
        given = given[given["study_id"].isin(study_ids)]
        log.info("%s: given points for %d of %d studies", points, given["study_id"].nunique(), len(study_ids))

    imaged = [s for s in studies if _has_images(s)]
    t_feat = time.perf_counter()
    table = None
    meta: dict = {"problems": {}}
    if not imaged:
        why = f"{data_dir}: no {split} study has images ({len(studies)} studies, every series folder empty or missing)"
        log.warning("%s; all %d rows from priors", why, 25 * len(studies))
        warned.add(why)
        skipped.update({str(s): why for s in study_ids})
    else:
        from radspine.localize.infer import Localizer

        need_loc = given is None or given["study_id"].nunique() < len(study_ids)
        locate, locate_id = None, ""
        if zero_shot:
            _zero_shot_points(data_dir, split, localizer_dir, given, pts_path, workers, scheduler)
        elif need_loc:
            loc_dir = Path(localizer_dir) if localizer_dir else bundle_localizer_dir(model_dir)
            loc = Localizer.load(loc_dir)
            locate, locate_id = loc.predict_volumes, _file_id(loc_dir)
    if imaged and not zero_shot:
        meta = extract_features(
            data_dir, split, work / "features", points=given, cfg=cfg, workers=workers, scheduler=scheduler,
            overwrite=True, embedders_dir=embedders_dir(model_dir), quiet=quiet, locate=locate,
            locate_id=locate_id, points_out=pts_path,
        )
        bundle.check_features_meta(meta, str(work / "features" / "meta.json"))
        table = pd.read_parquet(work / "features" / "features.parquet")
    t_feat = time.perf_counter() - t_feat

    # Points graded at, with the localizer's flags (also for given points: their "given" flag).
    if (table is not None or (zero_shot and imaged)) and pts_path.is_file():
        from radspine.points import detail_path

        pts = read_points(detail_path(pts_path))
    else:
        pts = pd.DataFrame(columns=["study_id", "condition", "level", "flag"])
    for sid, flags in pts.groupby("study_id")["flag"]:
        bad = [f for f in flags.fillna("").astype(str) if f and f != "given"]
        if bad:
            skipped.setdefault(str(sid), f"localizer: {bad[0]}")
    pts = pts.assign(condition=pts["condition"].map(lambda c: CONDITION_KEYS.get(c, c)),
                     level=pts["level"].map(lambda v: LEVEL_KEYS.get(v, v)))  # fmt: skip

    # Graders; studies whose features failed entirely, and rows of conditions the localizer was never
    # trained for, come from the priors.
    from_priors: dict[str, str] = {}
    if table is not None:
        absent = [c for c in bundle.features if c not in table.columns]
        if absent:
            # A column no test study could produce (e.g. no study had a patch of that family): NaN, like
            # any feature that could not be measured, never a crash that loses the rows.
            log.warning("%d feature column(s) absent from every test study, set to NaN: %s", len(absent), absent[:5])
            table = pd.concat([table, pd.DataFrame(np.nan, index=table.index, columns=absent)], axis=1)
        preds = bundle.predict_proba(table)
        failed = {int(s) for s, why in meta["problems"].items() if "has_point" in table and
                  table.loc[table["study_id"] == int(s), "has_point"].fillna(0).eq(0).all()}
        for s in failed:
            skipped.setdefault(str(s), f"features: {meta['problems'][str(s)]}")
        untrained = pts[pts["flag"].fillna("").astype(str).str.startswith(_UNTRAINED_FLAG)]
        for r in untrained.itertuples(index=False):
            from_priors[f"{int(r.study_id)}_{r.condition}_{r.level}"] = str(r.flag)
        for rid in table.loc[table["study_id"].isin(failed), "row_id"]:
            from_priors[rid] = f"no gradable point or image: {meta['problems'].get(rid.split('_', 1)[0], '')}"[:300]
        modelled = set(getattr(bundle.model, "groups_", []) or [])
        if modelled:
            for rid, g in zip(table["row_id"], table["group"], strict=True):
                if g not in modelled:
                    from_priors.setdefault(rid, f"no {g} labels in training")
        keep = ~preds["row_id"].isin(list(from_priors)).to_numpy()
        preds = preds[keep]
    else:
        preds = pd.DataFrame(columns=["row_id", *SEVERITY_COLUMNS])
    if zero_shot:
        from radspine.models.severity import fit_priors

        priors = fit_priors(pd.DataFrame(columns=["study_id", "condition", "level", "grade"]))[0]
        why = "no model given (--model): real RSNA 2024 priors; grading needs a bundle from `radspine tune`"
        from_priors = {f"{s}_{c}_{lv}": why for s in study_ids for c in CONDITION_NAMES for lv in LEVEL_NAMES}
        log.warning("%s", why)
    sub, n_filled = build_submission(study_ids, preds, priors if zero_shot else bundle.priors)
    write_submission(sub, out_csv, study_ids)

    # Per-row details for people: probabilities, expected severity, where the grade came from, the point
    # used and the measurements behind it.
    details = sub.copy()
    details["expected_severity"] = expected_severity(details[list(SEVERITY_COLUMNS)].to_numpy())
    details["study_id"] = details["row_id"].str.split("_", n=1).str[0].astype(int)
    key_of = {f"{c}_{lv}": (c, lv) for c in CONDITION_NAMES for lv in LEVEL_NAMES}
    ck = details["row_id"].map(lambda r: key_of.get(r.split("_", 1)[1], (None, None)))
    details["condition"] = ck.str[0]
    details["level"] = ck.str[1]
    details["graded_from"] = "model"
    in_preds = details["row_id"].isin(set(preds["row_id"]))
    details.loc[~in_preds, "graded_from"] = [f"priors: {from_priors.get(r, skipped.get(r.split('_', 1)[0], 'no prediction'))}"
                                             for r in details.loc[~in_preds, "row_id"]]  # fmt: skip
    if study_uids:
        details.insert(details.columns.get_loc("study_id") + 1, "study_uid",
                       details["study_id"].map(lambda s: study_uids.get(int(s), "")))
    pcols = [c for c in ("series_id", "instance_number", "x", "y", "world_x", "world_y", "world_z", "confidence",
                         "level_confidence", "flag") if c in pts]  # fmt: skip
    details = details.merge(pts[["study_id", "condition", "level", *pcols]].drop_duplicates(["study_id", "condition", "level"]),
                            on=["study_id", "condition", "level"], how="left")  # fmt: skip
    if table is not None:
        details = details.merge(_measurements(table), on="row_id", how="left")
    else:
        for name in MEASUREMENT_COLUMNS:
            details[name] = np.nan
    details["group"] = details["condition"].map(CONDITION_GROUP)
    write_csv_atomic(details, out_csv.parent / "predictions.csv", float_format="%.6f")
    summary = {
        "studies": len(study_ids),
        "rows": int(len(sub)),
        "rows_from_priors": int(n_filled),
        "skipped": skipped,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_features": round(t_feat, 2),
        "seconds_per_study": round((time.perf_counter() - t0) / max(len(study_ids), 1), 3),
        "submission": str(out_csv),
        "points": str(pts_path) if table is not None else None,
        "points_given": str(points) if points is not None else None,
    }
    write_json_atomic(work / "predict_log.json", summary)
    for sid, why in skipped.items():
        if why not in warned:
            log.warning("study %s: %s", sid, why)
    return summary
