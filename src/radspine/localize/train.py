"""Training of the localizer from train_label_coordinates.csv, its held-out report, and OOF points."""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass, replace
from functools import partial
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radspine.constants import CONDITION_KEYS, CONDITIONS, LEVEL_KEYS, LEVELS
from radspine.errors import DatasetError, RadspineError
from radspine.geometry import instance_to_world, orientation_of
from radspine.io.volumes import StudyVolumes, load_study_volumes
from radspine.localize.canon import PlaneFrame
from radspine.localize.config import LocalizerConfig
from radspine.localize.infer import (
    CANAL,
    DEFAULT_LEVEL_CALIBRATION,
    FORA,
    HEAD_OF,
    N_AX,
    N_SAG,
    SACRUM,
    SACRUM_STEP,
    SIDE_CONDITIONS,
    SUBS,
    Localizer,
    fallback_rows,
    shipped_localizer_dir,
)
from radspine.localize.net import HeatmapUNet, gaussian_maps
from radspine.torchutil import resolve_device, torch_threads
from radspine.types import Volume

log = logging.getLogger(__name__)

AX_SIGMA_MM = 3.6  # axial target width (mm)
__all__ = ["CANAL", "FORA", "SUBS", "SIDE_CONDITIONS", "train_localizer", "oof_points", "evaluate"]
# Architecture fields taken from the init model when fine-tuning (the weights must fit).
ARCH_FIELDS = ("base_channels", "sag_depth", "ax_depth")


@dataclass(frozen=True)
class TruthPoint:
    """A labelled point resolved through DICOM geometry."""

    world: np.ndarray
    series_id: int
    instance_number: int
    vol: Volume | None  # only while the study's samples are cut; dropped after, so no study stays decoded


@dataclass
class Samples:
    """Training tensors: images (N, 3, H, W) float16; peaks (N, C, 2, 3) = (row, col, amp), NaN if none;
    channel masks (N, C) (0 where the label is missing, so absent labels teach nothing); sigma (N,) the
    Gaussian target width in px of each sample (its grid spacing varies)."""

    x: np.ndarray
    peaks: np.ndarray
    mask: np.ndarray
    sigma: np.ndarray

    @staticmethod
    def concat(items: list[Samples], n_ch: int, size: int) -> Samples:
        items = [s for s in items if len(s.x)]
        if not items:
            return Samples(np.zeros((0, 3, size, size), np.float16), np.zeros((0, n_ch, 2, 3)), np.zeros((0, n_ch)),
                           np.zeros(0, np.float32))  # fmt: skip
        return Samples(*(np.concatenate([getattr(s, f) for s in items]) for f in ("x", "peaks", "mask", "sigma")))


def normalised_coordinates(coords: pd.DataFrame) -> pd.DataFrame:
    """Coordinates with snake-case condition/level keys whatever the input spelling (CSV or io)."""
    df = coords.copy()
    df["condition"] = df["condition"].map(lambda c: CONDITION_KEYS.get(c, c))
    df["level"] = df["level"].map(lambda lv: LEVEL_KEYS.get(lv, lv))
    return df


def resolve_truth(vols: StudyVolumes, coords: pd.DataFrame) -> dict[tuple[str, str], TruthPoint]:
    """World positions of a study's labelled points; labels whose instance is not in a read stack are dropped."""
    stacks = vols.all()
    out = {}
    for r in coords.itertuples(index=False):
        for vol in stacks:
            if vol.series_id == int(r.series_id) and np.any(vol.instance_numbers == int(r.instance_number)):
                world = instance_to_world(vol, float(r.x), float(r.y), int(r.instance_number))
                out[(r.condition, r.level)] = TruthPoint(world, int(r.series_id), int(r.instance_number), vol)
                break
    return out


def _sag_samples(vol: Volume, truth: dict, cfg: LocalizerConfig, rng: np.random.Generator) -> Samples:
    """Crops of one sagittal stack at random spacing in [fine, coarse] mm: ``crops_per_plane`` around each
    labelled plane (centred on the spine ± ``jitter_mm``, so the spine may sit near or past an edge) plus
    ``random_planes_per_series`` background crops anywhere in the stack and the FOV."""
    base = PlaneFrame.build(vol, "sagittal", cfg.sag_spacing_mm, cfg.sag_size)
    lo, hi = base.offset_range()
    u0, u1, v0, v1 = base.extent()
    canal = {lv: truth[(CANAL, lv)].world for lv in LEVELS if (CANAL, lv) in truth}
    sides = [{lv: truth[(c, lv)].world for lv in LEVELS if (c, lv) in truth} for c in FORA]
    groups = [g for g in (canal, *sides) if g]
    n_ch = sag_channels(cfg)
    if not groups:
        return Samples.concat([], n_ch, cfg.sag_size)
    # The sacrum target: the canal behind the upper S1 body, a fraction of a disc step below L5/S1.
    sacrum = (canal["l5_s1"] + SACRUM_STEP * (canal["l5_s1"] - canal["l4_l5"])
              if cfg.sacrum_channel and "l5_s1" in canal and "l4_l5" in canal else None)  # fmt: skip
    allpts = np.stack([w for g in groups for w in g.values()])
    rel = allpts.mean(axis=0) - base.origin
    cu, cv = float(rel @ base.u), float(rel @ base.v)
    planes = [float(np.median([(w - base.origin) @ base.normal for w in g.values()])) for g in groups]
    specs = []  # (d, spacing, su, sv)
    for d in planes:
        for _ in range(cfg.crops_per_plane):
            sp = float(rng.uniform(cfg.sag_fine_spacing_mm, cfg.sag_spacing_mm))
            j = min(cfg.jitter_mm, 0.45 * cfg.sag_size * sp)
            specs.append((d + rng.normal(0, 1.0), sp, cu + rng.uniform(-j, j), cv + rng.uniform(-j, j)))
    for _ in range(cfg.random_planes_per_series):
        sp = float(rng.uniform(cfg.sag_fine_spacing_mm, cfg.sag_spacing_mm))
        specs.append((float(rng.uniform(lo, hi)), sp, float(rng.uniform(u0, u1)), float(rng.uniform(v0, v1))))
    n = len(specs)
    peaks = np.full((n, n_ch, 2, 3), np.nan)
    mask = np.zeros((n, n_ch), np.float32)
    xs = np.zeros((n, 3, cfg.sag_size, cfg.sag_size), np.float16)
    sig = np.zeros(n, np.float32)
    s2 = 2 * cfg.sigma_slice_mm**2
    for i, (d, sp, su, sv) in enumerate(specs):
        fr = base.with_grid(sp, cfg.sag_size)
        xs[i] = fr.sample(np.array([d]), np.array([[su, sv]]), cfg.channel_offset_mm)[0]
        sig[i] = cfg.sigma_mm / sp
        for li, lv in enumerate(LEVELS):
            for ch, pts in ((li, [canal.get(lv)]), (5 + li, [s.get(lv) for s in sides])):
                if any(p is None for p in pts):
                    continue
                mask[i, ch] = 1.0
                for j, w in enumerate(pts):
                    pd_, prow, pcol = fr.to_frame(w)
                    peaks[i, ch, j] = (prow - sv / sp, pcol - su / sp, np.exp(-((d - pd_) ** 2) / s2))
        if sacrum is not None:
            mask[i, SACRUM] = 1.0
            pd_, prow, pcol = fr.to_frame(sacrum)
            peaks[i, SACRUM, 0] = (prow - sv / sp, pcol - su / sp, np.exp(-((d - pd_) ** 2) / s2))
    return Samples(xs, peaks, mask, sig)


def sag_channels(cfg: LocalizerConfig) -> int:
    """Output channels of the sagittal net: 5 canal levels, 5 foramen levels, and the sacrum if configured."""
    return N_SAG + int(cfg.sacrum_channel)


def _ax_samples(truth: dict, cfg: LocalizerConfig, rng: np.random.Generator, n_per_level: int = 2) -> Samples:
    frames: dict[int, PlaneFrame] = {}
    xs, peaks, masks = [], [], []
    c = (cfg.ax_size - 1) / 2.0
    s2 = 2 * cfg.sigma_slice_mm**2
    for lv in LEVELS:
        pts = [truth.get((cond, lv)) for cond in SUBS]
        anchor = next((p for p in pts if p is not None and orientation_of(p.vol) == "axial"), None)
        if anchor is None or not any(p is not None for p in pts):
            continue
        vol = anchor.vol
        frame = frames.setdefault(id(vol), PlaneFrame.build(vol, "axial", cfg.ax_spacing_mm, cfg.ax_size))
        k = vol.slice_index(anchor.instance_number)
        d0 = float(frame.offsets[k])
        centre = np.mean([p.world for p in pts if p is not None], axis=0)
        _, crow, ccol = frame.to_frame(centre)
        # The labelled slice, plus one crop on each other slice within the inference search radius: their
        # targets fade with the distance to the labelled plane, so the net's peak tells the slices apart.
        near = np.flatnonzero(np.abs(frame.offsets - d0) <= cfg.ax_slice_search_mm)
        planes = [d0] * n_per_level + [float(frame.offsets[j]) for j in near if j != k]
        for d in planes:
            su = (ccol - c) * cfg.ax_spacing_mm + rng.uniform(-cfg.ax_jitter_mm, cfg.ax_jitter_mm)
            sv = (crow - c) * cfg.ax_spacing_mm + rng.uniform(-cfg.ax_jitter_mm, cfg.ax_jitter_mm)
            pk = np.full((N_AX, 2, 3), np.nan)
            m = np.zeros(N_AX, np.float32)
            for ch, p in enumerate(pts):
                if p is None:
                    continue
                pd_, prow, pcol = frame.to_frame(p.world)
                pk[ch, 0] = (prow - sv / cfg.ax_spacing_mm, pcol - su / cfg.ax_spacing_mm, np.exp(-((d - pd_) ** 2) / s2))
                m[ch] = 1.0
            xs.append(frame.sample(np.array([d]), np.array([[su, sv]]), cfg.channel_offset_mm)[0].astype(np.float16))
            peaks.append(pk)
            masks.append(m)
    if not xs:
        return Samples.concat([], N_AX, cfg.ax_size)
    return Samples(np.stack(xs), np.stack(peaks), np.stack(masks), np.full(len(xs), AX_SIGMA_MM / cfg.ax_spacing_mm,
                                                                            np.float32))


def study_samples(vols: StudyVolumes, truth: dict, cfg: LocalizerConfig, seed: int) -> tuple[Samples, Samples]:
    """(sagittal, axial) training samples of one study; deterministic for a given seed."""
    rng = np.random.default_rng(seed)
    sag = [_sag_samples(v, truth, cfg, rng) for v in (vols.sag_t2, vols.sag_t1) if v is not None]
    return Samples.concat(sag, sag_channels(cfg), cfg.sag_size), _ax_samples(truth, cfg, rng)


def _render(peaks: np.ndarray, size: int, sigma: np.ndarray) -> np.ndarray:
    b, ch, p, _ = peaks.shape
    flat = peaks.reshape(-1, 3)
    sig = np.repeat(np.asarray(sigma, np.float32), ch * p)
    maps = gaussian_maps(size, flat[:, 0], flat[:, 1], flat[:, 2], sig)
    return maps.reshape(b, ch, p, size, size).max(axis=2)


def _monai_intensity(seed: int):
    """MONAI random bias field, blur, gamma and noise (per sample, channel-first), seeded."""
    from monai.transforms import (
        Compose,
        RandAdjustContrast,
        RandBiasField,
        RandGaussianNoise,
        RandGaussianSmooth,
    )

    tf = Compose([
        RandBiasField(degree=3, coeff_range=(0.0, 0.4), prob=0.5),
        RandGaussianSmooth(sigma_x=(0.3, 1.2), sigma_y=(0.3, 1.2), prob=0.3),
        RandAdjustContrast(gamma=(0.6, 1.6), prob=0.5),
        RandGaussianNoise(prob=0.5, mean=0.0, std=0.05),
    ])
    tf.set_random_state(seed=seed)
    return tf


def _augment(x: np.ndarray, rng: np.random.Generator, monai_tf=None) -> np.ndarray:
    """Intensity augmentation: gain/gamma/noise; with ``monai_tf`` also a random intensity curve per sample
    (non-monotone a third of the time: other tissue orderings, T1/T2/STIR-like), inversion, bias, blur.
    The grids are canonical, so no geometric flips."""
    b = len(x)
    x = x.astype(np.float32)
    if monai_tf is not None:
        knots = np.linspace(0.0, 1.0, 6)
        out = np.empty_like(x)
        for i in range(b):
            xi = x[i]
            u = rng.random()
            if u < 0.35:  # any ordering of tissues
                xi = np.interp(xi, knots, rng.uniform(0.0, 1.0, len(knots))).astype(np.float32)
            elif u < 0.55:  # inverted ordering
                xi = 1.0 - xi
            xi = np.asarray(monai_tf(xi), dtype=np.float32)
            lo, hi = np.percentile(xi, [0.5, 99.5])
            out[i] = np.clip((xi - lo) / max(hi - lo, 1e-3), 0, 1)
        x = out
    gamma = np.exp(rng.uniform(np.log(0.6), np.log(1.6), (b, 1, 1, 1)))
    gain = rng.uniform(0.75, 1.25, (b, 1, 1, 1))
    noise = rng.normal(0, 1, x.shape) * rng.uniform(0, 0.05, (b, 1, 1, 1))
    return np.clip(np.power(np.clip(x, 0, None), gamma) * gain + noise, 0, 1.5).astype(np.float32)


def _fit_head(state: dict, net: HeatmapUNet) -> dict:
    """``state`` with its output head resized to ``net``'s channel count: a model without the sacrum channel
    fine-tunes into one with it (the new channel starts as the head's untrained init), and back."""
    own = net.state_dict()
    state = dict(state)
    for key in ("head.weight", "head.bias"):
        if key in state and state[key].shape != own[key].shape:
            new = own[key].clone()
            k = min(new.shape[0], state[key].shape[0])
            new[:k] = state[key][:k]
            state[key] = new
    return state


def fit_heatmap_net(samples: Samples, n_ch: int, depth: int, cfg: LocalizerConfig, seed: int,
                    epochs: int | None = None, init_state: dict | None = None,
                    strong: bool | None = None) -> HeatmapUNet | None:  # fmt: skip
    """Train a :class:`HeatmapUNet` on samples with weighted BCE against Gaussian targets.

    Returns None when there are no samples (a head without labels). ``init_state``: start from these
    weights (fine-tuning). ``strong`` (default ``cfg.strong_augment``): MONAI/random-curve intensity augmentation.
    """
    torch.manual_seed(seed)
    rng = np.random.default_rng(seed)
    device = resolve_device(cfg.device)
    n = len(samples.x)
    if n == 0 or not samples.mask.any():
        return None
    net = HeatmapUNet(3, n_ch, cfg.base_channels, depth)
    if init_state is not None:
        net.load_state_dict(_fit_head(init_state, net))
    net = net.to(device)
    epochs = epochs or cfg.epochs
    strong = cfg.strong_augment if strong is None else strong
    monai_tf = _monai_intensity(seed) if strong else None
    steps = epochs * max(1, int(np.ceil(n / cfg.batch_size)))
    opt = torch.optim.AdamW(net.parameters(), lr=cfg.lr, weight_decay=1e-4)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=cfg.lr, total_steps=steps, pct_start=0.2)
    size = samples.x.shape[-1]
    net.train()
    t0 = time.perf_counter()
    for epoch in range(epochs):
        perm = rng.permutation(n)
        total, count = 0.0, 0
        for i in range(0, n, cfg.batch_size):
            idx = np.sort(perm[i : i + cfg.batch_size])
            if len(idx) < 2:  # BatchNorm needs more than one sample
                continue
            x = torch.from_numpy(_augment(samples.x[idx], rng, monai_tf)).to(device)
            y = torch.from_numpy(_render(samples.peaks[idx], size, samples.sigma[idx])).to(device)
            m = torch.from_numpy(samples.mask[idx].astype(np.float32)).to(device)[:, :, None, None]
            logits = net(x)
            # Foreground pixels are ~0.1% of the map: up-weight them so peaks (and their amplitude) are learned.
            w = (1.0 + 20.0 * y) * m
            loss = (torch.nn.functional.binary_cross_entropy_with_logits(logits, y, reduction="none") * w).sum()
            loss = loss / w.sum().clamp_min(1.0)
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            sched.step()
            total, count = total + float(loss.detach()), count + 1
        log.info("localizer %s-net epoch %d/%d: loss %.4f (%d samples, %.0f s)", "sag" if n_ch >= N_SAG else "ax",
                 epoch + 1, epochs, total / max(count, 1), n, time.perf_counter() - t0)
    return net.eval()


def predictable_conditions(sag: Samples, ax: Samples) -> list[str]:
    """Condition keys with training labels: canal / foramina from sagittal masks, subarticular from axial."""
    out = []
    if len(sag.mask) and sag.mask[:, :5].any():
        out.append(CANAL)
    if len(sag.mask) and sag.mask[:, 5:10].any():
        out.extend(FORA)
    if len(ax.mask) and ax.mask.any():
        out.extend(SUBS)
    return [c for c in CONDITIONS if c in out]


def fit_calibration(pred: pd.DataFrame, truths: dict[int, dict], min_points: int = 20) -> dict:
    """Per head: isotonic map from the uncalibrated confidence to P(error ≤ 10 mm), as (x, y) knots."""
    from sklearn.isotonic import IsotonicRegression

    from radspine.constants import CONDITION_NAMES

    name_to_key = {v: k for k, v in CONDITION_NAMES.items()}
    acc: dict[str, tuple[list, list]] = {}
    for r in pred.itertuples(index=False):
        cond, lv = name_to_key[r.condition], LEVEL_KEYS[r.level]
        tp = truths.get(int(r.study_id), {}).get((cond, lv))
        pw = np.array([r.world_x, r.world_y, r.world_z])
        if tp is None or not np.all(np.isfinite(pw)):
            continue
        xs, ys = acc.setdefault(HEAD_OF[cond], ([], []))
        xs.append(float(r.confidence))
        ys.append(float(np.linalg.norm(pw - tp.world) <= 10.0))
    out = {}
    for head, (xs, ys) in acc.items():
        if len(xs) < min_points:
            continue
        iso = IsotonicRegression(y_min=0.0, y_max=1.0, out_of_bounds="clip").fit(xs, ys)
        kx = [0.0, *map(float, iso.X_thresholds_), 1.0]
        ky = [float(iso.predict([0.0])[0]), *map(float, iso.y_thresholds_), float(iso.predict([1.0])[0])]
        out[head] = (kx, ky)
    return out


def level_shift(pred: pd.DataFrame, truth: dict) -> int | None:
    """How many levels a study's predicted chain sits off (0 = right): the median, over its predicted canal points
    (else foramina), of own level index minus that of the nearest labelled point of the same condition."""
    from radspine.constants import CONDITION_NAMES

    name_to_key = {v: k for k, v in CONDITION_NAMES.items()}
    offs: dict[str, list[int]] = {}
    for r in pred.itertuples(index=False):
        cond, lv = name_to_key[r.condition], LEVEL_KEYS[r.level]
        pw = np.array([r.world_x, r.world_y, r.world_z])
        cands = {lv2: t.world for (c2, lv2), t in truth.items() if c2 == cond}
        if not cands or not np.all(np.isfinite(pw)) or cond not in (CANAL, *FORA):
            continue
        near = min(cands, key=lambda k: float(np.linalg.norm(cands[k] - pw)))
        offs.setdefault(HEAD_OF[cond], []).append(LEVELS.index(lv) - LEVELS.index(near))
    vals = offs.get("canal") or offs.get("foramina")
    return None if not vals else int(np.round(np.median(vals)))


def fit_level_calibration(pred: pd.DataFrame, truths: dict[int, dict], min_each: int = 3) -> tuple[dict, tuple | None]:
    """Refit the logistic map from the level-chain margin to P(levels not shifted) on held-out studies.

    The points carry ``level_confidence`` = sigmoid(a + b·margin) under the current curve, so its logit is an
    affine function of the margin: a logistic fit on the logit composes into new (a, b). Returns (counts,
    (a, b)), or (counts, None) when fewer than ``min_each`` studies are right or shifted (nothing to learn).
    """
    from scipy.special import logit
    from sklearn.linear_model import LogisticRegression

    xs, ys = [], []
    for sid, g in pred.groupby("study_id"):
        shift = level_shift(g, truths.get(int(sid), {}))
        conf = float(g["level_confidence"].iloc[0]) if "level_confidence" in g else np.nan
        if shift is None or not np.isfinite(conf):
            continue
        xs.append(float(logit(np.clip(conf, 1e-6, 1 - 1e-6))))
        ys.append(int(shift == 0))
    counts = {"studies": len(ys), "shifted": int(len(ys) - sum(ys))}
    if min(sum(ys), len(ys) - sum(ys)) < min_each:
        return counts, None
    lr = LogisticRegression(C=1.0).fit(np.array(xs)[:, None], np.array(ys))
    return counts, (float(lr.intercept_[0]), float(lr.coef_[0, 0]))


def confidence_check(pred: pd.DataFrame, truths: dict[int, dict], threshold: float = 0.9) -> dict:
    """Share of points within 10 mm among those with confidence ≥ threshold (and how many there are)."""
    from radspine.constants import CONDITION_NAMES

    name_to_key = {v: k for k, v in CONDITION_NAMES.items()}
    ok = []
    for r in pred.itertuples(index=False):
        tp = truths.get(int(r.study_id), {}).get((name_to_key[r.condition], LEVEL_KEYS[r.level]))
        pw = np.array([r.world_x, r.world_y, r.world_z])
        if tp is None or r.confidence < threshold:
            continue
        ok.append(bool(np.all(np.isfinite(pw)) and np.linalg.norm(pw - tp.world) <= 10.0))
    return {"threshold": threshold, "n": len(ok), "within_10mm": float(np.mean(ok)) if ok else None}


def learned_offsets(truths: list[dict]) -> dict:
    """Mean world offsets (mm) of the subarticular points from the canal point, per level."""
    out: dict[str, dict[str, list[float]]] = {"sub_mid": {}, "sub_left": {}, "sub_right": {}}
    for lv in LEVELS:
        acc: dict[str, list[np.ndarray]] = {"sub_mid": [], "sub_left": [], "sub_right": []}
        for t in truths:
            canal = t.get((CANAL, lv))
            left, right = t.get((SUBS[0], lv)), t.get((SUBS[1], lv))
            if canal is None:
                continue
            if left is not None:
                acc["sub_left"].append(left.world - canal.world)
            if right is not None:
                acc["sub_right"].append(right.world - canal.world)
            if left is not None and right is not None:
                acc["sub_mid"].append((left.world + right.world) / 2 - canal.world)
        # Fallbacks (no labels for this level): typical adult anatomy in LPS, recesses ±12 mm, 5 mm anterior.
        defaults = {"sub_mid": [0.0, -5.0, 0.0], "sub_left": [12.0, -5.0, 0.0], "sub_right": [-12.0, -5.0, 0.0]}
        for key, vals in acc.items():
            out[key][lv] = [float(v) for v in np.mean(vals, axis=0)] if vals else defaults[key]
    return out


def evaluate(pred: pd.DataFrame, truths: dict[int, dict]) -> dict:
    """Per-condition 3D error (mm), fraction within 5/10 mm, level and slice accuracy vs labelled points."""
    from radspine.constants import CONDITION_NAMES

    name_to_key = {v: k for k, v in CONDITION_NAMES.items()}
    per: dict[str, dict[str, list]] = {c: {"err": [], "level_ok": [], "slice_ok": []} for c in CONDITIONS}
    for r in pred.itertuples(index=False):
        truth = truths.get(int(r.study_id), {})
        cond, lv = name_to_key[r.condition], LEVEL_KEYS[r.level]
        tp = truth.get((cond, lv))
        if tp is None:
            continue
        pw = np.array([r.world_x, r.world_y, r.world_z])
        err = float(np.linalg.norm(pw - tp.world)) if np.all(np.isfinite(pw)) else np.inf
        per[cond]["err"].append(err)
        cands = {lv2: t.world for (c2, lv2), t in truth.items() if c2 == cond}
        nearest = min(cands, key=lambda k: np.linalg.norm(cands[k] - pw)) if np.all(np.isfinite(pw)) else None
        per[cond]["level_ok"].append(nearest == lv)
        per[cond]["slice_ok"].append(int(r.series_id) == tp.series_id and int(r.instance_number) == tp.instance_number)
    report: dict[str, dict] = {}
    all_err = []
    for cond, d in per.items():
        e = np.asarray(d["err"], dtype=np.float64)
        all_err.extend(e.tolist())
        if e.size == 0:
            report[cond] = {"n": 0}
            continue
        fin = e[np.isfinite(e)]
        report[cond] = {
            "n": int(e.size),
            "median_mm": float(np.median(e)),
            "mean_mm": float(fin.mean()) if fin.size else None,
            "p90_mm": float(np.percentile(e, 90)),
            "within_5mm": float(np.mean(e <= 5)),
            "within_10mm": float(np.mean(e <= 10)),
            "level_accuracy": float(np.mean(d["level_ok"])),
            "slice_accuracy": float(np.mean(d["slice_ok"])),
        }
    e = np.asarray(all_err)
    report["overall"] = {"n": int(e.size), "median_mm": float(np.median(e)) if e.size else None,
                         "within_5mm": float(np.mean(e <= 5)) if e.size else None,
                         "within_10mm": float(np.mean(e <= 10)) if e.size else None}  # fmt: skip
    return report


class _TrainData:
    """Per-study truth and samples of the labelled train studies, built once; volumes re-read on demand."""

    def __init__(self, loaders: dict[int, Callable[[], StudyVolumes]], coords: pd.DataFrame, cfg: LocalizerConfig,
                 seed: int, source: str = "dataset"):  # fmt: skip
        coords = normalised_coordinates(coords)
        by_study = {int(s): g for s, g in coords.groupby("study_id")}
        self.loaders = {sid: f for sid, f in loaders.items() if sid in by_study}
        if not self.loaders:
            raise DatasetError(f"{source}: no train study has rows in train_label_coordinates.csv")
        self.truth: dict[int, dict] = {}
        self.samples: dict[int, tuple[Samples, Samples]] = {}
        for sid in sorted(self.loaders):
            try:
                vols = self.loaders[sid]()
            except RadspineError as err:
                log.warning("study %s skipped for localizer training: %s", sid, err)
                continue
            truth = resolve_truth(vols, by_study[sid])
            self.samples[sid] = study_samples(vols, truth, cfg, seed * 100_003 + sid)
            # Keep the points, not the decoded stacks: 200 real-size studies held ~14 GB through them.
            self.truth[sid] = {k: replace(p, vol=None) for k, p in truth.items()}
        self.ids = sorted(self.samples)

    @classmethod
    def from_dataset(cls, data_dir: Path, cfg: LocalizerConfig, seed: int) -> _TrainData:
        """Labelled train studies of a dataset root (DICOM read through radspine.io)."""
        from radspine.io.dataset import Dataset

        ds = Dataset.open(Path(data_dir))
        loaders = {s.study_id: partial(load_study_volumes, s) for s in ds.studies("train")}
        return cls(loaders, ds.coordinates, cfg, seed, source=str(data_dir))

    def fit(self, ids: list[int], cfg: LocalizerConfig, seed: int, epochs: int | None = None,
            init: Localizer | None = None) -> Localizer:  # fmt: skip
        """Train every head that has labels among ``ids`` (sagittal and axial nets independently)."""
        sag = Samples.concat([self.samples[i][0] for i in ids], sag_channels(cfg), cfg.sag_size)
        ax = Samples.concat([self.samples[i][1] for i in ids], N_AX, cfg.ax_size)
        conditions = predictable_conditions(sag, ax)
        if not conditions:
            raise DatasetError("no labelled training points for the localizer (check train_label_coordinates.csv)")
        def state(net):
            return None if net is None else net.state_dict()

        sag_net = fit_heatmap_net(sag, sag_channels(cfg), cfg.sag_depth, cfg, seed, epochs,
                                  init_state=state(init.sag_net) if init is not None else None)  # fmt: skip
        ax_net = fit_heatmap_net(ax, N_AX, cfg.ax_depth, cfg, seed + 1, epochs,
                                 init_state=state(init.ax_net) if init is not None else None)  # fmt: skip
        if init is not None:  # heads without labels here keep the init model's (e.g. shipped) weights
            conds = set(conditions)
            if sag_net is None and init.sag_net is not None:
                sag_net = init.sag_net
                conds |= {c for c in (CANAL, *FORA) if c in init.conditions}
            if ax_net is None and init.ax_net is not None:
                ax_net = init.ax_net
                conds |= {c for c in SUBS if c in init.conditions}
            conditions = [c for c in CONDITIONS if c in conds]
        missing = [c for c in CONDITIONS if c not in conditions]
        if missing:
            log.warning("localizer: no training labels for %s; those points will be 'not localised'", ", ".join(missing))
        offsets = learned_offsets([self.truth[i] for i in ids])
        if init is not None and not any(self.truth[i].get((SUBS[0], lv)) for i in ids for lv in LEVELS):
            offsets = {k: {lv: list(v) for lv, v in d.items()} for k, d in init.offsets.items()}
        return Localizer(cfg, sag_net, ax_net, offsets, conditions)

    def predict(self, loc: Localizer, ids: list[int]) -> pd.DataFrame:
        frames = []
        for sid in ids:
            try:
                frames.append(loc.predict_volumes(sid, self.loaders[sid]()))
            except Exception as err:  # noqa: BLE001 - report/oof must survive one bad study
                log.warning("study %s: localisation failed: %s", sid, err)
                frames.append(fallback_rows(sid, f"failed: {type(err).__name__}: {err}".splitlines()[0]))
        return pd.concat(frames, ignore_index=True)


def load_init(init: str | Path | None, cfg: LocalizerConfig) -> tuple[Localizer | None, LocalizerConfig]:
    """The model to fine-tune from ("shipped", a bundle folder, or None) and ``cfg`` with its architecture."""
    if init is None:
        return None, cfg
    path = shipped_localizer_dir() if str(init) == "shipped" else Path(init)
    loc = Localizer.load(path, device=cfg.device, shipped_fallback=False)
    return loc, cfg.model_copy(update={k: getattr(loc.cfg, k) for k in ARCH_FIELDS})


def train_localizer(data_dir: Path, out_dir: Path, cfg: LocalizerConfig | None = None, seed: int = 0,
                    init: str | Path | None = "shipped") -> dict:  # fmt: skip
    """Train the localizer on train_label_coordinates.csv; write the bundle and ``localizer_report.json``.

    Every head with labels is trained (a set with only canal points gives a canal-only bundle; its meta
    lists the conditions it can predict). A ``cfg.holdout_frac`` share of labelled train studies is held
    out for the accuracy report and the confidence calibration; the saved model is trained on the
    remaining studies (so the report is honest about that very model). ``init="shipped"`` (or a bundle
    folder, the default) fine-tunes from that model's weights: the shipped one knows real anatomy, and on a
    small real set training from scratch did worse than not training at all. ``init=None`` trains from
    scratch. Returns the report dict.
    """
    cfg = cfg or LocalizerConfig()
    init_loc, cfg = load_init(init, cfg)
    with torch_threads(cfg.num_threads):
        t0 = time.perf_counter()
        data = _TrainData.from_dataset(Path(data_dir), cfg, seed)
        return _train_on(data, Path(out_dir), cfg, seed, time.perf_counter() - t0, init=init_loc,
                         init_name=None if init is None else str(init))  # fmt: skip


def _train_on(data: _TrainData, out_dir: Path, cfg: LocalizerConfig, seed: int, t_load: float = 0.0,
              init: Localizer | None = None, init_name: str | None = None, extra_meta: dict | None = None,
              hold: list[int] | None = None) -> dict:  # fmt: skip
    """Hold out (``hold``, else a random ``cfg.holdout_frac``), fit, evaluate, calibrate and save."""
    from radspine.fsutil import write_json_atomic

    t0 = time.perf_counter()
    ids = list(data.ids)
    rng = np.random.default_rng(seed)
    n_hold = 0
    if cfg.holdout_frac > 0 and len(ids) >= 3:  # keep at least 2 studies to train on
        n_hold = min(max(1, int(round(cfg.holdout_frac * len(ids)))), len(ids) - 2)
    perm = rng.permutation(ids)
    hold = sorted(int(i) for i in (perm[:n_hold] if hold is None else [i for i in ids if i in set(hold)]))
    train_ids = [i for i in ids if i not in set(hold)]
    loc = data.fit(train_ids, cfg, seed, init=init)
    t_fit = time.perf_counter() - t0
    report: dict = {
        "n_train_studies": len(train_ids),
        "n_holdout_studies": len(hold),
        "holdout_study_ids": hold,
        "device": str(resolve_device(cfg.device)),
        "epochs": cfg.epochs,
        "seed": seed,
        "init": init_name,
        "conditions": list(loc.conditions),
        "load_seconds": round(t_load, 2),
        "train_seconds": round(t_fit, 2),
    }
    if hold:
        t1 = time.perf_counter()
        truths = {i: data.truth[i] for i in hold}
        pred = data.predict(loc, hold)
        report["predict_seconds_per_study"] = round((time.perf_counter() - t1) / len(hold), 3)
        loc.calibration = fit_calibration(pred, truths)
        counts, lv_fit = fit_level_calibration(pred, truths)
        report["level_calibration"] = {**counts, "fitted": lv_fit is not None}
        if lv_fit is not None:
            a0, b0 = loc.level_calibration or DEFAULT_LEVEL_CALIBRATION
            loc.level_calibration = (lv_fit[0] + lv_fit[1] * a0, lv_fit[1] * b0)
            report["level_calibration"]["curve"] = list(loc.level_calibration)
        if loc.calibration or lv_fit is not None:  # re-predict the held-out studies with calibrated confidences
            pred = data.predict(loc, hold)
        report["per_condition"] = evaluate(pred, truths)
        report["confidence_check"] = confidence_check(pred, truths)
    loc.save(out_dir, {"report": "localizer_report.json", "train_study_ids": train_ids, "seed": seed,
                       "init": init_name, **(extra_meta or {})})  # fmt: skip
    write_json_atomic(out_dir / "localizer_report.json", report)
    return report


def report_by_source(data: _TrainData, model_dir: Path, groups: dict[str, list[int]]) -> dict:
    """:func:`evaluate` of the model saved in ``model_dir`` on each named group of held-out study ids."""
    loc = Localizer.load(model_dir, shipped_fallback=False)
    out = {}
    for name, ids in groups.items():
        ids = [i for i in ids if i in data.truth]
        if ids:
            out[name] = evaluate(data.predict(loc, ids), {i: data.truth[i] for i in ids})
    return out


def oof_points(data_dir: Path, cfg: LocalizerConfig | None = None, n_folds: int = 5, seed: int = 0) -> pd.DataFrame:
    """Out-of-fold predicted points of the labelled train studies (same columns as ``predict_study``).

    Each study is localised by a model that never saw it, so downstream features trained on these
    points see test-time localisation error.
    """
    cfg = cfg or LocalizerConfig()
    with torch_threads(cfg.num_threads):
        return _oof(_TrainData.from_dataset(Path(data_dir), cfg, seed), cfg, n_folds, seed, str(data_dir))


def _oof(data: _TrainData, cfg: LocalizerConfig, n_folds: int, seed: int, source: str) -> pd.DataFrame:
    ids = np.random.default_rng(seed).permutation(data.ids)
    if n_folds < 2 or n_folds > len(ids):
        raise DatasetError(f"{source}: n_folds={n_folds} needs 2 ≤ n_folds ≤ {len(ids)} labelled train studies")
    frames = []
    for f, fold in enumerate(np.array_split(ids, n_folds)):
        held = sorted(int(i) for i in fold)
        loc = data.fit([int(i) for i in ids if int(i) not in set(held)], cfg, seed + f)
        frames.append(data.predict(loc, held))
    out = pd.concat(frames, ignore_index=True)
    order = {sid: i for i, sid in enumerate(sorted(data.ids))}
    return out.sort_values("study_id", key=lambda s: s.map(order), kind="stable").reset_index(drop=True)
