"""Each anatomical / acquisition variation shows when switched on and is absent when off (no DICOM written)."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from radspine.constants import CONDITIONS, LEVELS
from radspine.synth import QuirkConfig
from radspine.synth.anatomy import LEVEL_DISC, Patient, Variation
from radspine.synth.labels import StudyLatents
from radspine.synth.render import plan_sagittal, render_series

OFF = QuirkConfig.none()


def _lat(sev: float = 0.05, cond: str | None = None, level: str = "l4_l5", high: float = 0.95) -> StudyLatents:
    s = np.full((5, 5), sev)
    if cond is not None:
        s[CONDITIONS.index(cond), LEVELS.index(level)] = high
    return StudyLatents(age=0.0, degeneration=np.zeros(5), severity=s, grade=(s * 3).astype(int).clip(0, 2),
                        blank=np.zeros((5, 5), bool))


def _patient(q: QuirkConfig, seed: int = 0, var_seed: int = 1, lat: StudyLatents | None = None) -> Patient:
    return Patient.sample(np.random.default_rng(seed), lat or _lat(), Variation.sample(np.random.default_rng(var_seed), q))


def _angle(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.rad2deg(np.arccos(np.clip(a @ b, -1, 1))))


def test_off_is_the_clean_arc_and_on_round_trips():
    clean = _patient(OFF)
    assert clean.var.plain and clean.line is None
    q = dataclasses.replace(OFF, lordosis_variation=1.0, scoliosis=1.0, spondylolisthesis=1.0)
    p = _patient(q)
    assert p.line is not None and p.var.scol_amp != 0 and p.var.slip_disc >= 0
    rng = np.random.default_rng(2)
    sdl = np.stack([rng.uniform(-120, 120, 30), rng.uniform(-40, 70, 30), rng.uniform(-50, 50, 30)], 1)
    world = np.stack([p.to_world(*row) for row in sdl])
    back = np.stack(p.spine_coords(world.astype(np.float32)), 1)  # the renderer's (tabulated) coordinates
    assert np.abs(back - sdl).max() < 0.1  # mm


def test_lordosis_varies_along_the_spine_with_a_sharp_lumbosacral_angle():
    seg_lo, seg_hi = [], []
    for seed in range(6):
        p = _patient(dataclasses.replace(OFF, lordosis_variation=1.0), seed=seed, var_seed=seed)
        t = [p.tangent(p.s_disc[LEVEL_DISC[lv]]) for lv in LEVELS]
        seg_lo.append(_angle(t[0], t[1]))  # L1/L2 -> L2/L3
        seg_hi.append(_angle(t[3], t[4]))  # L4/L5 -> L5/S1
        total = _angle(t[0], t[4])
        assert 25.0 < total < 75.0  # L1/L2-L5/S1 lordosis of a supine adult
        c = _patient(OFF, seed=seed)
        tc = [c.tangent(c.s_disc[LEVEL_DISC[lv]]) for lv in LEVELS]
        # The clean arc bends the same at every level (uniform curvature) ...
        assert _angle(tc[0], tc[1]) / _angle(tc[3], tc[4]) == pytest.approx(
            (c.s_disc[2] - c.s_disc[3]) / (c.s_disc[5] - c.s_disc[6]), rel=0.02)
    # ... the varied spine bends far more at the bottom.
    assert np.mean(seg_hi) > 2.0 * np.mean(seg_lo)


def test_scoliosis_shifts_tilts_and_rotates():
    q = dataclasses.replace(OFF, scoliosis=1.0)
    p = _patient(q, var_seed=3)
    amp = p.var.scol_amp
    xs = np.array([p.midline_x(LEVEL_DISC[lv]) for lv in LEVELS])
    assert np.ptp(xs) > 0.3 * abs(amp) and np.ptp(xs) > 2.0  # the canal leaves the sagittal midline
    tilt = max(abs(p.tangent(p.s_disc[LEVEL_DISC[lv]])[0]) for lv in LEVELS)
    assert tilt > 0.03  # disc planes tilt in the coronal plane
    # Axial rotation at the apex: the spinous process swings to the concave side (opposite the shift).
    apex = p.s_disc[p.var.scol_apex]
    tip = p.to_world(apex, p.a_ap + p.canal_ap + 30.0, 0.0)
    body = p.to_world(apex, 0.0, 0.0)
    assert np.sign(tip[0] - body[0]) == -np.sign(amp) and abs(tip[0] - body[0]) > 1.0
    assert not _patient(OFF).var.scol_amp


def test_spondylolisthesis_moves_the_upper_vertebra_anteriorly():
    q = dataclasses.replace(OFF, spondylolisthesis=1.0)
    p = _patient(q, var_seed=5)
    k = p.var.slip_disc
    assert 2 <= k <= 6 and 2.0 <= p.var.slip_mm <= 8.0
    clean = Patient.sample(np.random.default_rng(0), _lat(), dataclasses.replace(p.var, slip_disc=-1, slip_mm=0.0))
    above, below = p.s_disc[k] + 15.0, p.s_disc[k] - 15.0  # body centres either side of the disc
    post = p.posterior(p.s_disc[k])
    shift_above = (p.to_world(above, 0, 0) - clean.to_world(above, 0, 0)) @ post
    shift_below = (p.to_world(below, 0, 0) - clean.to_world(below, 0, 0)) @ post
    assert shift_above == pytest.approx(-p.var.slip_mm, abs=0.3)  # anterior = -posterior
    assert abs(shift_below) < 0.05


def test_transitional_and_degenerated_discs():
    sac = Variation(transitional="sacralized", disc_scale=np.r_[np.ones(6), 0.3])
    base = Patient.sample(np.random.default_rng(0), _lat(), Variation())
    p = Patient.sample(np.random.default_rng(0), _lat(), sac)
    assert p.h_disc[-1] == pytest.approx(0.3 * base.h_disc[-1])
    # Lumbarized: a formed S1/S2 disc, bright on T2 where the clean sacrum is marrow.
    lum = Patient.sample(np.random.default_rng(0), _lat(), Variation(transitional="lumbarized"))
    h12 = 0.6 * lum.h_disc[-1]
    s12 = lum.s_disc[-1] - lum.h_disc[-1] / 2 - 24.0 * lum.size - h12 / 2
    pt = lum.to_world(s12, 0.0, 0.0)[None]
    assert lum.render(pt, "T2", 0.5)[0] > base.render(pt, "T2", 0.5)[0] + 0.1
    # Degeneration: a severe canal/foraminal level loses disc height and its nucleus darkens on T2.
    sick = _lat(cond="spinal_canal_stenosis", level="l4_l5")
    deg = Variation(degeneration=1.0)
    a = Patient.sample(np.random.default_rng(0), sick, Variation())
    b = Patient.sample(np.random.default_rng(0), sick, deg)
    i = LEVEL_DISC["l4_l5"]
    assert b.h_disc[i] < 0.92 * a.h_disc[i] and b.hydration[i] < a.hydration[i] - 0.1
    assert b.h_disc[i - 1] > 0.97 * a.h_disc[i - 1]  # healthy neighbour barely changes
    centre = [q.to_world(q.s_disc[i], 0.0, 0.0)[None] for q in (a, b)]
    assert b.render(centre[1], "T2", 0.5)[0] < a.render(centre[0], "T2", 0.5)[0] - 0.05


def test_sacral_remnant_is_a_thin_disc_line_below_l5_s1_that_leaves_other_draws_alone():
    base = Patient.sample(np.random.default_rng(0), _lat(), Variation())
    rem = Patient.sample(np.random.default_rng(0), _lat(), Variation(sacral_remnant=0.25))
    h12 = 0.25 * rem.h_disc[-1]
    s12 = rem.s_disc[-1] - rem.h_disc[-1] / 2 - 24.0 * rem.size - h12 / 2
    at = [rem.to_world(s12 + ds, 0.0, 0.0)[None] for ds in (0.0, 4.0, -4.0)]
    assert rem.render(at[0], "T2", 0.5)[0] > base.render(at[0], "T2", 0.5)[0] + 0.05  # the line itself
    for pt in at[1:]:  # 4 mm away it is sacrum again: a thin line, not a formed disc
        assert rem.render(pt, "T2", 0.5)[0] == pytest.approx(base.render(pt, "T2", 0.5)[0], abs=1e-6)
    on = QuirkConfig(**{**dataclasses.asdict(OFF), "sacral_remnant": 1.0})
    for seed in range(10):
        a, b = (Variation.sample(np.random.default_rng(seed), q) for q in (OFF, on))
        assert a.sacral_remnant == 0.0 and 0.15 <= b.sacral_remnant <= 0.35
        assert dataclasses.replace(b, sacral_remnant=0.0).plain == a.plain and b.transitional == a.transitional
    assert QuirkConfig().sacral_remnant == 0.0  # the grading phantom's default stays unchanged


def _sag(q: QuirkConfig, **flags) -> tuple[np.ndarray, object, Patient]:
    pat = _patient(OFF)
    plan = plan_sagittal(np.random.default_rng(7), pat, 64, "Sagittal T2/STIR", "T2", 1, 1)
    for k, v in flags.items():
        setattr(plan, k, v)
    pix, slope, _ = render_series(np.random.default_rng(8), pat, plan, "SIEMENS", vrng=np.random.default_rng(9))
    return pix.astype(np.float64) * slope, plan, pat


def test_partial_volume_blurs_through_the_slab():
    sharp, plan, pat = _sag(OFF)
    blur, _, _ = _sag(OFF, partial_volume=True)
    assert sharp.shape == blur.shape and not np.array_equal(sharp, blur)
    # Along a left-right line through the canal (the slice normal) the anatomy changes within a slab:
    # the slab-averaged signal is the mean of its two half-slab planes, not the centre plane's.
    n = np.cross(plan.row_cos[0], plan.col_cos[0])
    centre = pat.to_world(pat.s_disc[LEVEL_DISC["l3_l4"]], pat.canal_center_d(LEVEL_DISC["l3_l4"]), 0.0)
    pts = np.stack([centre + (w - 15.0) * np.array([1.0, 0, 0]) for w in np.arange(0, 30, 0.25)])
    slab = np.broadcast_to(n * plan.thickness / 4, pts.shape).astype(np.float32)
    one = pat.render(pts.astype(np.float32), "T2", 0.5)
    avg = pat.render(pts.astype(np.float32), "T2", 0.5, slab=slab)
    lo = pat.render((pts - slab).astype(np.float32), "T2", 0.5)
    hi = pat.render((pts + slab).astype(np.float32), "T2", 0.5)
    assert np.allclose(avg, (lo + hi) / 2, atol=1e-5)  # the 2-point slab average
    assert not np.allclose(avg, one, atol=1e-3)


def test_ghosting_and_wrap_put_signal_where_there_was_none():
    base, plan, _ = _sag(OFF)
    ghost, _, _ = _sag(OFF, ghosting=True, phase_axis=1)
    wrap, _, _ = _sag(OFF, wrap=True, phase_axis=1)
    # The columns beyond the patient's back are air (noise only) in the clean image.
    air = base.mean(axis=(0, 1)) < 0.1 * base.max()
    assert air.sum() >= 3
    assert ghost[:, :, air].mean() > 2.0 * base[:, :, air].mean()  # ghost copies along the phase axis
    assert wrap[:, :, air].mean() > 2.0 * base[:, :, air].mean()  # the abdomen folded in from the front
    m = round(0.3 * plan.cols)  # folded margin; the FOV's middle is untouched (same noise draws)
    assert np.array_equal(wrap[:, :, m:-m], base[:, :, m:-m])


def test_wide_intensity_scale_reaches_the_pixels():
    pat = _patient(OFF)
    plan = plan_sagittal(np.random.default_rng(7), pat, 32, "Sagittal T1", "T1", 1, 1)
    lo, s_lo, _ = render_series(np.random.default_rng(8), pat, plan, "GE MEDICAL SYSTEMS", scale=100.0)
    hi, s_hi, _ = render_series(np.random.default_rng(8), pat, plan, "GE MEDICAL SYSTEMS", scale=15000.0)
    ratio = np.percentile(hi * s_hi, 99) / np.percentile(lo * s_lo, 99)
    assert ratio == pytest.approx(150.0, rel=0.1) and hi.max() <= 65535


def test_variation_rates_switch_on_and_off():
    on = [Variation.sample(np.random.default_rng(s), QuirkConfig.all_on()) for s in range(20)]
    assert all(v.lordosis is not None and v.scol_amp and v.slip_disc >= 2 and v.transitional for v in on)
    off = [Variation.sample(np.random.default_rng(s), OFF) for s in range(20)]
    assert all(v.plain and not v.transitional and v.degeneration == 0 for v in off)
    default = [Variation.sample(np.random.default_rng(s), QuirkConfig()) for s in range(400)]
    scol = np.mean([bool(v.scol_amp) for v in default])
    assert abs(scol - QuirkConfig().scoliosis) < 0.05
    assert all(v.lordosis is not None for v in default)
