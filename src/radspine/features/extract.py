"""`radspine extract-features`: level points → patches → radiomics + CNN embeddings → features.parquet.

Orchestration only: per-study work (:mod:`radspine.features.study`) is mapped over studies by
:mod:`radspine.parallel` and cached (:mod:`radspine.features.cache`) so an interrupted run resumes where it
stopped; the CNN stage (:mod:`radspine.features.cnn_stage`) needs all studies at once (out-of-fold
training on the study folds assigned here, column ``cv_fold``), so it runs after the map.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np
import pandas as pd

from radspine import __version__
from radspine.constants import SERIES_SHORT, SERIES_TYPES
from radspine.errors import DatasetError, RadspineError
from radspine.features.cache import CachedJob, is_cached, load_cached
from radspine.features.config import CNN_FAMILIES, FeaturesConfig, config_hash, study_config_hash
from radspine.features.schema import FOLD_COLUMN, feature_columns, write_table
from radspine.features.study import Locate, StudyFeatures, StudyJob
from radspine.fsutil import write_json_atomic
from radspine.points import SCHEMA_COLUMNS, attach_detail_flags, points_hash, read_points_csv

log = logging.getLogger(__name__)


# -------------------------------------------------------------------------------------------- the stage
def _versions() -> dict[str, str]:
    import importlib.metadata as md

    out = {"radspine": __version__}
    for pkg in ("pyradiomics-bhklab", "timm", "torch", "numpy", "pandas", "SimpleITK", "pydicom"):
        try:
            out[pkg] = md.version(pkg)
        except md.PackageNotFoundError:
            out[pkg] = "absent"
    return out


def _points_for(ds, split: str, points: str | Path | pd.DataFrame | None) -> tuple[pd.DataFrame, str]:
    """The points to grade at, with a ``flag`` column ("" = usable; see :func:`radspine.points.is_unusable`)."""
    if points is None:
        return pd.DataFrame(columns=[*SCHEMA_COLUMNS, "flag"]), "none"
    if isinstance(points, pd.DataFrame):
        pts = points.copy()
        if "flag" not in pts:
            pts["flag"] = ""
        return pts, "dataframe"
    if str(points) == "labels":
        coords = ds.coordinates
        if coords is None or len(coords) == 0:
            raise RadspineError(f"{ds.root}: --points labels needs train_label_coordinates.csv rows")
        return coords[list(SCHEMA_COLUMNS)].assign(flag=""), "labels"
    # A localizer CSV: its _detail.csv sidecar says which points are doubtful (unless a person moved them).
    return attach_detail_flags(read_points_csv(Path(points)), Path(points)), str(points)


def _row_grades(ds, split: str) -> dict[str, float] | None:
    """row_id → grade of the labelled rows (train split with train.csv), else None."""
    if split != "train" or ds.labels is None:
        return None
    lab = ds.labels_long().dropna(subset=["grade"])
    return {f"{int(s)}_{c}_{lv}": float(g) for s, c, lv, g in zip(lab["study_id"], lab["condition"], lab["level"], lab["grade"], strict=True)}


def _assign_folds(base: pd.DataFrame, grades: dict[str, float] | None, cfg: FeaturesConfig) -> tuple[np.ndarray, str]:
    """Study folds for the CNN's OOF embeddings and for tune (one assignment for both)."""
    from radspine.folds import study_folds

    g = np.array([(grades or {}).get(r, np.nan) for r in base["row_id"]], dtype=float)
    try:
        return study_folds(base, g, cfg.cnn_folds, cfg.seed), ""
    except DatasetError as err:
        # Too few labelled studies: folds still assigned (round-robin by study) so the table is complete.
        ids = sorted(base["study_id"].unique())
        rr = {s: i % cfg.cnn_folds for i, s in enumerate(ids)}
        return base["study_id"].map(rr).to_numpy(), str(err)


def extract_features(
    data_dir: str | Path,
    split: str,
    out: str | Path,
    *,
    points: str | Path | pd.DataFrame | None = "labels",
    cfg: FeaturesConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    embedders_dir: str | Path | None = None,
    quiet: bool = True,
    locate: Locate | None = None,
    locate_id: str = "",
    points_out: str | Path | None = None,
) -> dict:
    """Build ``OUT/features.parquet`` (25 rows per study) and ``OUT/meta.json`` for one split.

    Args:
        data_dir: dataset root in the competition layout.
        split: "train" or "test".
        out: work directory (features, meta, per-study cache, trained CNN embedders).
        points: "labels" (train_label_coordinates.csv), a points CSV in that format (e.g. localizer output,
            possibly corrected by a person; its ``_detail.csv`` flags mark doubtful points), or a DataFrame.
        cfg: feature configuration (defaults when None).
        workers / scheduler: see :func:`radspine.parallel.map_items`.
        overwrite: recompute everything instead of refusing an existing output / resuming the cache.
        embedders_dir: trained CNN embedders for the test split (default ``OUT/embedders``).
        locate: localise studies that have no given points from their own decoded volumes (predict:
            a bound ``Localizer.predict_volumes``); ``locate_id`` names that localizer in the cache key.
        points_out: write every point graded at (given and located) here in the points CSV format
            (+ ``_detail.csv``).

    Returns:
        The meta dict written to ``meta.json``: config_hash, split, points (+ points_hash), versions,
        n_studies / n_rows / n_features, n_extracted / n_cached (this run vs reused from the cache),
        n_failed_studies + failures (study → reason; those studies get 25 flagged NaN rows), problems
        (every study with a logged issue, e.g. an unreadable series), seconds (+ per stage).

    Raises:
        RadspineError: bad split / dataset / points file, an existing output without ``overwrite``,
            or a test split without trained CNN embedders (checked before any study is processed).
            A CNN family without labels, or with one grade only, is skipped (logged; NaN ``cnn_*``).
    """
    from radspine.features.table import add_context, add_geometry, context_columns, skeleton
    from radspine.io.dataset import Dataset
    from radspine.parallel import map_items

    t0 = time.perf_counter()
    cfg = cfg or FeaturesConfig()
    out = Path(out)
    if split not in ("train", "test"):
        raise RadspineError(f"--split must be train or test, got {split!r}")
    ds = Dataset.open(data_dir)
    if not ds.has_split(split):
        raise RadspineError(f"{data_dir}: no {split}_images / {split}_series_descriptions.csv")
    studies = ds.studies(split)
    if not studies:
        raise RadspineError(f"{data_dir}: no studies in {split}_images")
    target = out / "features.parquet"
    if target.exists() and not overwrite:
        raise RadspineError(f"{target} exists; pass --overwrite to recompute")
    pts, points_source = _points_for(ds, split, points)
    by_study = {int(s): g.reset_index(drop=True) for s, g in pts.groupby("study_id")}
    if locate is None and not any(st.study_id in by_study for st in studies):
        raise RadspineError(f"{points_source}: no points for any study of the {split} split")
    emb_dir = Path(embedders_dir) if embedders_dir else out / "embedders"
    if cfg.cnn_enabled and split == "test":
        from radspine.features.cnn_stage import read_manifest

        read_manifest(emb_dir)  # checked before the (long) per-study map, not after it
    chash = config_hash(cfg)
    # The points are part of a cached entry's identity too: other points (labels vs a localizer CSV)
    # must never reuse patches cut at the old ones. CNN-only settings are not: they act after this stage.
    pkey = points_hash(pts) + (f"-loc{locate_id}" if locate is not None else "")
    cache_dir = out / "cache" / study_config_hash(cfg) / f"{split}-{pkey}"
    if overwrite and cache_dir.exists():
        import shutil

        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = [(st, by_study.get(st.study_id)) for st in studies if not is_cached(cache_dir, st.study_id)]
    log.info("%s: %d studies, %d cached, %d to extract", split, len(studies), len(studies) - len(todo), len(todo))
    t_map = time.perf_counter()
    job = CachedJob(StudyJob(cfg, split, locate=locate), cache_dir)
    outcomes = map_items(job, todo, key=lambda it: it[0].study_id, workers=workers, scheduler=scheduler,
                         desc=f"extract {split}", quiet=quiet)
    errors = {int(oc.key): oc.error for oc in outcomes if not oc.ok}
    results: dict[int, StudyFeatures] = {}
    failures: dict[str, str] = {}
    frames = []
    for st in studies:
        sf = None if st.study_id in errors else load_cached(cache_dir, st.study_id, patches=False)
        if sf is None:
            failures[str(st.study_id)] = errors.get(st.study_id) or "cache entry unreadable"
            # Safe fallback: the study keeps its 25 rows, flagged as having nothing.
            frames.append(skeleton([st.study_id]).assign(
                has_point=0.0, **{f"has_{SERIES_SHORT[t]}": 0.0 for t in SERIES_TYPES}))
            continue
        results[st.study_id] = sf
        if sf.problems:
            failures.setdefault(str(st.study_id), "; ".join(sf.problems[:5]))
        frames.append(sf.rows)
    base = pd.concat(frames, ignore_index=True, sort=False).copy()
    t_map = time.perf_counter() - t_map
    t_cnn = time.perf_counter()
    grades = _row_grades(ds, split)
    fold_note = ""
    if split == "train":
        base[FOLD_COLUMN], fold_note = _assign_folds(base, grades, cfg)
        if fold_note:
            log.warning("train split: %s; CNN embeddings skipped", fold_note)
    cnn_info: dict = {"trained": [], "skipped": dict.fromkeys(CNN_FAMILIES, "cnn disabled")}
    if cfg.cnn_enabled and not fold_note:
        from radspine.features.cnn_stage import add_cnn_columns

        base, cnn_info = add_cnn_columns(base, results, cache_dir, cfg, split, grades, out, emb_dir)
    elif fold_note:
        cnn_info["skipped"] = dict.fromkeys(CNN_FAMILIES, fold_note)
        base["has_cnn"] = 0.0
        if cfg.cnn_enabled:
            # The test split must know these families were skipped on purpose, not forgotten.
            write_json_atomic(out / "embedders" / "embedders.json", {"trained": [], "skipped": cnn_info["skipped"]})
    t_cnn = time.perf_counter() - t_cnn
    table = add_geometry(base)
    table = add_context(table, context_columns(table, cfg.context_cnn_dims))
    write_table(table, target)
    write_json_atomic(out / "features_config.json", cfg.model_dump(mode="json"))
    meta = {
        "config_hash": chash,
        "split": split,
        "points": points_source,
        "points_hash": pkey,
        "versions": _versions(),
        "radspine_version": __version__,
        "backbone": cfg.embeddings.backbone if cfg.cnn_enabled else "none",
        "n_studies": len(studies),
        "n_rows": int(len(table)),
        "n_features": len(feature_columns(table)),
        "cnn": cnn_info,
        "folds": {"column": FOLD_COLUMN, "k": cfg.cnn_folds, "seed": cfg.seed, "note": fold_note} if split == "train" else None,
        "n_extracted": len(todo),
        "n_cached": len(studies) - len(todo),
        "n_failed_studies": len([s for s in failures if int(s) not in results]),
        "failures": {s: r for s, r in failures.items() if int(s) not in results},
        "problems": failures,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_studies": round(t_map, 2),
        "seconds_cnn": round(t_cnn, 2),
        # Summed over this run's studies (worker CPU seconds, not wall): where the per-study time goes.
        "profile_s": _profile(results, {int(it[0].study_id) for it in todo}, t_cnn),
    }
    if points_out is not None:
        meta["points_csv"] = str(_write_graded_points(studies, results, by_study, points_out))
    write_json_atomic(out / "meta.json", meta)
    return meta


def _profile(results: dict[int, StudyFeatures], extracted: set[int], t_cnn: float) -> dict[str, float]:
    prof: dict[str, float] = {}
    for sid, sf in results.items():
        if sid in extracted:
            for k, v in sf.timings.items():
                prof[k] = prof.get(k, 0.0) + float(v)
    prof["cnn"] = t_cnn
    return {k: round(v, 2) for k, v in prof.items()}


def _write_graded_points(studies, results: dict[int, StudyFeatures], given: dict[int, pd.DataFrame],
                         path: str | Path) -> Path:  # fmt: skip
    """Every study's 25 points as graded (located, given, or a failure row) in the points CSV format."""
    from radspine.constants import CONDITION_NAMES, CONDITIONS, LEVEL_NAMES, LEVELS
    from radspine.points import DETAIL_COLUMNS, write_points

    frames = []
    for st in studies:
        sid = int(st.study_id)
        sf = results.get(sid)
        if sid in given:
            g = given[sid].assign(condition=given[sid]["condition"].map(lambda c: CONDITION_NAMES.get(c, c)),
                                  level=given[sid]["level"].map(lambda v: LEVEL_NAMES.get(v, v)))  # fmt: skip
            g = g.assign(world_x=np.nan, world_y=np.nan, world_z=np.nan,
                         flag=g["flag"].where(g["flag"].astype(bool), "given"))  # fmt: skip
            frames.append(g[list(DETAIL_COLUMNS)])
        elif sf is not None and sf.points is not None:
            frames.append(sf.points)
        else:
            why = "failed: study could not be read"
            frames.append(pd.DataFrame([{"study_id": sid, "series_id": -1, "instance_number": -1,
                                         "condition": CONDITION_NAMES[c], "level": LEVEL_NAMES[lv], "x": np.nan,
                                         "y": np.nan, "world_x": np.nan, "world_y": np.nan, "world_z": np.nan,
                                         "flag": why} for c in CONDITIONS for lv in LEVELS]))  # fmt: skip
    allp = pd.concat(frames, ignore_index=True)
    allp = allp.astype({"study_id": "int64", "series_id": "int64", "instance_number": "int64"})
    write_points(allp, path)
    return Path(path)
