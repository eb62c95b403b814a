"""Per-study feature work: points → patches → radiomics, presence flags and the CNN patches of each family.

Runs inside a worker process (or on a Dask worker) through :class:`StudyJob`; one study's failure never
stops a batch (the orchestrator gives it 25 flagged NaN rows).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass

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


def extract_study(study: Study, pts: pd.DataFrame | None, cfg: FeaturesConfig, split: str, extractor,
                  vols: StudyVolumes | None = None) -> StudyFeatures:  # fmt: skip
    """Base features of one study's 25 rows: point geometry, radiomics per patch, presence flags.

    ``vols`` lets a caller that already read the study (e.g. predict, after localizing) pass it in, so
    the DICOM files are decoded once.
    """
    from radspine.features.table import skeleton
    from radspine.geometry import nearest_stack
    from radspine.patches import extract_patch, jitter_points

    vols = vols if vols is not None else load_study_volumes(study)
    world = world_points(pts, vols)
    rows = skeleton([study.study_id])
    rng = np.random.default_rng([cfg.seed, int(study.study_id)])
    jitter = cfg.patches.jitter_sigma_mm if split == "train" else 0.0
    records: list[dict] = []
    fam_patches: dict[str, list[np.ndarray]] = {f: [] for f in CNN_FAMILIES}
    fam_ids: dict[str, list[str]] = {f: [] for f in CNN_FAMILIES}
    problems = vols.problem_list()
    for r in rows.itertuples(index=False):
        rec: dict = {"row_id": r.row_id}
        point, flag = world.get((r.condition, r.level), (np.full(3, np.nan), "no point"))
        if jitter > 0 and np.all(np.isfinite(point)):
            point = jitter_points(point, jitter, rng)
        rec.update(pt_x=point[0], pt_y=point[1], pt_z=point[2], has_point=float(np.all(np.isfinite(point))))
        for stype in SERIES_TYPES:
            rec[f"has_{SERIES_SHORT[stype]}"] = float(bool(vols.stacks(stype)))
        for name, spec in cfg.patches.specs_for(r.condition).items():
            stacks = vols.stacks(spec.series)
            patch = None
            if rec["has_point"] and stacks:
                vol, pr, inside = nearest_stack(stacks, point)
                dist = abs(pr.distance_mm)
                # A patch only from a slice that holds the point in-plane and lies within the guard
                # distance of it: a far slice shows another level.
                if inside and dist <= cfg.max_plane_distance_mm:
                    patch = extract_patch(vol, point, spec, percentiles=cfg.patches.percentiles)
                    rec[f"geo_plane_dist_{name}"] = dist
                else:
                    rec[f"geo_plane_dist_{name}"] = np.nan
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
                rec["has_cnn_patch"] = float(patch is not None)
        if flag:
            problems.append(f"{r.condition} {r.level}: {flag}")
        records.append(rec)
    feats = pd.DataFrame.from_records(records)
    table = rows.merge(feats, on="row_id", how="left")
    patches = {f: (np.stack(v) if v else np.zeros((0,), np.float32)) for f, v in fam_patches.items()}
    return StudyFeatures(rows=table, patches=patches, patch_row_ids=fam_ids, problems=problems)
