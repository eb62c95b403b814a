"""A lumbar spine patient in 3D world space (DICOM LPS, mm), evaluated at arbitrary world points.

The spine centreline is a circular arc in the sagittal plane (lordosis), so every world point has
closed-form *spine coordinates* ``(s, d, lx)``: ``s`` arc length along the centreline (mm, +superior),
``d`` distance from the centreline towards posterior (mm), ``lx`` = world x minus the midline (mm,
+ = patient left). All structures are implicit shapes in those coordinates, so rendering any series
(sagittal, axial, tilted) is one vectorised evaluation on the world positions of its pixels.

Latent severities act geometrically: canal stenosis narrows the thecal sac's AP diameter at its disc
(disc bulge + ligamentum flavum), foraminal narrowing shrinks that side's foramen, subarticular
stenosis shrinks that side's lateral recess; their strength has per-level noise and the baseline
sizes vary with patient size and a congenital canal factor, so no single intensity reveals a grade.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
from scipy.special import ndtr

from radspine.constants import CONDITIONS, LEVELS
from radspine.synth.labels import StudyLatents

# Discs from top to bottom; the last five are the competition levels.
DISCS: tuple[str, ...] = ("t11_t12", "t12_l1", *LEVELS)
LEVEL_DISC: dict[str, int] = {lv: i + 2 for i, lv in enumerate(LEVELS)}
_SPINAL, _LFOR, _RFOR, _LSUB, _RSUB = (CONDITIONS.index(c) for c in CONDITIONS)

# Relative signal of each tissue per contrast: (T1, T2, STIR). Body marrow and disc nucleus are
# patient-dependent and set in Patient.tissues().
_TISSUE: dict[str, tuple[float, float, float]] = {
    "fat": (1.0, 0.8, 0.08),
    "muscle": (0.38, 0.27, 0.3),
    "viscera": (0.45, 0.5, 0.45),
    "vessel": (0.06, 0.05, 0.05),
    "cortex": (0.1, 0.08, 0.08),
    "post_marrow": (0.55, 0.38, 0.15),
    "ligament": (0.12, 0.14, 0.14),
    "joint_fluid": (0.2, 0.95, 1.0),
    "csf": (0.16, 1.0, 1.0),
    "nerve": (0.42, 0.32, 0.35),
    "cord": (0.48, 0.42, 0.45),
    "annulus": (0.28, 0.2, 0.25),
}
CONTRASTS: tuple[str, ...] = ("T1", "T2", "STIR")

# Integer tissue labels of :meth:`Patient.labels` (0 = background, outside the body). "marrow" is the
# vertebral-body marrow, "post_marrow" that of the posterior elements; "nucleus" the disc nucleus.
TISSUE_LABELS: dict[str, int] = {
    "background": 0, "cortex": 1, "marrow": 2, "post_marrow": 3, "annulus": 4, "nucleus": 5, "csf": 6,
    "cord": 7, "nerve": 8, "fat": 9, "muscle": 10, "viscera": 11, "vessel": 12, "ligament": 13, "joint_fluid": 14,
}
# Coarse groups of TISSUE_LABELS, for trainers that want few classes.
LABEL_GROUPS: dict[str, tuple[int, ...]] = {
    "bone": (1, 2, 3), "disc": (4, 5), "csf": (6, 14), "cord_roots": (7, 8), "fat": (9,), "muscle": (10,),
    "soft_tissue": (11, 12, 13),
}
# Every tissue a random intensity table must give a value for.
TABLE_TISSUES: tuple[str, ...] = tuple(k for k in TISSUE_LABELS if k != "background")


def real_table(contrast: str) -> dict[str, float]:
    """The phantom's usual relative tissue signal of a contrast, as an intensity table (mid-age marrow,
    a well-hydrated nucleus)."""
    ci = CONTRASTS.index(contrast)
    t = {k: v[ci] for k, v in _TISSUE.items()}
    t["marrow"] = (0.675, 0.455, 0.205)[ci]
    t["nucleus"] = (0.38, 0.78, 0.78)[ci]
    return t


def random_table(rng: np.random.Generator, contrast: str) -> dict[str, float]:
    """A random tissue-intensity table (domain randomisation): half the time the real table of ``contrast``
    jittered per tissue (x0.6-1.6, log-uniform), otherwise every tissue uniform in [0.02, 1] (any ordering)."""
    jitter = rng.random() < 0.5
    base = real_table(contrast)
    f = np.exp(rng.uniform(np.log(0.6), np.log(1.6), len(TABLE_TISSUES)))
    u = rng.uniform(0.02, 1.0, len(TABLE_TISSUES))
    return {k: float(min(base[k] * f[i], 1.2) if jitter else u[i]) for i, k in enumerate(TABLE_TISSUES)}


def _ramp(signed: np.ndarray, pw: float) -> np.ndarray:
    """Partial-volume membership from a signed inside-distance (mm): 0 outside, 1 inside, linear over a pixel."""
    return np.clip(0.5 + signed / pw, 0.0, 1.0)


def _paint(img: np.ndarray, m: np.ndarray, value: float | np.ndarray) -> None:
    img += m * (value - img)


def _flow_voids(rng: np.random.Generator, s_disc: np.ndarray, size: float) -> np.ndarray:
    """CSF pulsation artefacts: a few dark blobs in the sac on T2 anywhere along the lumbar canal, so a dark
    canal pixel is not by itself a sign of stenosis."""
    k = int(rng.poisson(1.2))
    return np.stack([
        rng.uniform(s_disc[-1], s_disc[1], k),
        rng.uniform(-0.6, 0.6, k),
        rng.normal(0.0, 3.0, k),
        rng.uniform(1.5, 3.5, k) * size,
        rng.uniform(0.3, 0.6, k),
    ], axis=1) if k else np.zeros((0, 5))


@dataclass
class Variation:
    """Anatomical variation of one study (all off = the clean phantom's circular arc).

    Angles in radians, lengths in mm. Drawn by :meth:`sample` from a stream of its own, so switching a
    variation on or off never changes the rest of the study.
    """

    lordosis: np.ndarray | None = None  # (7,) segmental angle at each disc (None = one circular arc)
    sacral_kyphosis: float = 0.0  # angle by which the sacrum curves back anteriorly below S1
    scol_amp: float = 0.0  # lateral displacement of the curve's apex (signed, + = patient left)
    scol_apex: int = 4  # disc index nearest the apex
    scol_width: float = 60.0  # Gaussian half-width of the lateral curve along the spine
    scol_rot: float = 0.0  # axial rotation at the apex (bodies towards the convexity)
    slip_disc: int = -1  # disc index above which the spine sits anterior (spondylolisthesis), -1 = none
    slip_mm: float = 0.0
    transitional: str = ""  # "" | "sacralized" (rudimentary L5/S1 disc) | "lumbarized" (formed S1/S2 disc)
    sacral_remnant: float = 0.0  # height of a thin S1/S2 remnant disc relative to L5/S1 (0 = none)
    disc_scale: np.ndarray = field(default_factory=lambda: np.ones(7))  # per-disc height factor
    degeneration: float = 0.0  # strength of severity-linked disc height loss and T2 darkening

    @classmethod
    def sample(cls, rng: np.random.Generator, q) -> Variation:
        """Draw the variations switched on by the rates of ``q`` (a :class:`QuirkConfig`)."""
        nd = len(DISCS)
        u = rng.random(8)  # fixed draws first so each switch leaves the others' streams alone
        lordosis = np.deg2rad(np.clip(rng.normal([-3.0, -1.0, 4.0, 7.0, 9.0, 12.0, 15.0], [2, 2, 2, 2.5, 3, 3.5, 4]),
                                      -8.0, 20.0))
        sac = np.deg2rad(rng.uniform(15.0, 35.0))
        amp = rng.uniform(5.0, 15.0) * rng.choice([-1.0, 1.0])
        apex, width, rot = int(rng.integers(2, 6)), rng.uniform(45.0, 80.0), np.deg2rad(rng.uniform(3.0, 10.0))
        slip_disc = int(rng.choice([LEVEL_DISC["l4_l5"], LEVEL_DISC["l5_s1"], LEVEL_DISC["l3_l4"]], p=[0.6, 0.3, 0.1]))
        slip = rng.uniform(2.0, 8.0)
        trans = str(rng.choice(["sacralized", "lumbarized"]))
        scale = np.clip(rng.normal(1.0, 0.07, nd), 0.8, 1.2)
        var = cls(degeneration=float(q.disc_degeneration))
        if u[0] < q.lordosis_variation:
            var.lordosis, var.sacral_kyphosis = lordosis, float(sac)
        if u[1] < q.scoliosis:
            var.scol_amp, var.scol_apex, var.scol_width, var.scol_rot = float(amp), apex, float(width), float(rot)
        if u[2] < q.spondylolisthesis:
            var.slip_disc, var.slip_mm = slip_disc, float(slip)
        if u[3] < q.transitional:
            var.transitional = trans
            var.disc_scale = scale
            if trans == "sacralized":
                var.disc_scale[-1] = rng.uniform(0.25, 0.5)  # rudimentary L5/S1 disc
        # Drawn last, so studies without it keep every earlier draw (and their anatomy) unchanged.
        u_rem, h_rem = rng.random(), rng.uniform(0.15, 0.35)
        if u_rem < q.sacral_remnant and var.transitional != "lumbarized":
            var.sacral_remnant = float(h_rem)
        return var

    @property
    def plain(self) -> bool:
        """True when the spine is the clean phantom's circular arc (closed-form coordinates)."""
        return self.lordosis is None and self.scol_amp == 0.0 and self.slip_disc < 0


class Centerline:
    """A sagittal-plane spine centreline from a curvature profile, with a (y, z) -> (s, d) lookup table.

    The superior tangent T(s) = (0, sin theta, cos theta) (theta > 0 tilts it posterior) is tabulated every
    0.25 mm and the curve integrated numerically (lordosis: theta grows with s); world points are projected onto it by Newton steps
    (hand-written: a closest-point solve on a tabulated planar curve, which no installed library offers)
    once per patient on a 2 mm (y, z) grid, then interpolated bilinearly per pixel (error < 0.01 mm).
    """

    STEP = 0.25
    GRID = 2.0

    def __init__(self, s: np.ndarray, theta: np.ndarray, anchor_s: float, anchor_yz: tuple[float, float]):
        self.s = s
        self.theta = theta
        dy, dz = np.sin(theta) * self.STEP, np.cos(theta) * self.STEP
        y = np.concatenate([[0.0], np.cumsum((dy[1:] + dy[:-1]) / 2)])
        z = np.concatenate([[0.0], np.cumsum((dz[1:] + dz[:-1]) / 2)])
        y0, z0 = np.interp(anchor_s, s, y), np.interp(anchor_s, s, z)
        self.y, self.z = y - y0 + anchor_yz[0], z - z0 + anchor_yz[1]
        self.kappa = np.gradient(theta, self.STEP)
        # Lookup grid covering every point within 150 mm of the curve.
        self.y_lo, self.z_lo = self.y.min() - 150.0, self.z.min() - 10.0
        ny = int((self.y.max() + 150.0 - self.y_lo) / self.GRID) + 2
        nz = int((self.z.max() + 10.0 - self.z_lo) / self.GRID) + 2
        gy, gz = np.meshgrid(self.y_lo + np.arange(ny) * self.GRID, self.z_lo + np.arange(nz) * self.GRID,
                             indexing="ij")
        sd = self.project(gy.ravel(), gz.ravel())
        self.s_map = sd[0].reshape(ny, nz).astype(np.float32)
        self.d_map = sd[1].reshape(ny, nz).astype(np.float32)

    def at(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(y, z, theta, kappa) of the curve at arc positions s."""
        return (np.interp(s, self.s, self.y), np.interp(s, self.s, self.z), np.interp(s, self.s, self.theta),
                np.interp(s, self.s, self.kappa))

    def project(self, y: np.ndarray, z: np.ndarray, iters: int = 6) -> tuple[np.ndarray, np.ndarray]:
        """Exact (s, d) of sagittal positions: foot of the perpendicular on the curve, d towards posterior.

        Points with no foot on the concave side within reach (beyond the local centre of curvature) get
        d = 1e4 (outside every structure).
        """
        y, z = np.asarray(y, float), np.asarray(z, float)
        coarse = slice(None, None, 40)  # every 10 mm: starting guess by nearest sample
        cy, cz, cs = self.y[coarse], self.z[coarse], self.s[coarse]
        s = np.empty_like(y)
        for a in range(0, len(y), 20000):  # chunks bound the (N, samples) temporary
            b = min(a + 20000, len(y))
            dist = (y[a:b, None] - cy[None]) ** 2 + (z[a:b, None] - cz[None]) ** 2
            s[a:b] = cs[np.argmin(dist, axis=1)]
        for _ in range(iters):
            py, pz, th, k = self.at(s)
            ry, rz = y - py, z - pz
            f = ry * np.sin(th) + rz * np.cos(th)
            d = ry * np.cos(th) - rz * np.sin(th)
            s = np.clip(s + f / np.maximum(1.0 - k * d, 0.2), self.s[0], self.s[-1])
        py, pz, th, k = self.at(s)
        ry, rz = y - py, z - pz
        f = ry * np.sin(th) + rz * np.cos(th)
        d = ry * np.cos(th) - rz * np.sin(th)
        bad = (np.abs(f) > 0.05) | (1.0 - k * d < 0.05)
        return s, np.where(bad, 1e4, d)

    def lookup(self, y: np.ndarray, z: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(s, d) of sagittal positions by bilinear interpolation of the tables (float32).

        Hand-written bilinear gather on the flat tables: ~40 % less CPU than two
        ``scipy.ndimage.map_coordinates(order=1)`` calls, and this runs on every rendered pixel.
        """
        ny, nz = self.s_map.shape
        fy = (np.asarray(y, np.float32) - np.float32(self.y_lo)) / np.float32(self.GRID)
        fz = (np.asarray(z, np.float32) - np.float32(self.z_lo)) / np.float32(self.GRID)
        outside = (fy < 0) | (fy > ny - 1) | (fz < 0) | (fz > nz - 1)
        fy = np.clip(fy, 0, ny - 1.001)
        fz = np.clip(fz, 0, nz - 1.001)
        y0, z0 = fy.astype(np.int32), fz.astype(np.int32)
        wy, wz = fy - y0, fz - z0
        i = y0 * nz + z0
        out = []
        for table in (self.s_map.ravel(), self.d_map.ravel()):
            a, b = table[i], table[i + 1]
            c, e = table[i + nz], table[i + nz + 1]
            ab = a + (b - a) * wz
            out.append(ab + (c + (e - c) * wz - ab) * wy)
        s, d = out
        # Outside the table, or a bilinear mix with a 1e4 "no foot" cell, is no position either.
        return s, np.where(outside | (d > 500.0), np.float32(1e4), d)


def _smoothstep(x: np.ndarray) -> np.ndarray:
    x = np.clip(x, 0.0, 1.0)
    return x * x * (3.0 - 2.0 * x)


@dataclass
class Patient:
    """Sampled anatomy of one study. Lengths in mm; disc arrays are indexed like :data:`DISCS`."""

    x0: float  # world x of the midline
    center_y: float  # circle centre of the lordotic arc (world y, z)
    center_z: float
    radius: float  # arc radius (mm)
    size: float  # skeletal scale factor
    s_disc: np.ndarray  # (7,) arc position of each disc centre
    h_disc: np.ndarray  # (7,) disc heights
    hydration: np.ndarray  # (7,) disc nucleus hydration in (0, 1]
    a_ap: float  # vertebral body AP half-depth
    a_lat: float  # vertebral body half-width
    canal_ap: float  # baseline thecal canal AP diameter
    canal_w: float  # canal width
    canal_nar: np.ndarray  # (7,) fractional AP narrowing at each disc
    recess_nar: np.ndarray  # (2, 7) [left, right] fractional recess narrowing
    foramen_nar: np.ndarray  # (2, 7) [left, right] fractional foramen shrinkage
    fat: float  # subcutaneous fat thickness
    torso_w: float  # torso half-width
    torso_d: float  # torso AP half-depth
    marrow: tuple[float, float, float]  # body marrow signal per contrast
    tex_k: np.ndarray  # (3, 3) texture wave vectors in spine coordinates (rad/mm)
    tex_phase: np.ndarray  # (3,)
    conus_s: float  # arc position of the conus tip
    flow: np.ndarray  # (k, 5) CSF pulsation flow voids: s, AP offset (fraction of sac half-depth), lx, radius, depth
    var: Variation = field(default_factory=Variation)
    line: Centerline | None = None  # non-uniform lordosis; None = the circular arc

    # ----------------------------------------------------------------------------- sampling
    @classmethod
    def sample(cls, rng: np.random.Generator, lat: StudyLatents, var: Variation | None = None) -> Patient:
        """Draw a patient whose local anatomy expresses the latent severities of ``lat``.

        ``var`` (default: none) bends, tilts, slips and varies the spine; it draws nothing from ``rng``.
        """
        var = Variation() if var is None else var
        size = rng.uniform(0.9, 1.1)
        bmi = rng.uniform(0.0, 1.0)
        nd = len(DISCS)
        sev = np.zeros((len(CONDITIONS), nd))
        sev[:, 2:] = lat.severity
        sev[:, :2] = rng.uniform(0.0, 0.2, size=(len(CONDITIONS), 2))
        deg = np.concatenate([rng.standard_normal(2) * 0.5 - 0.5, lat.degeneration])
        base_h = np.array([6.5, 7.5, 8.5, 9.5, 10.5, 11.0, 10.5]) * size
        h_disc = base_h * np.clip(1.0 - 0.12 * np.clip(deg + 0.4 * lat.age, -1, 2.5), 0.6, 1.15)
        hydration = np.clip(0.8 - 0.15 * deg - 0.1 * lat.age + rng.normal(0, 0.05, nd), 0.08, 1.0)
        if var.degeneration > 0:
            # Degenerated discs at stenotic levels: height loss (foramina close with it) and a dark nucleus.
            lvl = np.concatenate([np.zeros(2), sev[:3, 2:].mean(axis=0)])
            h_disc = h_disc * (1.0 - 0.35 * var.degeneration * lvl)
            hydration = np.clip(hydration - 0.55 * var.degeneration * lvl, 0.05, 1.0)
        h_disc = h_disc * var.disc_scale
        h_body = 26.5 * size * rng.uniform(0.96, 1.04, nd - 1)  # bodies T12..L5 between the discs

        # Disc centres along the arc, L3/L4 placed near the apex +- a pitch offset.
        s = np.zeros(nd)
        for i in range(1, nd):
            s[i] = s[i - 1] - (h_disc[i - 1] / 2 + h_body[i - 1] + h_disc[i] / 2)
        # Arc angle between the L1/L2 and L5/S1 discs; a circle over-curves the upper levels, so keep it modest.
        lordosis = np.deg2rad(rng.uniform(12.0, 26.0))
        radius = float((s[2] - s[6]) / lordosis)
        pitch = np.deg2rad(rng.normal(0.0, 5.0))
        s = s - s[LEVEL_DISC["l3_l4"]] + radius * pitch

        def nar(v: np.ndarray, gain: float, cap: float) -> np.ndarray:
            return np.clip(gain * v + rng.normal(0.0, 0.04, v.shape), 0.0, cap)

        canal_ap = 15.5 * size * rng.normal(1.0, 0.07)
        a_ap = 16.5 * size
        age01 = float(np.clip(0.5 + 0.2 * lat.age, 0.0, 1.0))
        marrow = (0.55 + 0.25 * age01, 0.38 + 0.15 * age01, 0.18 + 0.05 * age01)
        y_apex = rng.normal(0.0, 12.0)
        fat = (8.0 + 30.0 * bmi) * rng.uniform(0.9, 1.1)
        x0 = float(rng.normal(0.0, 8.0))  # x0 then center_z: the clean phantom's draw order
        center_z = float(rng.normal(0.0, 15.0))
        line = None
        if var.lordosis is not None:
            # Segmental angles at each disc (Gaussian-smoothed steps, sigma 14 mm: curvature radius stays
            # > ~90 mm so posterior coordinates stay unique), a kyphotic sacrum, the L3/L4 pitch as before.
            grid = np.arange(s[-1] - 260.0, s[0] + 200.0, Centerline.STEP)
            s_ref = s[LEVEL_DISC["l3_l4"]]

            def steps(x: np.ndarray) -> np.ndarray:
                th = sum(b * ndtr((x - sk) / 14.0) for b, sk in zip(var.lordosis, s))
                return th - var.sacral_kyphosis * ndtr((x - (s[-1] - 55.0)) / 25.0)

            theta = pitch + steps(grid) - steps(np.array([s_ref]))[0]
            anchor = (y_apex + radius - radius * np.cos(pitch), center_z + radius * np.sin(pitch))
            line = Centerline(grid, theta, s_ref, anchor)
        return cls(
            x0=x0,
            center_y=float(y_apex + radius),
            center_z=center_z,
            radius=radius,
            size=float(size),
            s_disc=s,
            h_disc=h_disc,
            hydration=hydration,
            a_ap=float(a_ap),
            a_lat=float(24.0 * size * rng.uniform(0.95, 1.05)),
            canal_ap=float(canal_ap),
            canal_w=float(23.0 * size * rng.normal(1.0, 0.05)),
            canal_nar=nar(sev[_SPINAL], 0.72, 0.88),
            recess_nar=np.stack([nar(sev[_LSUB], 0.8, 0.92), nar(sev[_RSUB], 0.8, 0.92)]),
            foramen_nar=np.stack([nar(sev[_LFOR], 0.62, 0.8), nar(sev[_RFOR], 0.62, 0.8)]),
            fat=float(fat),
            torso_w=float((135.0 + 45.0 * bmi) * size),
            torso_d=float((95.0 + 35.0 * bmi) * size),
            marrow=marrow,
            tex_k=rng.normal(0.0, 0.6, (3, 3)) * (2 * np.pi / rng.uniform(8.0, 20.0, (3, 1))),
            tex_phase=rng.uniform(0, 2 * np.pi, 3),
            conus_s=float(s[LEVEL_DISC["l1_l2"]] + rng.uniform(-5.0, 20.0)),
            flow=_flow_voids(rng, s, size),
            var=var,
            line=line,
        )

    # ----------------------------------------------------------------------------- coordinates
    def spine_coords(self, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """(s, d, lx) of world points (N, 3) (tabulated centreline: bilinear lookup, < 0.01 mm off)."""
        return self._coords(pts, exact=False)

    def _coords(self, pts: np.ndarray, exact: bool) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        if self.line is None:
            ry = pts[:, 1] - self.center_y
            rz = pts[:, 2] - self.center_z
            r = np.hypot(ry, rz)
            s, d = self.radius * np.arctan2(rz, -ry), self.radius - r
        elif exact:
            s, d = self.line.project(pts[:, 1], pts[:, 2])
        else:
            s, d = self.line.lookup(pts[:, 1], pts[:, 2])
        lx = pts[:, 0] - self.x0
        v = self.var
        if v.scol_amp:
            # Scoliosis: lateral shift of the centreline, coronal tilt of the vertebrae (first order: the
            # endplates follow the curve's slope) and axial rotation, bodies towards the convexity.
            g = np.exp(-0.5 * ((s - self.s_disc[v.scol_apex]) / v.scol_width) ** 2)
            lx = lx - v.scol_amp * g
            s = s + lx * (-v.scol_amp * g * (s - self.s_disc[v.scol_apex]) / v.scol_width**2)
            psi = np.sign(v.scol_amp) * v.scol_rot * g
            c, sn = np.cos(psi), np.sin(psi)
            d, lx = d * c - lx * sn, d * sn + lx * c
        if v.slip_disc >= 0:
            # Spondylolisthesis: everything above the slipped disc sits slip_mm anterior; the step runs
            # through the disc's height.
            h = self.h_disc[v.slip_disc]
            d = d + v.slip_mm * _smoothstep((s - (self.s_disc[v.slip_disc] - h / 2)) / h)
        return s, d, lx

    def to_world(self, s: float, d: float, lx: float) -> np.ndarray:
        """World point (3,) of spine coordinates."""
        if self.line is None:
            phi = s / self.radius
            r = self.radius - d
            p = np.array([self.x0 + lx, self.center_y - r * np.cos(phi), self.center_z + r * np.sin(phi)],
                         dtype=np.float64)
        else:
            y, z, th, _ = self.line.at(np.array([s]))
            p = np.array([self.x0 + lx, y[0] + d * np.cos(th[0]), z[0] - d * np.sin(th[0])])
        if self.var.plain or (self.line is not None and not self.var.scol_amp and self.var.slip_disc < 0):
            return p
        # Warped spine: Newton steps on the exact coordinates (numeric Jacobian; the warp is near-identity).
        target = np.array([s, d, lx], dtype=np.float64)
        for _ in range(12):
            f = self._exact(p) - target
            if np.abs(f).max() < 1e-7:
                break
            jac = np.stack([(self._exact(p + e) - self._exact(p - e)) / 2e-3 for e in np.eye(3) * 1e-3], axis=1)
            p = p - np.linalg.solve(jac, f)
        return p

    def _exact(self, p: np.ndarray) -> np.ndarray:
        return np.array([a[0] for a in self._coords(p[None].astype(np.float64), exact=True)], dtype=np.float64)

    def _gradient(self, p: np.ndarray, comp: int) -> np.ndarray:
        return np.array([(self._exact(p + e)[comp] - self._exact(p - e)[comp]) / 2e-3 for e in np.eye(3) * 1e-3])

    def tangent(self, s: float) -> np.ndarray:
        """Unit superior direction of the spine at arc position s (the disc-plane normal at a disc)."""
        if self.var.plain and self.line is None:
            phi = s / self.radius
            return np.array([0.0, np.sin(phi), np.cos(phi)])
        g = self._gradient(self.to_world(s, 0.0, 0.0), 0)
        return g / np.linalg.norm(g)

    def posterior(self, s: float) -> np.ndarray:
        """Unit posterior direction at arc position s (perpendicular to the tangent)."""
        if self.var.plain and self.line is None:
            phi = s / self.radius
            return np.array([0.0, np.cos(phi), -np.sin(phi)])
        t = self.tangent(s)
        g = self._gradient(self.to_world(s, 0.0, 0.0), 1)
        g = g - (g @ t) * t
        return g / np.linalg.norm(g)

    def midline_x(self, disc: int) -> float:
        """World x of the canal centre at a disc (the patient's midline there; moves with scoliosis)."""
        return float(self.to_world(self.s_disc[disc], self.canal_center_d(disc), 0.0)[0])

    # ----------------------------------------------------------------------------- landmarks
    def canal_center_d(self, disc: int) -> float:
        """d of the thecal sac centre at a disc (narrowing included)."""
        ant, post = self._canal_walls(self.canal_nar[disc])
        return float((ant + post) / 2)

    def _canal_walls(self, nar: np.ndarray | float) -> tuple:
        d_ant0 = self.a_ap + 1.0
        return d_ant0 + 0.5 * nar * self.canal_ap, d_ant0 + self.canal_ap - 0.5 * nar * self.canal_ap

    def canal_ap_at(self, disc: int) -> float:
        """True thecal sac AP diameter (mm) at a disc."""
        ant, post = self._canal_walls(self.canal_nar[disc])
        return float(post - ant)

    def sac_area_at(self, disc: int, step: float = 0.05) -> float:
        """True CSF-bright area (mm²) of the disc plane: sac ellipse (per-side width) ∪ lateral-recess CSF."""
        nar = self.canal_nar[disc]
        ant, post = self._canal_walls(nar)
        half_ap, dc = (post - ant) / 2, (ant + post) / 2
        d, lx = np.meshgrid(np.arange(dc - 15, dc + 15, step), np.arange(-20, 20, step), indexing="ij")
        rn = np.where(lx > 0, self.recess_nar[0][disc], self.recess_nar[1][disc])
        hw = (self.canal_w / 2 * (1 - 0.2 * nar) - 1.0) * (1 - 0.3 * rn)
        m = (lx / hw) ** 2 + ((d - dc) / half_ap) ** 2 < 1
        r = 4.0 * self.size * (1 - rn)
        m |= ((np.abs(lx) - (self.canal_w / 2 - 2)) / r) ** 2 + ((d - (self.a_ap + 4)) / r) ** 2 < 1
        return float(m.sum() * step**2)

    def recess_center(self, disc: int, side: str) -> np.ndarray:
        """World centre of the left/right lateral recess at a disc (subarticular label point)."""
        sign = 1.0 if side == "left" else -1.0
        return self.to_world(self.s_disc[disc], self.a_ap + 4.0, sign * (self.canal_w / 2 - 2.0))

    def foramen_center(self, disc: int, side: str) -> np.ndarray:
        """World centre of the left/right neural foramen at a disc (foraminal label point)."""
        sign = 1.0 if side == "left" else -1.0
        s_f, d_f = self._foramen_sd(disc)
        return self.to_world(s_f, d_f, sign * self.foramen_x())

    def foramen_x(self) -> float:
        """|lx| of the foramina's centre."""
        return self.canal_w / 2 + 8.0

    def _foramen_sd(self, disc: int | np.ndarray) -> tuple:
        h_body = 26.5 * self.size
        return self.s_disc[disc] + 0.22 * (self.h_disc[disc] + 0.6 * h_body), self.a_ap + 5.0 * self.size

    def canal_point(self, disc: int) -> np.ndarray:
        """World centre of the thecal sac at a disc on the midline (canal label point)."""
        return self.to_world(self.s_disc[disc], self.canal_center_d(disc), 0.0)

    # ----------------------------------------------------------------------------- rendering
    def labels(self, pts: np.ndarray) -> np.ndarray:
        """Integer tissue label (N,) uint8 (:data:`TISSUE_LABELS`) at world points ``pts`` (N, 3): the structure
        whose painted shape contains each point's centre (no partial volume, texture or flow voids)."""
        v = self.render(pts, "T2", 1e-4, labels=True)
        return np.clip(np.rint(v), 0, 255).astype(np.uint8)

    def render(self, pts: np.ndarray, contrast: str, pw: float, slab: np.ndarray | None = None,
               table: dict[str, float] | None = None, *, labels: bool = False) -> np.ndarray:
        """Noise-free relative signal (N,) float32 of the contrast at world points ``pts`` (N, 3).

        ``pw`` is the in-plane partial-volume edge width (about one pixel, mm). ``slab`` (N, 3) is a
        through-plane offset (normal x thickness / 4): the spine's fine structures are then averaged over
        the sub-planes at -slab and +slab, the midpoints of the slab's two halves (a 2-point box average
        of a thick slice; 3 points cost 50 % more render time for little visible change). The large
        smooth structures (torso, muscles, vessels) use the centre plane only: their blur costs time but
        changes little.

        ``table`` (tissue -> value for every name in :data:`TABLE_TISSUES`) replaces the contrast's tissue
        signal (domain randomisation; the nucleus still darkens with dehydration). ``labels`` paints the
        integer codes of :data:`TISSUE_LABELS` instead (use a tiny ``pw``; see :meth:`labels`).
        """
        ci = CONTRASTS.index(contrast)
        if labels:
            tv = {k: float(v) for k, v in TISSUE_LABELS.items()}
            tv["_mode"] = "label"
        elif table is not None:
            tv = {k: float(table[k]) for k in TABLE_TISSUES}
            tv["_mode"] = "table"
        else:
            tv = {k: v[ci] for k, v in _TISSUE.items()}
            tv["_mode"] = "real"
        s, d, lx = (a.astype(np.float32) for a in self.spine_coords(pts))
        img = np.zeros(len(s), dtype=np.float32)
        size = self.size
        alx = np.abs(lx)

        # Torso: a vertical elliptic cylinder in world space (subcutaneous fat shell, viscera inside).
        tw, td, f = self.torso_w, self.torso_d, self.fat
        back_y = self.center_y - self.radius + self.a_ap + self.canal_ap + 55.0 * size + f
        tx = (pts[:, 0] - self.x0).astype(np.float32)
        ty = (pts[:, 1] - (back_y - td)).astype(np.float32)
        q = (tx / tw) ** 2 + (ty / td) ** 2
        _paint(img, _ramp((1 - q) * (td / 2), pw), tv["fat"])
        q = (tx / (tw - f)) ** 2 + (ty / (td - f)) ** 2
        _paint(img, _ramp((1 - q) * ((td - f) / 2), pw), tv["viscera"])

        # Detailed structures only where they can be: muscles/vessels in a wide box, the spine in a tight one.
        a_ap, cw, size = self.a_ap, self.canal_w, self.size
        dpost0 = a_ap + 1.0 + self.canal_ap
        wide = (alx < 62.0 * size) & (d > -a_ap - 30.0 * size) & (d < dpost0 + 40.0 * size)
        idx = np.flatnonzero(wide)
        if idx.size:
            img[idx] = self._render_soft(img[idx], s[idx], d[idx], lx[idx], alx[idx], tv, pw)

        def core_of(d: np.ndarray, alx: np.ndarray, m: float = 0.0) -> np.ndarray:
            core = (alx < max(cw / 2 + 16.0 * size, self.a_lat * 1.05 + 1.0) + m) & (d > -a_ap - 2.0 - m)
            core &= (d < dpost0 + 10.0 * size + m) | ((alx < 6.0 * size + m) & (d < dpost0 + 40.0 * size + m))
            # transverse processes
            core |= (alx < cw / 2 + 34.0 * size + m) & (d > a_ap - m) & (d < a_ap + 12.0 * size + m)
            return core

        if slab is None:
            idx = np.flatnonzero(core_of(d, alx))
            if idx.size:
                img[idx] = self._render_core(img[idx], s[idx], d[idx], lx[idx], alx[idx], tv, ci, pw)
            return img
        # Partial volume: the core region of either sub-plane, each painted over the same background.
        # Sub-plane coordinates only near the centre plane's core (they move by at most |slab| < 2 mm there).
        near = np.flatnonzero(core_of(d, alx, 2.0 + 2.0 * float(np.abs(slab).max())))
        if not near.size:
            return img
        subs = []
        mask = np.zeros(near.size, dtype=bool)
        for sign in (-1.0, 1.0):
            sub = tuple(a.astype(np.float32) for a in self.spine_coords(pts[near] + sign * slab[near]))
            subs.append(sub)
            mask |= core_of(sub[1], np.abs(sub[2]))
        sel = np.flatnonzero(mask)
        idx = near[sel]
        if idx.size:
            acc = np.zeros(idx.size, np.float32)
            for ss, dd, ll in subs:
                ss, dd, ll = ss[sel], dd[sel], ll[sel]
                acc += self._render_core(img[idx], ss, dd, ll, np.abs(ll), tv, ci, pw)
            img[idx] = acc / 2.0
        return img

    def _disc_frame(self, s: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Index of the nearest disc, offset from it along the arc, and its height, per point."""
        order = np.argsort(self.s_disc)
        s_sorted = self.s_disc[order]
        j = order[np.searchsorted((s_sorted[1:] + s_sorted[:-1]) / 2, s)]
        return j, s - self.s_disc[j].astype(np.float32), self.h_disc[j].astype(np.float32)

    def _render_soft(self, img, s, d, lx, alx, tv, pw):
        """Paraspinal muscles, psoas and the great vessels."""
        size, cw = self.size, self.canal_w
        img = img.copy()
        dpost0 = self.a_ap + 1.0 + self.canal_ap
        for sign in (1.0, -1.0):
            q = ((lx - sign * (cw / 2 + 20 * size)) / (22 * size)) ** 2 + ((d - dpost0 - 16 * size) / (22 * size)) ** 2
            _paint(img, _ramp((1 - q) * 12 * size, pw), tv["muscle"])
        s_l1, s_l5 = self.s_disc[LEVEL_DISC["l1_l2"]], self.s_disc[LEVEL_DISC["l5_s1"]]
        grow = np.clip((s_l1 + 20 - s) / (s_l1 - s_l5 + 20), 0, 1)
        rp = size * (5 + 15 * grow)
        q = ((alx - self.a_lat - rp * 0.7) / rp) ** 2 + ((d + 2) / (rp * 0.9)) ** 2
        _paint(img, _ramp((1 - q) * rp / 2, pw) * (s > s_l5 - 40), tv["muscle"])
        # Flow voids anterior to the bodies, above the bifurcation at L4.
        above_bif = _ramp(s - self.s_disc[LEVEL_DISC["l4_l5"]] - 10, pw)
        for cx, rv in ((12.0, 10.0), (-20.0, 9.0)):
            q = ((lx - cx * size) / (rv * size)) ** 2 + ((d + self.a_ap + 14 * size) / (rv * size * 0.9)) ** 2
            _paint(img, _ramp((1 - q) * rv * size / 2, pw) * above_bif, tv["vessel"])
        return img

    def _render_core(self, img, s, d, lx, alx, tv, ci, pw):  # noqa: C901 - one painter's pass, in order
        """Posterior elements, ligaments, foramina, canal contents, vertebral bodies and discs."""
        size, a_ap, cw, cap = self.size, self.a_ap, self.canal_w, self.canal_ap
        img = img.copy()
        j, ds, hd = self._disc_frame(s)
        bump = np.clip(1 - (ds / (hd / 2 + 6.0 * size)) ** 2, 0, None) ** 2
        left = lx > 0
        dpost0 = a_ap + 1.0 + cap

        # Posterior elements: rounded pedicle/articular masses beside the canal, laminae, spinous and
        # transverse processes (the latter at mid-body height, between the discs).
        lc, bw = cw / 2 + 7.0 * size, 8.0 * size
        dcb = (a_ap - 3.0 + dpost0 + 9.0 * size) / 2
        bh = (dpost0 + 9.0 * size - a_ap + 3.0) / 2
        q_band = ((alx - lc) / bw) ** 4 + ((d - dcb) / bh) ** 4
        mid_body = _ramp(np.abs(ds) - hd / 2 - 7.0 * size, pw)
        trans = _ramp(np.minimum(cw / 2 + 32 * size - alx, 3.0 * size - np.abs(d - a_ap - 7.0 * size)), pw) * mid_body
        lam = _ramp(np.minimum(cw / 2 + 12 * size - alx, np.minimum(d - dpost0, dpost0 + 8 * size - d)), pw)
        spin = _ramp(np.minimum(4.5 * size - alx, np.minimum(d - dpost0, dpost0 + 36 * size - d)), pw)
        spin *= _ramp(np.abs(ds) - hd / 2 - 3.5 * size, pw)
        bone = np.maximum(np.maximum(_ramp((1 - q_band) * bw / 4, pw), np.maximum(lam, trans)), spin)
        _paint(img, bone, tv["cortex"])
        q_in = ((alx - lc) / (bw - 1.3)) ** 4 + ((d - dcb) / (bh - 1.3)) ** 4
        inner = np.maximum(
            np.maximum(_ramp((1 - q_in) * bw / 4, pw), trans * _ramp(1.8 * size - np.abs(d - a_ap - 7.0 * size), pw)),
            _ramp(np.minimum(3.5 * size - alx, np.minimum(d - dpost0 - 1, dpost0 + 34 * size - d)), pw)
            * _ramp(np.abs(ds) - hd / 2 - 4.5 * size, pw),
        )
        _paint(img, inner * self._tex(tv, s, d, lx, 0.06), tv["post_marrow"])
        # Facet joints at each disc: an oblique fluid line inside the articular processes.
        fj = np.abs(alx - (cw / 2 + 8 * size) - 0.45 * (d - dpost0)) < 0.8
        fj &= (np.abs(ds) < hd / 2 + 9 * size) & (d > dpost0 - 7 * size) & (d < dpost0 + 7 * size)
        _paint(img, fj.astype(np.float32), tv["joint_fluid"])
        # Ligamentum flavum between the laminae at the disc, thickening into the canal with stenosis.
        nar_c = self.canal_nar[j].astype(np.float32) * bump
        d_ant, d_post = self._canal_walls(nar_c)
        lig = _ramp(np.minimum(cw / 2 + 2 - alx, np.minimum(d - d_post + 1.0, dpost0 + 4 * size - d)), pw)
        lig *= np.maximum(_ramp(hd / 2 + 5 * size - np.abs(ds), pw), (d < dpost0).astype(np.float32))
        _paint(img, lig, tv["ligament"])

        # Neural foramina: fat ellipses carved in the band at each disc, nerve root in the upper part.
        side_nar = np.where(left, self.foramen_nar[0][j], self.foramen_nar[1][j]).astype(np.float32)
        s_f, d_f = self._foramen_sd(j)
        hf0 = 0.5 * hd + 0.3 * 26.5 * size
        hf, af = hf0 * (1 - 0.45 * side_nar), 5.0 * size * (1 - 0.6 * side_nar)
        lat = (alx - self.foramen_x()) / (9.0 * size)
        q = ((s - s_f) / hf) ** 2 + ((d - d_f) / af) ** 2 + lat**2
        _paint(img, _ramp((1 - q) * af / 2, pw), tv["fat"])
        rr = 2.4 * size * (1 - 0.3 * side_nar)
        q = ((s - s_f - 0.35 * hf) / rr) ** 2 + ((d - d_f) / rr) ** 2 + lat**2
        _paint(img, _ramp((1 - q) * rr / 2, pw), tv["nerve"])

        # Canal: ligament/facet tissue, epidural fat, thecal sac (CSF), lateral recesses, roots / cord.
        # Subarticular stenosis (facet and ligamentum hypertrophy) narrows that side's recess and the
        # lateral sac and fat.
        d_ant0 = a_ap + 1.0
        rec_nar = np.where(left, self.recess_nar[0][j], self.recess_nar[1][j]).astype(np.float32) * bump
        bony = _ramp(np.minimum(cw / 2 + 0.5 - alx, np.minimum(d - d_ant0 + 1, d_post - d)), pw)
        _paint(img, bony, tv["ligament"])
        fat_c = _ramp(np.minimum(cw / 2 + 0.5 - 5.0 * size * rec_nar - alx, np.minimum(d - d_ant0 + 1, d_post - d)), pw)
        _paint(img, fat_c, tv["fat"])
        sac_tail = _ramp(s - (self.s_disc[-1] - 35 * size), pw)  # the dural sac ends at about S2
        half_ap = np.maximum((d_post - d_ant) / 2, 0.2)
        dc = (d_ant + d_post) / 2
        half_w = (cw / 2 * (1 - 0.2 * nar_c) - 1.0) * (1 - 0.3 * rec_nar)
        q = (lx / half_w) ** 2 + ((d - dc) / half_ap) ** 2
        sac = _ramp((1 - q) * half_ap / 2, pw) * sac_tail
        _paint(img, sac, tv["csf"])
        if ci and tv["_mode"] != "label":  # flow voids show on T2/STIR only (CSF is dark on T1 anyway)
            for fs, fd, fx, fr, depth in self.flow:
                q = ((s - fs) / (2 * fr)) ** 2 + ((d - dc - fd * half_ap) / fr) ** 2 + ((lx - fx) / fr) ** 2
                _paint(img, _ramp((1 - q) * fr / 2, pw) * sac, tv["csf"] * (1 - depth))
        r_rec = 4.0 * size * (1 - rec_nar)
        q = ((alx - (cw / 2 - 2.0)) / r_rec) ** 2 + ((d - (a_ap + 4.0)) / r_rec) ** 2
        _paint(img, _ramp((1 - q) * r_rec / 2, pw) * sac_tail, tv["csf"])
        rn = 1.4 * size * (1 - 0.3 * rec_nar)
        q = ((alx - (cw / 2 - 2.0)) / rn) ** 2 + ((d - (a_ap + 4.0)) / rn) ** 2
        _paint(img, _ramp((1 - q) * rn / 2, pw) * sac_tail, tv["nerve"])
        # Cauda equina lies dependently (posterior, patient supine); above the conus it is the cord.
        cord = s > self.conus_s
        rb_w = np.where(cord, 5.0 * size, 0.3 * cw / 2)
        rb_a = np.where(cord, 4.0 * size, 2.2 * size)
        bc = np.where(cord, dc, d_post - rb_a - 0.6)
        q = (lx / rb_w) ** 2 + ((d - bc) / rb_a) ** 2
        _paint(img, _ramp((1 - q) * rb_a / 2, pw) * sac, np.where(cord, tv["cord"], tv["nerve"]))

        # Bodies (cortex rim, textured marrow) and discs (annulus, nucleus, posterior bulge).
        sacral = s < self.s_disc[-1]
        taper = np.where(sacral, np.clip(1 + (s - self.s_disc[-1]) / 110.0, 0.35, 1.0), 1.0)
        aap, alat = a_ap * taper, self.a_lat * taper
        in_body_s = _ramp(np.abs(ds) - hd / 2, pw)
        q = (lx / alat) ** 4 + (d / aap) ** 4
        body = _ramp((1 - q) * aap / 4, pw) * in_body_s
        _paint(img, body, tv["cortex"])
        q = (lx / (alat - 1.3)) ** 4 + (d / (aap - 1.3)) ** 4
        marrow = _ramp((1 - q) * aap / 4, pw) * _ramp(np.abs(ds) - hd / 2 - 1.3, pw)
        marrow_v = self.marrow[ci] if tv["_mode"] == "real" else tv["marrow"]
        _paint(img, marrow, marrow_v * self._tex(tv, s, d, lx, 0.07))
        rel = 0.6 if self.var.transitional == "lumbarized" else self.var.sacral_remnant
        if rel > 0:
            # A formed S1/S2 disc (lumbarized: a sixth "lumbar" disc) or a thin remnant line: either is a disc-like
            # band in the sacrum that makes counting from the lowest disc ambiguous.
            h12 = rel * self.h_disc[-1]
            s12 = self.s_disc[-1] - self.h_disc[-1] / 2 - 24.0 * size - h12 / 2
            band = _ramp(h12 / 2 - np.abs(s - s12), pw) * body
            _paint(img, band, tv["annulus"])
            q = (lx / (0.5 * self.a_lat)) ** 2 + (d / (0.45 * a_ap)) ** 2 + ((s - s12) / (0.3 * h12)) ** 2
            nv = ((0.3 + 0.6 * 0.5) if ci else 0.34) if tv["_mode"] == "real" else tv["nucleus"]
            _paint(img, _ramp((1 - q) * h12 * 0.15, pw) * band, nv)
        bulge = (d_ant - d_ant0) + 1.0
        cp = np.clip(1 - (lx / (cw / 2 + 3)) ** 2, 0, None)
        a_post = np.where(d > 0, a_ap + bulge * cp, a_ap)
        q = (lx / (self.a_lat * 1.02)) ** 4 + (d / a_post) ** 4
        disc = _ramp((1 - q) * a_ap / 4, pw) * _ramp(hd / 2 + 0.3 - np.abs(ds), pw)
        _paint(img, disc, tv["annulus"])
        hyd = self.hydration[j].astype(np.float32)
        if tv["_mode"] == "real":
            nuc_v = (0.3 + 0.6 * hyd) if ci else (0.28 + 0.12 * hyd)
        elif tv["_mode"] == "table":
            nuc_v = tv["nucleus"] * (0.45 + 0.55 * hyd)
        else:
            nuc_v = tv["nucleus"]
        q = (lx / (0.55 * self.a_lat)) ** 2 + (d / (0.5 * a_ap)) ** 2 + (ds / (0.3 * hd)) ** 2
        _paint(img, _ramp((1 - q) * hd * 0.15, pw) * disc, nuc_v)
        return img

    def _tex(self, tv: dict, s, d, lx, amp: float) -> np.ndarray | float:
        """Marrow texture, or 1 for label maps (a label is one code)."""
        return 1.0 if tv["_mode"] == "label" else self._texture(s, d, lx, amp)

    def _texture(self, s, d, lx, amp: float) -> np.ndarray:
        """Smooth multiplicative texture 1 +- amp from three random plane waves."""
        t = np.zeros_like(s)
        for k, ph in zip(self.tex_k, self.tex_phase):
            t += np.cos(s * k[0] + d * k[1] + lx * k[2] + ph)
        return 1.0 + (amp / 3.0) * t
