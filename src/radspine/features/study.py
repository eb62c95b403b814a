"""Per-study feature work: points → patches → radiomics, presence flags and the CNN patches of each family.

Runs inside a worker process (or on a Dask worker) through :class:`StudyJob`; one study's failure never
stops a batch (the orchestrator gives it 25 flagged NaN rows).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from radspine.constants import CONDITION_GROUP, SERIES_SHORT, SERIES_TYPES
from radspine.features.config import CNN_FAMILIES, FeaturesConfig, radiomics_params_path
from radspine.io.volumes import StudyVolumes, load_study_volumes
from radspine.points import is_unusable
from radspine.types import Study

log = logging.getLogger(__name__)


@dataclass
class StudyFeatures:
    """What one study yields before the CNN stage: 25 rows of base features and the CNN patches."""

    rows: pd.DataFrame
    patches: dict[str, np.ndarray]  # family -> (n_rows_of_family, C, H, W) float32
    patch_row_ids: dict[str, list[str]]
    problems: list[str]
    # The points this study was graded at when the job located them itself (predict): detail schema.
    points: pd.DataFrame | None = None
    # Seconds per stage of this study (decode, localize, patches, radiomics, morphometry): the profile that
    # tells which optimisation comes next.
    timings: dict[str, float] = field(default_factory=dict)


# Locates a study's 25 points from its volumes (e.g. a bound ``Localizer.predict_volumes``): returns rows
# in the points detail schema (radspine.points.DETAIL_COLUMNS, CSV condition/level names).
Locate = Callable[[int, StudyVolumes], pd.DataFrame]


def keyed_points(points: pd.DataFrame) -> pd.DataFrame:
    """Points with snake condition/level keys (as the feature stage uses) and a ``flag`` column."""
    from radspine.constants import CONDITION_KEYS, LEVEL_KEYS

    out = points.assign(condition=points["condition"].map(lambda c: CONDITION_KEYS.get(c, c)),
                        level=points["level"].map(lambda v: LEVEL_KEYS.get(v, v)))  # fmt: skip
    if "flag" not in out:
        out["flag"] = ""
    out["flag"] = out["flag"].fillna("").astype(str)
    return out


class StudyJob:
    """Picklable per-study worker (runs in a process or on a Dask worker).

    Items are ``(study, points)`` pairs so that each task carries only its own study's points, not the
    whole points table (which would be pickled once per task).
    """

    def __init__(self, cfg: FeaturesConfig, split: str, locate: Locate | None = None):
        self.cfg = cfg
        self.split = split
        # With ``locate``, a study without given points is localised from the same decoded volumes that
        # its features are cut from: each DICOM file is read once per study.
        self.locate = locate
        self._extractors: dict[tuple[str, str], object] | None = None

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_extractors"] = None
        return state

    def _extractor(self, series: str, roi: str | None = None):
        """The radiomics extractor of a series type: the ellipse ROI, or a structure mask ``roi``."""
        from radspine.features.radiomics import RadiomicsExtractor

        if self._extractors is None:
            self._extractors = {}
        kind = "masks" if roi else ("axial" if series == "Axial T2" else "sagittal")
        key = (kind, series, roi or "")
        if key not in self._extractors:
            params = radiomics_params_path(getattr(self.cfg.radiomics, kind))
            self._extractors[key] = RadiomicsExtractor(params, ndim=2, series=SERIES_SHORT[series], roi=roi)
        return self._extractors[key]

    def __call__(self, item: tuple[Study, pd.DataFrame | None]) -> StudyFeatures:
        study, pts = item
        if self.locate is None or pts is not None:
            return extract_study(study, pts, self.cfg, self.split, self._extractor)
        t0 = time.perf_counter()
        vols = load_study_volumes(study)
        t1 = time.perf_counter()
        located = self.locate(int(study.study_id), vols)
        t2 = time.perf_counter()
        sf = extract_study(study, keyed_points(located), self.cfg, self.split, self._extractor, vols=vols)
        sf.points = located
        sf.timings.update(decode=t1 - t0, localize=t2 - t1)
        return sf


def world_points(pts: pd.DataFrame | None, vols: StudyVolumes) -> dict[tuple[str, str], tuple[np.ndarray, str]]:
    """World point and problem per (condition, level) from a points table (labels or predicted).

    A point whose instance is not in a readable stack, or whose ``flag`` marks it unusable (see
    :func:`radspine.points.is_unusable`), gets a NaN point and the reason: never a patch from elsewhere.
    """
    from radspine.geometry import pixel_to_world

    out: dict[tuple[str, str], tuple[np.ndarray, str]] = {}
    if pts is None:
        return out
    flags = pts["flag"] if "flag" in pts else pd.Series([""] * len(pts), index=pts.index)
    for r, flag in zip(pts.itertuples(index=False), flags, strict=True):
        if is_unusable(flag):
            out[(r.condition, r.level)] = (np.full(3, np.nan), f"point not graded: {flag}")
            continue
        vol = vols.find(int(r.series_id), int(r.instance_number))
        if vol is None:
            out[(r.condition, r.level)] = (np.full(3, np.nan), f"series {r.series_id} instance {r.instance_number} not readable")
            continue
        k = vol.slice_index(int(r.instance_number))
        world = pixel_to_world(vol, float(r.x), float(r.y), k)
        ny, nx = vol.pixels.shape[1:]
        if not (-0.5 <= float(r.x) <= nx - 0.5 and -0.5 <= float(r.y) <= ny - 0.5):
            out[(r.condition, r.level)] = (np.full(3, np.nan), f"point ({r.x:.1f}, {r.y:.1f}) outside the {nx}x{ny} image")
            continue
        out[(r.condition, r.level)] = (world, "")
    return out


# Which structure each patch family's mask outlines (its radiomics columns: rad_<series>_<roi>_...).
MASK_ROI_OF = {"spinal_axial": "sac", "spinal_sagittal": "sac", "foraminal": "foramen", "subarticular": "recess"}


def _morphometry(condition: str, row_patches: dict, specs: dict, cfg: FeaturesConfig, extractor) -> dict:
    """``mor_*`` measurements of one row and, optionally, radiomics on the structure masks behind them."""
    from radspine.features.morphometry import measure_detailed

    res = measure_detailed(condition, row_patches, cfg.morphometry)
    out = dict(res.values)
    if not (cfg.radiomics.enabled and cfg.radiomics.mask_rois):
        return out
    for name, roi in MASK_ROI_OF.items():
        spec = specs.get(name)
        if spec is None or name not in cfg.radiomics.mask_rois:
            continue
        ext = extractor(spec.series, roi)
        m, p = res.masks.get(name), row_patches.get(name)
        if m is not None and m.ok and p is not None:
            out.update(ext.extract(p.image[spec.neighbors], m.mask.astype(np.uint8), p.spacing[1:]))
        else:
            out.update(ext.nan_features())
    return out


def extract_study(study: Study, pts: pd.DataFrame | None, cfg: FeaturesConfig, split: str, extractor,
                  vols: StudyVolumes | None = None) -> StudyFeatures:  # fmt: skip
    """Base features of one study's 25 rows: point geometry, radiomics per patch, presence flags.

    ``vols`` lets a caller that already read the study (e.g. predict, after localizing) pass it in, so
    the DICOM files are decoded once.
    """
    from radspine.features.table import skeleton
    from radspine.geometry import nearest_stack
    from radspine.patches import extract_patch, jitter_points

    clock = {"decode": 0.0, "patches": 0.0, "radiomics": 0.0, "morphometry": 0.0}
    t = time.perf_counter()
    vols = vols if vols is not None else load_study_volumes(study)
    clock["decode"] += time.perf_counter() - t
    world = world_points(pts, vols)
    rows = skeleton([study.study_id])
    rng = np.random.default_rng([cfg.seed, int(study.study_id)])
    jitter = cfg.patches.jitter_sigma_mm if split == "train" else 0.0
    through_plane = cfg.patches.jitter_through_plane
    records: list[dict] = []
    fam_patches: dict[str, list[np.ndarray]] = {f: [] for f in CNN_FAMILIES}
    fam_ids: dict[str, list[str]] = {f: [] for f in CNN_FAMILIES}
    problems = vols.problem_list()
    for r in rows.itertuples(index=False):
        rec: dict = {"row_id": r.row_id}
        point, flag = world.get((r.condition, r.level), (np.full(3, np.nan), "no point"))
        if jitter > 0 and through_plane and np.all(np.isfinite(point)):
            point = jitter_points(point, jitter, rng)
        rec.update(pt_x=point[0], pt_y=point[1], pt_z=point[2], has_point=float(np.all(np.isfinite(point))))
        for stype in SERIES_TYPES:
            rec[f"has_{SERIES_SHORT[stype]}"] = float(bool(vols.stacks(stype)))
        row_patches: dict = {}
        specs = cfg.patches.specs_for(r.condition)
        for name, spec in specs.items():
            stacks = vols.stacks(spec.series)
            patch = None
            rec[f"geo_plane_dist_{name}"] = np.nan  # every column on every row: the schema never depends on data
            if rec["has_point"] and stacks:
                vol, pr, inside = nearest_stack(stacks, point)
                dist = abs(pr.distance_mm)
                # A patch only from a slice that holds the point in-plane and lies within the guard
                # distance of it: a far slice shows another level.
                if inside and dist <= cfg.max_plane_distance_mm:
                    t = time.perf_counter()
                    centre = point
                    if jitter > 0 and not through_plane:  # each patch moves within its own slice plane
                        centre = jitter_points(point, jitter, rng, plane=(vol.row_cosine, vol.col_cosine))
                    patch = extract_patch(vol, centre, spec, percentiles=cfg.patches.percentiles)
                    clock["patches"] += time.perf_counter() - t
                    rec[f"geo_plane_dist_{name}"] = dist
            row_patches[name] = patch
            rec[f"geo_inside_{name}"] = patch.inside_fraction if patch is not None else 0.0
            if cfg.radiomics.enabled:
                t = time.perf_counter()
                ext = extractor(spec.series)
                if patch is None:
                    feats = ext.nan_features()
                else:
                    c = spec.neighbors
                    feats = ext.extract(patch.image[c], patch.mask, patch.spacing[1:])
                rec.update(feats)
                clock["radiomics"] += time.perf_counter() - t
            fam = CONDITION_GROUP[r.condition]
            if CNN_FAMILIES[fam] == name:
                n, h, w = spec.shape
                arr = patch.image if patch is not None else np.zeros((n, h, w), np.float32)
                fam_patches[fam].append(arr.astype(np.float32))
                fam_ids[fam].append(r.row_id)
                rec["has_cnn_patch"] = float(patch is not None)
        if cfg.morphometry.enabled:
            t = time.perf_counter()
            rec.update(_morphometry(r.condition, row_patches, specs, cfg, extractor))
            clock["morphometry"] += time.perf_counter() - t
        if flag:
            problems.append(f"{r.condition} {r.level}: {flag}")
        records.append(rec)
    feats = pd.DataFrame.from_records(records)
    table = rows.merge(feats, on="row_id", how="left")
    patches = {f: (np.stack(v) if v else np.zeros((0,), np.float32)) for f, v in fam_patches.items()}
    return StudyFeatures(rows=table, patches=patches, patch_row_ids=fam_ids, problems=problems,
                         timings={k: round(v, 4) for k, v in clock.items()})
