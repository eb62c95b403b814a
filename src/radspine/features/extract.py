"""`radspine extract-features`: level points → patches → radiomics + CNN embeddings → features.parquet.

Per-study work (volumes, patches, radiomics) is mapped over studies by :mod:`radspine.parallel` and
cached in ``WORKDIR/cache/<config hash>/`` so an interrupted run resumes where it stopped. The CNN
stage needs all studies at once (out-of-fold training), so it runs after the map.
"""

from __future__ import annotations

import hashlib
import json
import logging
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd
from pydantic import BaseModel, ConfigDict, Field

from radspine import __version__
from radspine.constants import CONDITION_GROUP, SERIES_SHORT, SERIES_TYPES
from radspine.errors import RadspineError
from radspine.features.embeddings import EmbeddingConfig
from radspine.fsutil import atomic_path, write_json_atomic, write_parquet_atomic
from radspine.patches import PatchConfig
from radspine.types import Study, Volume

log = logging.getLogger(__name__)

POINT_COLUMNS = ("study_id", "series_id", "instance_number", "condition", "level", "x", "y")


# ----------------------------------------------------------------------------------------------- points
def read_points_csv(path: Path) -> pd.DataFrame:
    """Read a points CSV in train_label_coordinates.csv format (validated; condition/level as keys)."""
    from radspine.io.dataset import read_coordinates

    path = Path(path)
    if not path.is_file():
        raise RadspineError(f"points file not found: {path}")
    return read_coordinates(path)


def points_hash(pts: pd.DataFrame) -> str:
    """Content hash of a points table (order-independent within the POINT_COLUMNS)."""
    t = pts[list(POINT_COLUMNS)].sort_values(list(POINT_COLUMNS[:5]), kind="stable").reset_index(drop=True)
    h = pd.util.hash_pandas_object(t, index=False).to_numpy()
    return hashlib.sha256(h.tobytes()).hexdigest()[:12]


# ---------------------------------------------------------------------------------------------- volumes
@dataclass
class StudyVolumes:
    """Every readable stack of a study, by series type, plus the reasons for what could not be read."""

    study_id: int
    by_type: dict[str, list[Volume]] = field(default_factory=dict)
    problems: list[str] = field(default_factory=list)

    def all(self) -> list[Volume]:
        return [v for vols in self.by_type.values() for v in vols]

    def find(self, series_id: int, instance_number: int) -> Volume | None:
        """The stack holding this series' instance, if any."""
        for v in self.all():
            if v.series_id == series_id and np.any(v.instance_numbers == instance_number):
                return v
        return None


def load_study_volumes(study: Study) -> StudyVolumes:
    """Read every series of a study; a corrupt series is recorded as a problem, not raised."""
    from radspine.io.dataset import read_study

    volumes, findings = read_study(study, skip_errors=True)
    out = StudyVolumes(study.study_id, problems=[f.message for f in findings])
    for s in study.series:
        if s.description in SERIES_TYPES and s.series_id in volumes:
            out.by_type.setdefault(s.description, []).extend(volumes[s.series_id])
    return out


# ----------------------------------------------------------------------------------------------- config
def _default_embeddings() -> EmbeddingConfig:
    # 16 PCA dims + the network's 3 grade probabilities: compact enough for boosted trees on a few
    # hundred studies; the probabilities carry most of the CNN's signal into the context columns.
    # A quarter-width resnet10t on patches downsized to 32 px (1.5 mm/px over the 48 mm patch): the CNN
    # stage dominated the command's cost; stock width at 64 px took ~23 s per fit on 80 patches on one
    # core, this ~0.5 s (see benchmarks/extract_bench.py and the report of issue 4).
    return EmbeddingConfig(
        backbone="resnet10t",
        backbone_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16},
        image_size=32,
        epochs=4,
        pca_dims=16,
        append_proba=True,
    )


class RadiomicsSettings(BaseModel):
    """Which pyradiomics params file (pyradiomics' YAML format) each series type uses."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    enabled: bool = True
    sagittal: str = Field("sagittal_2d.yaml", description="params for sagittal patches (name in configs/radiomics or a path)")
    axial: str = Field("axial_2d.yaml", description="params for axial patches")


class FeaturesConfig(BaseModel):
    """Everything that changes the feature table; its hash must match between training and prediction."""

    model_config = ConfigDict(extra="forbid")

    # Training points jittered by 1 mm: best held-out score at localizer-predicted points among labels,
    # jitter 1/2 mm and out-of-fold localizer points (benchmarks/skew_experiment.py; issue 4 report).
    patches: PatchConfig = Field(default_factory=lambda: PatchConfig(jitter_sigma_mm=1.0))
    radiomics: RadiomicsSettings = Field(default_factory=RadiomicsSettings)
    cnn_enabled: bool = True
    cnn_folds: int = Field(3, ge=2, description="out-of-fold splits for training-row embeddings")
    embeddings: EmbeddingConfig = Field(default_factory=_default_embeddings)
    context_cnn_dims: int = Field(4, ge=0, description="CNN dims copied into neighbour/side context columns")
    max_plane_distance_mm: float = Field(
        8.0, gt=0, description="an axial patch needs a slice within this distance of the point"
    )
    seed: int = 0


# CNN families: which patch spec feeds each group's network.
CNN_FAMILIES = {"spinal": "spinal_sagittal", "foraminal": "foraminal", "subarticular": "subarticular"}


def radiomics_params_path(name: str) -> Path:
    """Resolve a radiomics params name to a file: a path as given, else the packaged configs/radiomics."""
    from radspine.config import config_dir

    p = Path(name)
    if p.is_file():
        return p
    q = config_dir() / "radiomics" / name
    if q.is_file():
        return q
    raise RadspineError(f"radiomics params file not found: {name} (looked in {q.parent})")


def config_hash(cfg: FeaturesConfig) -> str:
    """Stable hash of everything that changes feature values (config + radiomics params file contents)."""
    payload = cfg.model_dump(mode="json")
    payload["embeddings"].pop("device", None)  # CPU vs CUDA must not change the identity of a model
    payload["embeddings"].pop("num_threads", None)
    payload.pop("cnn_folds", None)
    if cfg.radiomics.enabled:
        payload["radiomics_params"] = {
            k: radiomics_params_path(getattr(cfg.radiomics, k)).read_text() for k in ("sagittal", "axial")
        }
    blob = json.dumps(payload, sort_keys=True).encode()
    return hashlib.sha256(blob).hexdigest()[:16]


# ------------------------------------------------------------------------------------------- per study
@dataclass
class StudyFeatures:
    """What one study yields before the CNN stage: 25 rows of base features and the CNN patches."""

    rows: pd.DataFrame
    patches: dict[str, np.ndarray]  # family -> (n_rows_of_family, C, H, W) float32
    patch_row_ids: dict[str, list[str]]
    problems: list[str]


class StudyJob:
    """Picklable per-study worker (runs in a process or on a Dask worker).

    Items are ``(study, points)`` pairs so that each task carries only its own study's points, not the
    whole points table (which would be pickled once per task).
    """

    def __init__(self, cfg: FeaturesConfig, split: str):
        self.cfg = cfg
        self.split = split
        self._extractors: dict[tuple[str, str], object] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_extractors"] = None
        return state

    def _extractor(self, series: str):
        from radspine.features.radiomics import RadiomicsExtractor

        if self._extractors is None:
            self._extractors = {}
        kind = "axial" if series == "Axial T2" else "sagittal"
        key = (kind, series)
        if key not in self._extractors:
            params = radiomics_params_path(getattr(self.cfg.radiomics, kind))
            self._extractors[key] = RadiomicsExtractor(params, ndim=2, series=SERIES_SHORT[series])
        return self._extractors[key]

    def __call__(self, item: tuple[Study, pd.DataFrame | None]) -> StudyFeatures:
        study, pts = item
        return extract_study(study, pts, self.cfg, self.split, self._extractor)


def _world_points(study_id: int, pts: pd.DataFrame | None, vols: StudyVolumes) -> dict[tuple[str, str], tuple[np.ndarray, str]]:
    """World point and flag per (condition, level) from a points table (label or predicted)."""
    from radspine.geometry import pixel_to_world

    out: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    if pts is None:
        return out
    for r in pts.itertuples(index=False):
        vol = vols.find(int(r.series_id), int(r.instance_number))
        if vol is None:
            out[(r.condition, r.level)] = (np.full(3, np.nan), f"series {r.series_id} instance {r.instance_number} not readable")
            continue
        k = vol.slice_index(int(r.instance_number))
        out[(r.condition, r.level)] = (pixel_to_world(vol, float(r.x), float(r.y), k), "")
    return out


def extract_study(study: Study, pts: pd.DataFrame | None, cfg: FeaturesConfig, split: str, extractor) -> StudyFeatures:
    """Base features of one study's 25 rows: point geometry, radiomics per patch, presence flags."""
    from radspine.features.table import skeleton
    from radspine.geometry import nearest_stack
    from radspine.patches import extract_patch, jitter_points

    vols = load_study_volumes(study)
    world = _world_points(study.study_id, pts, vols)
    rows = skeleton([study.study_id])
    rng = np.random.default_rng([cfg.seed, int(study.study_id)])
    jitter = cfg.patches.jitter_sigma_mm if split == "train" else 0.0
    records: list[dict] = []
    fam_patches: dict[str, list[np.ndarray]] = {f: [] for f in CNN_FAMILIES}
    fam_ids: dict[str, list[str]] = {f: [] for f in CNN_FAMILIES}
    problems = list(vols.problems)
    for r in rows.itertuples(index=False):
        rec: dict = {"row_id": r.row_id}
        point, flag = world.get((r.condition, r.level), (np.full(3, np.nan), "no point"))
        if jitter > 0 and np.all(np.isfinite(point)):
            point = jitter_points(point, jitter, rng)
        rec.update(pt_x=point[0], pt_y=point[1], pt_z=point[2], has_point=float(np.all(np.isfinite(point))))
        for stype in SERIES_TYPES:
            rec[f"has_{SERIES_SHORT[stype]}"] = float(bool(vols.by_type.get(stype)))
        for name, spec in cfg.patches.specs_for(r.condition).items():
            stacks = vols.by_type.get(spec.series, [])
            patch = None
            if rec["has_point"] and stacks:
                vol, pr, inside = nearest_stack(stacks, point)
                dist = abs(pr.distance_mm)
                if inside and dist <= cfg.max_plane_distance_mm:
                    patch = extract_patch(vol, point, spec, percentiles=cfg.patches.percentiles)
                    rec[f"geo_plane_dist_{name}"] = dist
            rec[f"geo_inside_{name}"] = patch.inside_fraction if patch is not None else 0.0
            if cfg.radiomics.enabled:
                ext = extractor(spec.series)
                if patch is None:
                    feats = ext.nan_features()
                else:
                    c = spec.neighbors
                    feats = ext.extract(patch.image[c], patch.mask, patch.spacing[1:])
                rec.update(feats)
            fam = CONDITION_GROUP[r.condition]
            if CNN_FAMILIES[fam] == name:
                n, h, w = spec.shape
                arr = patch.image if patch is not None else np.zeros((n, h, w), np.float32)
                fam_patches[fam].append(arr.astype(np.float32))
                fam_ids[fam].append(r.row_id)
        if flag:
            problems.append(f"{r.condition} {r.level}: {flag}")
        records.append(rec)
    feats = pd.DataFrame.from_records(records)
    table = rows.merge(feats, on="row_id", how="left")
    patches = {f: (np.stack(v) if v else np.zeros((0,), np.float32)) for f, v in fam_patches.items()}
    return StudyFeatures(rows=table, patches=patches, patch_row_ids=fam_ids, problems=problems)


# ------------------------------------------------------------------------------------------------ cache
def _cache_paths(cache_dir: Path, study_id: int) -> tuple[Path, Path]:
    return cache_dir / f"{study_id}.parquet", cache_dir / f"{study_id}.npz"


def is_cached(cache_dir: Path, study_id: int) -> bool:
    """Whether a complete cache entry exists (cheap: no file is read)."""
    pq, npz = _cache_paths(cache_dir, study_id)
    return pq.is_file() and npz.is_file()


def save_cached(cache_dir: Path, sf: StudyFeatures, study_id: int) -> None:
    """Store one study's result; the npz is written last so its presence marks a complete entry."""
    pq, npz = _cache_paths(cache_dir, study_id)
    write_parquet_atomic(sf.rows, pq)
    arrays = {f"patch_{k}": v for k, v in sf.patches.items()}
    arrays.update({f"ids_{k}": np.array(v, dtype=str) for k, v in sf.patch_row_ids.items()})
    arrays["problems"] = np.array(sf.problems, dtype=str)
    with atomic_path(npz) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def load_cached(cache_dir: Path, study_id: int, *, patches: bool = True) -> StudyFeatures | None:
    """A cached study result, or None if absent/unreadable. ``patches=False`` skips the CNN patch arrays
    (they are re-read one family at a time by the CNN stage to bound memory)."""
    pq, npz = _cache_paths(cache_dir, study_id)
    if not (pq.is_file() and npz.is_file()):
        return None
    try:
        rows = pd.read_parquet(pq)
        with np.load(npz) as z:
            arrs = {k[6:]: z[k] for k in z.files if k.startswith("patch_")} if patches else {}
            ids = {k[4:]: [str(s) for s in z[k]] for k in z.files if k.startswith("ids_")}
            problems = [str(s) for s in z["problems"]]
    except (OSError, ValueError, KeyError):
        return None
    return StudyFeatures(rows=rows, patches=arrs, patch_row_ids=ids, problems=problems)


def load_cached_patches(cache_dir: Path, study_id: int, family: str) -> np.ndarray | None:
    """One family's CNN patches (n, C, H, W) from a study's cache entry, or None when it has none."""
    _, npz = _cache_paths(cache_dir, study_id)
    with np.load(npz) as z:
        key = f"patch_{family}"
        if key not in z.files:
            return None
        arr = z[key]
    return arr if arr.ndim == 4 and len(arr) else None


class CachedJob:
    """Runs a StudyJob and stores its result in the cache; returns the study id (not the arrays, which
    would otherwise travel back to the parent)."""

    def __init__(self, job: StudyJob, cache_dir: Path):
        self.job = job
        self.cache_dir = cache_dir

    def __call__(self, item: tuple[Study, pd.DataFrame | None]) -> int:
        study = item[0]
        save_cached(self.cache_dir, self.job(item), study.study_id)
        return int(study.study_id)


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


def _points_for(ds, split: str, points: str | Path) -> tuple[pd.DataFrame, str]:
    if str(points) == "labels":
        coords = ds.coordinates
        if coords is None or len(coords) == 0:
            raise RadspineError(f"{ds.root}: --points labels needs train_label_coordinates.csv rows")
        return coords[list(POINT_COLUMNS)], "labels"
    return read_points_csv(Path(points)), str(points)


def _cnn_stage(
    base: pd.DataFrame,
    results: dict[int, StudyFeatures],
    cache_dir: Path,
    cfg: FeaturesConfig,
    split: str,
    labels: pd.DataFrame | None,
    out: Path,
    embedders_dir: Path,
) -> pd.DataFrame:
    """Add ``cnn_*`` columns: out-of-fold for training rows, a saved all-data network for test rows."""
    from radspine.features.embeddings import CnnEmbedder, embedding_columns, oof_embeddings

    grade = None
    if labels is not None:
        lab = labels.dropna(subset=["grade"])
        grade = {
            f"{int(s)}_{c}_{lv}": float(g)
            for s, c, lv, g in zip(lab["study_id"], lab["condition"], lab["level"], lab["grade"])
        }
    frames = []
    for fam in CNN_FAMILIES:
        # One family at a time, read back from the cache: all studies' patches of every family at once
        # would dominate peak memory on a large dataset.
        xs, ids = [], []
        for sid, sf in results.items():
            arr = load_cached_patches(cache_dir, sid, fam)
            if arr is not None:
                xs.append(arr)
                ids.extend(sf.patch_row_ids[fam])
        if not xs:
            continue
        x = np.concatenate(xs)
        del xs
        fam_dir = out / "embedders" / fam
        if split == "train":
            if grade is None:
                raise RadspineError("CNN embeddings for the train split need train.csv labels")
            y = np.array([grade.get(r, np.nan) for r in ids], dtype=np.float64)
            groups = np.array([int(r.split("_", 1)[0]) for r in ids])
            if np.unique(groups).size < cfg.cnn_folds:
                raise RadspineError(
                    f"CNN out-of-fold embeddings need at least {cfg.cnn_folds} studies, got {np.unique(groups).size}"
                )
            emb, full = oof_embeddings(x, y, groups, cfg.embeddings, n_folds=cfg.cnn_folds, seed=cfg.seed)
            full.save(fam_dir)
        else:
            src = embedders_dir / fam
            if not src.is_dir():
                raise RadspineError(
                    f"no trained CNN for {fam} at {src}: extract the train split first or pass --embedders"
                )
            emb = CnnEmbedder.load(src, device=cfg.embeddings.device).transform(x)
        frames.append(pd.DataFrame(emb, columns=embedding_columns(emb.shape[1])).assign(row_id=ids))
    if not frames:
        return base
    cnn = pd.concat(frames, ignore_index=True)
    return base.merge(cnn, on="row_id", how="left")


def extract_features(
    data_dir: str | Path,
    split: str,
    out: str | Path,
    *,
    points: str | Path = "labels",
    cfg: FeaturesConfig | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    overwrite: bool = False,
    embedders_dir: str | Path | None = None,
    quiet: bool = True,
) -> dict:
    """Build ``OUT/features.parquet`` (25 rows per study) and ``OUT/meta.json`` for one split.

    Args:
        data_dir: dataset root in the competition layout.
        split: "train" or "test".
        out: work directory (features, meta, per-study cache, trained CNN embedders).
        points: "labels" (train_label_coordinates.csv) or a points CSV in that format (e.g. localizer output).
        cfg: feature configuration (defaults when None).
        workers / scheduler: see :func:`radspine.parallel.map_items`.
        overwrite: recompute everything instead of refusing an existing output / resuming the cache.
        embedders_dir: trained CNN embedders for the test split (default ``OUT/embedders``).

    Returns:
        The meta dict written to ``meta.json``: config_hash, split, points (+ points_hash), versions,
        n_studies / n_rows / n_features, n_extracted / n_cached (this run vs reused from the cache),
        n_failed_studies + failures (study → reason; those studies get 25 flagged NaN rows), problems
        (every study with a logged issue, e.g. an unreadable series), seconds (+ per stage).

    Raises:
        RadspineError: bad split / dataset / points file, an existing output without ``overwrite``,
            or a test split without trained CNN embedders (checked before any study is processed).
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
    if not any(st.study_id in by_study for st in studies):
        raise RadspineError(f"{points_source}: no points for any study of the {split} split")
    emb_dir = Path(embedders_dir) if embedders_dir else out / "embedders"
    if cfg.cnn_enabled and split == "test":
        # Checked before the (long) per-study map, not after it.
        missing = [f for f in CNN_FAMILIES if not (emb_dir / f / "embedder.json").is_file()]
        if missing:
            raise RadspineError(
                f"no trained CNN embedders {missing} in {emb_dir}: extract the train split first or pass --embedders"
            )
    chash = config_hash(cfg)
    # The points are part of a cached entry's identity too: other points (labels vs a localizer CSV)
    # must never reuse patches cut at the old ones.
    pkey = points_hash(pts)
    cache_dir = out / "cache" / chash / f"{split}-{pkey}"
    if overwrite and cache_dir.exists():
        import shutil

        shutil.rmtree(cache_dir)
    cache_dir.mkdir(parents=True, exist_ok=True)
    todo = [(st, by_study.get(st.study_id)) for st in studies if not is_cached(cache_dir, st.study_id)]
    log.info("%s: %d studies, %d cached, %d to extract", split, len(studies), len(studies) - len(todo), len(todo))
    t_map = time.perf_counter()
    job = CachedJob(StudyJob(cfg, split), cache_dir)
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
    base = pd.concat(frames, ignore_index=True, sort=False)
    t_map = time.perf_counter() - t_map
    t_cnn = time.perf_counter()
    labels = ds.labels_long() if split == "train" and ds.labels is not None else None
    if cfg.cnn_enabled:
        base = _cnn_stage(base, results, cache_dir, cfg, split, labels, out, emb_dir)
    t_cnn = time.perf_counter() - t_cnn
    table = add_geometry(base)
    table = add_context(table, context_columns(table, cfg.context_cnn_dims))
    write_parquet_atomic(table, target)
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
        "n_features": int(sum(c.split("_", 1)[0] in {"rad", "cnn", "ctx", "geo", "has"} for c in table.columns)),
        "n_extracted": len(todo),
        "n_cached": len(studies) - len(todo),
        "n_failed_studies": len([s for s in failures if int(s) not in results]),
        "failures": {s: r for s, r in failures.items() if int(s) not in results},
        "problems": failures,
        "seconds": round(time.perf_counter() - t0, 2),
        "seconds_studies": round(t_map, 2),
        "seconds_cnn": round(t_cnn, 2),
    }
    write_json_atomic(out / "meta.json", meta)
    return meta


def package_features(workdir: str | Path, model_dir: str | Path) -> Path:
    """Copy what prediction needs from a training workdir into ``MODELDIR/features``.

    That is the feature config (its hash must match the models'), ``meta.json`` and the CNN embedders
    trained on all training studies, so a model bundle is self-contained.
    """
    import shutil

    src, dst = Path(workdir), Path(model_dir) / "features"
    if not (src / "features_config.json").is_file():
        raise RadspineError(f"{src}: no features_config.json (run `radspine extract-features` first)")
    tmp = dst.with_name(".features.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir(parents=True)
    for name in ("features_config.json", "meta.json"):
        shutil.copy2(src / name, tmp / name)
    if (src / "embedders").is_dir():
        shutil.copytree(src / "embedders", tmp / "embedders")
    if dst.exists():
        shutil.rmtree(dst)
    tmp.rename(dst)
    return dst
