"""Series planning (slice geometry like a scanner's planner) and pixel rendering of a phantom patient."""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from radspine.constants import AX_T2, LEVELS, SAG_T1, SAG_T2
from radspine.synth.anatomy import LEVEL_DISC, Patient
from radspine.types import Volume

VENDORS: tuple[str, ...] = ("GE MEDICAL SYSTEMS", "SIEMENS", "Philips Medical Systems")


@dataclass
class SeriesPlan:
    """Geometry and acquisition of one series. Slices are listed in file (InstanceNumber) order."""

    series_id: int
    series_number: int
    description: str  # CSV description (SAG_T1 / SAG_T2 / AX_T2)
    dicom_description: str  # vendor-like SeriesDescription tag
    contrast: str  # "T1" | "T2" | "STIR"
    rows: int
    cols: int
    pixel_spacing: tuple[float, float]  # (row mm, column mm)
    positions: np.ndarray  # (S, 3) ImagePositionPatient
    row_cos: np.ndarray  # (S, 3) world direction of increasing column
    col_cos: np.ndarray  # (S, 3) world direction of increasing row
    stack: np.ndarray  # (S,) stack index (tilted axial stacks)
    instance_numbers: np.ndarray  # (S,)
    thickness: float
    spacing_between: float
    levels: tuple[str, ...] = ()  # axial: levels the series was planned for
    missing_tag: str | None = None  # quirk: an optional tag left out of every file
    partial_volume: bool = False  # average the anatomy over the slab (3 sub-planes) instead of its centre
    ghosting: bool = False  # periodic motion ghosts along the phase-encode axis
    wrap: bool = False  # aliasing of anatomy beyond the FOV along the phase-encode axis
    phase_axis: int = 1  # 0: phase encoding along rows (image y), 1: along columns (image x)
    table: dict | None = None  # random tissue-intensity table (domain randomisation); None = real contrast
    transfer_syntax: str = ""  # "" uncompressed | "jpegls" | "j2k" | "rle"
    bits_stored: int | None = None  # None: 12 or 16 from the pixel range; 16 = full 16-bit data (preset rsna)
    extra: dict = field(default_factory=dict)

    def volumes(self) -> list[Volume]:
        """Geometry-only :class:`Volume` per stack (pixels are 1x1 placeholders), slices sorted along the normal."""
        out = []
        for st in np.unique(self.stack):
            sel = np.flatnonzero(self.stack == st)
            n = np.cross(self.row_cos[sel[0]], self.col_cos[sel[0]])
            sel = sel[np.argsort(self.positions[sel] @ n)]
            out.append(
                Volume(
                    pixels=np.zeros((len(sel), 1, 1), np.float32),
                    positions=self.positions[sel],
                    row_cosine=self.row_cos[sel[0]],
                    col_cosine=self.col_cos[sel[0]],
                    pixel_spacing=self.pixel_spacing,
                    instance_numbers=self.instance_numbers[sel],
                    series_id=self.series_id,
                    description=self.description,
                    stack_index=int(st),
                    slice_thickness=self.thickness,
                )
            )
        return out


def _stack(center: np.ndarray, row: np.ndarray, col: np.ndarray, offsets: np.ndarray, rows: int, cols: int,
           spacing: tuple[float, float]) -> np.ndarray:
    """ImagePositionPatient (S, 3) of slices whose centres lie at ``center + offsets * normal``."""
    normal = np.cross(row, col)
    corner = -((cols - 1) / 2) * spacing[1] * row - ((rows - 1) / 2) * spacing[0] * col
    return center[None] + offsets[:, None] * normal[None] + corner[None]


def lumbar_points(pat: Patient) -> np.ndarray:
    """World points (N, 3) of every lumbar label structure: disc centres, canal and foramen points, L1/L2-L5/S1."""
    pts = []
    for lv in LEVELS:
        di = LEVEL_DISC[lv]
        pts += [pat.to_world(pat.s_disc[di], 0.0, 0.0), pat.canal_point(di), pat.foramen_center(di, "left"),
                pat.foramen_center(di, "right")]
    return np.array(pts)


def plan_sagittal(rng: np.random.Generator, pat: Patient, size: int, description: str, contrast: str,
                  series_id: int, series_number: int, *, thin: tuple[float, float] | None = None,
                  flip: int = 0, matrix: tuple[int, int] | None = None, fov: float | None = None,
                  n_slices: int | None = None, shift: tuple[float, float] = (0.0, 0.0), crop: int = 0) -> SeriesPlan:
    """15-17 parallel sagittal slices 3.5-4.5 mm apart centred near the midline, slightly oblique.

    ``thin`` (two uniform draws in [0, 1), from a variation stream) makes a thin-slice protocol instead:
    30-80 contiguous slices 1-2 mm apart covering 70-110 mm. ``flip`` 1: columns run anterior, 2: rows run
    superior (ImageOrientationPatient says so; world geometry is unchanged).

    ``matrix`` (rows, cols) replaces the ``size`` x ``size`` grid; ``fov`` (mm, along the longer image side)
    sets square pixels of ``fov / max(rows, cols)``; ``n_slices`` replaces the 15-17 slice count (not for thin
    protocols). ``shift`` (AP, SI mm) moves the FOV centre off the spine (+ = posterior, superior). ``crop``
    +1 / -1 places the FOV wholly above / below every lumbar label point (:func:`lumbar_points`) with a
    15 mm margin. All of them leave the stream of ``rng`` as it is.
    """
    n = int(rng.integers(15, 18))
    gap = rng.uniform(3.5, 4.5)
    if n_slices is not None:
        n = int(n_slices)
    if thin is not None:
        gap = 1.0 + thin[0]
        n = int(np.clip(round((70.0 + 40.0 * thin[1]) / gap), 30, 80))
    px = rng.uniform(190.0, 230.0) / size  # FOV 190-230 mm: 0.74-0.9 mm pixels at 256 px
    rows_n, cols_n = (size, size) if matrix is None else (int(matrix[0]), int(matrix[1]))
    if fov is not None:
        px = float(fov) / max(rows_n, cols_n)
    yaw = np.deg2rad(rng.normal(0.0, 2.0))
    row = np.array([np.sin(yaw), np.cos(yaw), 0.0])  # columns run posterior
    col = np.array([0.0, 0.0, -1.0])  # rows run inferior
    if flip == 1:
        row = -row
    elif flip == 2:
        col = -col
    extra = {"flip": flip}
    s_mid = (pat.s_disc[LEVEL_DISC["l1_l2"]] + pat.s_disc[LEVEL_DISC["l5_s1"]]) / 2
    center = pat.to_world(s_mid + rng.normal(0, 8), pat.a_ap + rng.normal(10, 8), 0.0)
    center[0] = pat.x0 + rng.normal(0.0, 2.0)
    if shift[0] or shift[1]:
        center = center + np.array([0.0, float(shift[0]), float(shift[1])])
    if crop:
        # Image rows run along world z (col = -+z), so the FOV spans z within +-half of its centre.
        z = lumbar_points(pat)[:, 2]
        half = (rows_n - 1) / 2 * px
        center[2] = (z.max() + half + 15.0) if crop > 0 else (z.min() - half - 15.0)
    offsets = (np.arange(n) - (n - 1) / 2) * gap
    pos = _stack(center, row, col, offsets, rows_n, cols_n, (px, px))
    thick = gap - rng.uniform(0.0, 0.5)
    if thin is not None:
        thick = gap  # 3D / contiguous thin-slice acquisitions
    short = {"T1": ["SAG T1", "Sag T1 FSE", "t1_tse_sag"], "T2": ["SAG T2", "Sag T2 FRFSE", "t2_tse_sag"],
             "STIR": ["SAG STIR", "Sag STIR", "t2_tirm_sag"]}[contrast]
    return SeriesPlan(series_id, series_number, description, str(rng.choice(short)), contrast, rows_n, cols_n,
                      (px, px), pos, np.tile(row, (n, 1)), np.tile(col, (n, 1)), np.zeros(n, int),
                      np.arange(1, n + 1), float(thick), float(gap), extra=extra)


def plan_axial(rng: np.random.Generator, pat: Patient, size: int, series_id: int, series_number: int,
               levels: tuple[str, ...], tilted: bool, *, flip: int = 0, matrix: tuple[int, int] | None = None,
               fov: float | None = None, n_slices: int | None = None) -> SeriesPlan:
    """Axial T2: one continuous stack over ``levels`` or one short stack tilted to each disc plane.

    ``flip`` 1: columns run to patient right, 2: rows run anterior (written truthfully in the IOP).
    ``matrix`` (rows, cols) and ``fov`` (mm, longer side) as in :func:`plan_sagittal`. ``n_slices`` aims the
    slice count: tilted stacks get round(n / levels) slices per disc (3-12), a continuous stack's spacing
    becomes its span / (n - 1) (2.5-6.5 mm).
    """
    px = rng.uniform(160.0, 200.0) / size
    gap = rng.uniform(3.5, 4.8)
    thick = gap * rng.uniform(0.85, 1.0)
    rows_n, cols_n = (size, size) if matrix is None else (int(matrix[0]), int(matrix[1]))
    if fov is not None:
        px = float(fov) / max(rows_n, cols_n)
    row = np.array([1.0, 0.0, 0.0])  # columns run to patient left
    centers, rows_c, cols_c, stacks = [], [], [], []
    in_plane = np.array([rng.normal(0, 5), 0.0, 0.0])
    d_c = pat.a_ap + rng.normal(5.0, 6.0)
    discs = [LEVEL_DISC[lv] for lv in levels]
    if tilted:
        for si, di in enumerate(discs):
            ang = np.deg2rad(rng.normal(0.0, 2.0))
            s0 = pat.s_disc[di]
            t, p = pat.tangent(s0), pat.posterior(s0)
            normal = np.cos(ang) * t + np.sin(ang) * p
            normal /= np.linalg.norm(normal)
            # A disc tilted in the coronal plane too (scoliosis): keep the columns in the slice plane.
            row_k = row - (row @ normal) * normal
            row_k /= np.linalg.norm(row_k)
            col = np.cross(normal, row_k)  # row x col = normal
            k = int(rng.integers(3, 6))
            if n_slices is not None:
                k = int(np.clip(round(n_slices / len(discs)), 3, 12))
            offs = (np.arange(k) - (k - 1) / 2) * gap + rng.normal(0, 1.0)
            c = pat.to_world(s0, d_c, 0.0) + in_plane
            for o in offs[::-1]:  # superior slice first
                centers.append(c + o * normal)
                rows_c.append(row_k)
                cols_c.append(col)
                stacks.append(si)
    else:
        s_top = pat.s_disc[discs[0]] + 12.0
        s_bot = pat.s_disc[discs[-1]] - 12.0
        s_mid = (s_top + s_bot) / 2
        ang = rng.normal(0.0, np.deg2rad(4.0))
        normal = np.array([0.0, np.sin(ang), np.cos(ang)])
        col = np.cross(normal, row)
        c = pat.to_world(s_mid, d_c, 0.0) + in_plane
        top, bot = pat.to_world(s_top, d_c, 0.0), pat.to_world(s_bot, d_c, 0.0)
        lo, hi = float((bot - c) @ normal), float((top - c) @ normal)
        if n_slices is not None:
            gap = float(np.clip((hi - lo) / max(int(n_slices) - 1, 1), 2.5, 6.5))
            thick = gap * 0.9
        offs = np.arange(hi, lo - 1e-6, -gap)
        for o in offs:
            centers.append(c + o * normal)
            rows_c.append(row)
            cols_c.append(col)
            stacks.append(0)
    rows_c, cols_c = np.array(rows_c), np.array(cols_c)
    if flip == 1:
        rows_c = -rows_c
    elif flip == 2:
        cols_c = -cols_c
    corner = -((cols_n - 1) / 2) * px * rows_c - ((rows_n - 1) / 2) * px * cols_c
    pos = np.array(centers) + corner
    n = len(pos)
    desc = str(rng.choice(["AX T2", "Ax T2 FSE", "t2_tse_tra", "AXIAL T2 FRFSE"]))
    return SeriesPlan(series_id, series_number, AX_T2, desc, "T2", rows_n, cols_n, (px, px), pos, rows_c, cols_c,
                      np.array(stacks), np.arange(1, n + 1), float(thick), float(gap), levels=tuple(levels),
                      extra={"flip": flip})


def render_series(rng: np.random.Generator, pat: Patient, plan: SeriesPlan, vendor: str,
                  chunk: int = 2, *, vrng: np.random.Generator | None = None,
                  scale: float | None = None) -> tuple[np.ndarray, float, float]:
    """Pixels (S, R, C) uint16 of a plan, plus the (slope, intercept) a reader must apply.

    Signal = anatomy (averaged over the slab's two halves when ``plan.partial_volume``) x smooth bias field (posterior
    coil gain + random gradient) x vendor scale (``scale`` overrides it), optionally folded (wrap-around)
    and ghosted along the phase axis, then Rician noise; stored either directly or divided by a
    RescaleSlope (Philips-like). ``vrng`` draws the artefacts' parameters so the rest of the stream is the
    same with or without them. ``chunk`` slices are rendered at a time (2 keeps temporaries cache-sized).
    """
    rmm, cmm = plan.pixel_spacing
    pw = float(max(cmm, 0.5))
    vendor_scale = {"GE MEDICAL SYSTEMS": rng.uniform(1200, 2600), "SIEMENS": rng.uniform(500, 1100),
                    "Philips Medical Systems": rng.uniform(700, 1800)}[vendor]
    scale = vendor_scale if scale is None else scale
    sigma = rng.uniform(0.015, 0.035) * scale
    grad = rng.normal(0.0, 0.15, 3)
    center = plan.positions.mean(axis=0)
    coil_y = pat.center_y - pat.radius + pat.a_ap + 60.0  # near the back: surface coil under the patient
    # Wrap-around: render a margin beyond the FOV on both sides of the phase axis and fold it back.
    margin = int(round(0.3 * (plan.rows, plan.cols)[plan.phase_axis])) if plan.wrap else 0
    r0, c0 = (-margin, 0) if plan.phase_axis == 0 else (0, -margin)
    nr, nc = plan.rows + (2 * margin if plan.phase_axis == 0 else 0), plan.cols + (2 * margin if plan.phase_axis else 0)
    rr, cc = np.meshgrid(np.arange(r0, r0 + nr, dtype=np.float32), np.arange(c0, c0 + nc, dtype=np.float32),
                         indexing="ij")
    pv = plan.partial_volume and plan.thickness >= 2.5  # thin slices: the centre plane is close enough
    ghost = None
    if plan.ghosting and vrng is not None:
        # Periodic (respiratory-like) phase error per phase-encode line: ghosts at multiples of n/period.
        n_pe = (plan.rows, plan.cols)[plan.phase_axis]  # ghosts form on the folded (acquired) grid
        ky = np.fft.fftfreq(n_pe) * n_pe
        period = vrng.uniform(5.0, 12.0)
        ghost = np.exp(1j * vrng.uniform(0.3, 0.9) * np.sin(2 * np.pi * ky / period + vrng.uniform(0, 2 * np.pi)))
    out = np.empty((len(plan.positions), plan.rows, plan.cols), dtype=np.float32)
    for k0 in range(0, len(plan.positions), chunk):
        ks = range(k0, min(k0 + chunk, len(plan.positions)))
        grids = [
            (plan.positions[k][None, None].astype(np.float32)
             + (cc * cmm)[..., None] * plan.row_cos[k].astype(np.float32)
             + (rr * rmm)[..., None] * plan.col_cos[k].astype(np.float32)).reshape(-1, 3)
            for k in ks
        ]
        normals = [np.cross(plan.row_cos[k], plan.col_cos[k]).astype(np.float32) for k in ks]
        pts = np.concatenate(grids)
        slab = None
        if pv:
            slab = np.concatenate([np.broadcast_to(n * np.float32(plan.thickness / 4), g.shape)
                                   for n, g in zip(normals, grids)])
        sig = pat.render(pts, plan.contrast, pw, slab=slab, table=plan.table)
        rel = (pts - center.astype(np.float32)) / 100.0
        bias = np.exp(rel @ grad.astype(np.float32) - 0.25 * np.abs(pts[:, 1] - coil_y) / 100.0)
        sig = (sig * bias * scale).reshape(len(ks), nr, nc)
        if margin:
            sig = _fold(sig, margin, plan.phase_axis)
        if ghost is not None:
            ax = 1 + plan.phase_axis
            shape = [1, 1, 1]
            shape[ax] = -1
            sig = np.abs(np.fft.ifft(np.fft.fft(sig, axis=ax) * ghost.reshape(shape), axis=ax)).astype(np.float32)
        n1 = rng.standard_normal(sig.shape, dtype=np.float32) * sigma
        n2 = rng.standard_normal(sig.shape, dtype=np.float32) * sigma
        out[k0 : k0 + len(ks)] = np.sqrt((sig + n1) ** 2 + n2**2)
    slope, intercept = 1.0, 0.0
    if vendor.startswith("Philips") and rng.random() < 0.7:
        slope = float(np.round(rng.uniform(1.2, 3.0), 4))
    stored = np.clip(np.rint((out - intercept) / slope), 0, 65535).astype(np.uint16)
    return stored, slope, intercept


def _fold(sig: np.ndarray, margin: int, axis: int) -> np.ndarray:
    """Alias (S, R+2m, C) or (S, R, C+2m) signal onto the FOV: each margin adds onto the opposite edge."""
    ax = 1 + axis
    n = sig.shape[ax] - 2 * margin
    core = np.take(sig, np.arange(margin, margin + n), axis=ax).copy()
    lo = np.take(sig, np.arange(0, margin), axis=ax)  # beyond the first edge -> folds onto the last rows
    hi = np.take(sig, np.arange(margin + n, n + 2 * margin), axis=ax)  # beyond the last edge -> first rows
    idx_hi = [slice(None)] * 3
    idx_hi[ax] = slice(0, margin)
    idx_lo = [slice(None)] * 3
    idx_lo[ax] = slice(n - margin, n)
    # Receive-coil sensitivity and RF excitation fall off beyond the FOV: the folded signal fades with
    # its distance from the edge.
    shape = [1, 1, 1]
    shape[ax] = margin
    fade = (0.7 * np.exp(-np.arange(margin, dtype=np.float32) / (0.12 * n))).reshape(shape)
    core[tuple(idx_hi)] += hi * fade  # hi[0] sits just beyond the last edge
    core[tuple(idx_lo)] += lo * np.flip(fade, axis=ax)  # lo[-1] sits just before the first edge
    return core


def series_grid(plan: SeriesPlan, k: int) -> np.ndarray:
    """World positions (rows, cols, 3) of the pixel centres of slice ``k`` (file order) of a plan."""
    rr, cc = np.meshgrid(np.arange(plan.rows, dtype=np.float64), np.arange(plan.cols, dtype=np.float64), indexing="ij")
    rmm, cmm = plan.pixel_spacing
    return (plan.positions[k][None, None] + (cc * cmm)[..., None] * plan.row_cos[k]
            + (rr * rmm)[..., None] * plan.col_cos[k])


def level_of(plan: SeriesPlan) -> tuple[str, ...]:
    """Levels covered by an axial plan (all levels for sagittal plans)."""
    return plan.levels or LEVELS


__all__ = ["SeriesPlan", "series_grid", "lumbar_points", "plan_sagittal", "plan_axial", "render_series", "VENDORS", "SAG_T1", "SAG_T2"]
