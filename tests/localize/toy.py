"""A tiny in-memory spine (Volumes, no DICOM) for fast localizer unit tests.

Anatomy is schematic but world-consistent: discs at per-level heights, a bright canal at the midline,
dark foramina at x = ±20 mm and bright recesses at x = ±10 mm (patient left = +x, LPS).
"""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pandas as pd

from radspine.constants import AX_T2, LEVELS, SAG_T1, SAG_T2
from radspine.geometry import project_point
from radspine.localize.infer import StudyVolumes
from radspine.types import Volume


def _field(p: np.ndarray, z_levels: np.ndarray, t1: bool) -> np.ndarray:
    x, y, z = p[..., 0], p[..., 1], p[..., 2]
    img = np.full(x.shape, 0.15)
    body = (y > -40) & (y < 5) & (np.abs(x) < 25) & (z < z_levels[0] + 40) & (z > z_levels[-1] - 60)
    img[body] = 0.55
    for zl in z_levels:
        img[body & (np.abs(z - zl) < 3.5)] = 0.3 if t1 else 0.9
    img[(z < z_levels[-1] - 4) & body] = 0.7  # sacrum: no discs below L5/S1
    canal = (np.abs(x) < 8) & (y > 8) & (y < 22) & (z > z_levels[-1] - 40)
    img[canal] = 0.2 if t1 else 1.0
    for zl in z_levels:
        for sx in (-1, 1):
            tissue = (np.abs(x - sx * 20) < 8) & (np.abs(y - 14) < 10) & (np.abs(z - zl) < 14)
            img[tissue] = 0.6
            hole = (x - sx * 20) ** 2 / 25 + (y - 14) ** 2 / 25 + (z - zl) ** 2 / 49 < 1
            img[hole] = 0.05
            rec = (x - sx * 10) ** 2 + (y - 8) ** 2 < 9
            img[rec & (np.abs(z - zl) < 6)] = 0.95
    return img


def _volume(positions, row_cos, col_cos, spacing, shape, fn, sid, series, desc, rng, scale, stack=0) -> Volume:
    rows, cols = shape
    yy, xx = np.mgrid[0:rows, 0:cols]
    pts = (positions[:, None, None, :] + (xx * spacing)[None, ..., None] * row_cos
           + (yy * spacing)[None, ..., None] * col_cos)  # fmt: skip
    pix = fn(pts) + rng.normal(0, 0.03, pts.shape[:3])
    return Volume(
        pixels=(pix * scale).astype(np.float32), positions=positions, row_cosine=np.asarray(row_cos, float),
        col_cosine=np.asarray(col_cos, float), pixel_spacing=(spacing, spacing),
        instance_numbers=np.arange(1, len(positions) + 1), study_id=sid, series_id=series, description=desc,
        stack_index=stack,
    )


def make_toy_study(sid: int, seed: int, *, n_sag: int = 13, flip: bool = False, scale: float = 1000.0,
                   axial: bool = True, size: int = 96, spacing: float = 2.6):  # fmt: skip
    """(StudyVolumes, coordinates DataFrame with snake keys, truth world points dict)."""
    rng = np.random.default_rng(seed)
    z0 = rng.uniform(-15, 15)
    z_levels = z0 + 70 - 33 * np.arange(5) + rng.normal(0, 2, 5)
    x_off = rng.uniform(-4, 4)
    fov = size * spacing

    def fn(t1):
        return lambda p: _field(p - np.array([x_off, 0, 0]), z_levels, t1)

    sag_x = np.linspace(-36, 36, n_sag)
    # Sagittal: columns +y, rows −z; flipped studies run columns −y and slices in the other direction.
    row_c, col_c = (np.array([0, 1.0, 0]), np.array([0, 0, -1.0]))
    if flip:
        row_c = -row_c
    y_start = -fov / 2 + 10 if not flip else fov / 2 + 10
    sag_pos = np.array([[x, y_start, fov / 2] for x in (sag_x[::-1] if not flip else sag_x)])
    vols = StudyVolumes()
    vols.sag_t2 = _volume(sag_pos, row_c, col_c, spacing, (size, size), fn(False), sid, 2, SAG_T2, rng, scale)
    vols.sag_t1 = _volume(sag_pos, row_c, col_c, spacing, (size, size), fn(True), sid, 1, SAG_T1, rng, scale)
    truth = {}
    recs = []

    def label(vol, cond, lv, world):
        pr = project_point(vol, world)
        recs.append(dict(study_id=sid, series_id=vol.series_id, instance_number=pr.instance_number,
                         condition=cond, level=lv, x=pr.x, y=pr.y))  # fmt: skip
        truth[(cond, lv)] = world

    ax_sp = 0.8 * spacing
    for li, lv in enumerate(LEVELS):
        zl = z_levels[li]
        label(vols.sag_t2, "spinal_canal_stenosis", lv, np.array([x_off, 15.0, zl]))
        label(vols.sag_t1, "left_neural_foraminal_narrowing", lv, np.array([x_off + 20, 14.0, zl]))
        label(vols.sag_t1, "right_neural_foraminal_narrowing", lv, np.array([x_off - 20, 14.0, zl]))
        if axial:
            zs = zl + np.array([-8.0, -4.0, 0.0, 4.0, 8.0]) + rng.uniform(-1.5, 1.5)
            pos = np.array([[-size * ax_sp / 2, -size * ax_sp / 2 + 10, z] for z in zs])
            ax = _volume(pos, [1.0, 0, 0], [0, 1.0, 0], ax_sp, (size, size), fn(False), sid, 3, AX_T2, rng, scale, li)
            ax = replace(ax, instance_numbers=np.arange(1, 6) + 5 * li)
            vols.axial.append(ax)
            label(ax, "left_subarticular_stenosis", lv, np.array([x_off + 10, 8.0, zs[2]]))
            label(ax, "right_subarticular_stenosis", lv, np.array([x_off - 10, 8.0, zs[2]]))
    if not axial:
        vols.problems[AX_T2] = "no Axial T2 series"
    return vols, pd.DataFrame(recs), truth
