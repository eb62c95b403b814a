"""Inference: the 25 points of a study from its sagittal and axial series (no coordinates needed).

Sagittal search is coarse to fine: the fully convolutional net first runs over the whole field of view
(every plane across the stack, the whole in-plane extent, at ``sag_spacing_mm``) to find the lumbar column
wherever it lies, then on a ``sag_fine_window_mm`` window around it at ``sag_fine_spacing_mm``. Levels are an
ordered assignment of disc candidates (head to feet). Each point gets a ``confidence`` in [0, 1] (its
heatmap peak mapped through the held-out calibration of the bundle) and a flag; flag parts starting with
"doubtful" or "not localised" make the point unusable for grading (:func:`radspine.points.is_unusable`).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd
import torch

from radspine.constants import (
    AX_T2,
    CONDITION_NAMES,
    CONDITIONS,
    LEVEL_NAMES,
    LEVELS,
    SAG_T1,
    SAG_T2,
)
from radspine.errors import ModelError
from radspine.geometry import nearest_stack, pixel_to_world, project_point
from radspine.io.volumes import StudyVolumes, load_study_volumes
from radspine.localize.canon import PlaneFrame
from radspine.localize.config import LocalizerConfig
from radspine.localize.net import HeatmapUNet, LevelChoice, choose_levels, decode_peak, refine_argmax_1d
from radspine.points import DETAIL_COLUMNS, write_points
from radspine.torchutil import resolve_device, torch_threads
from radspine.types import Study, Volume

log = logging.getLogger(__name__)

MODEL_FILE = "localizer.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 2
# ``level_confidence``: the study's P(the chain of levels is not shifted), the same on its 25 rows (NaN when no
# sagittal chain was found).
POINT_COLUMNS: tuple[str, ...] = (*DETAIL_COLUMNS, "confidence", "level_confidence")
# Sagittal model channels: 0-4 canal per level, 5-9 foramen per level (either side).
N_SAG, N_AX = 10, 2
# Index of the optional sacrum channel of the sagittal net (after the 10 level channels), and where its target
# lies: the canal point of L5/S1 moved this fraction of the L4/L5 → L5/S1 step further down.
SACRUM, SACRUM_STEP = N_SAG, 0.45
CANAL = "spinal_canal_stenosis"
FORA = ("left_neural_foraminal_narrowing", "right_neural_foraminal_narrowing")
SUBS = ("left_subarticular_stenosis", "right_subarticular_stenosis")
SIDE_CONDITIONS = FORA + SUBS
# Calibration heads: which raw peak scores share one calibration curve.
HEAD_OF = {CANAL: "canal", FORA[0]: "foramina", FORA[1]: "foramina", SUBS[0]: "subarticular", SUBS[1]: "subarticular"}
# LocalizerConfig fields that only steer inference: a loaded model takes them from the current defaults (unless the
# user trained with a value of their own: `inference_custom` in the saved state).
INFERENCE_ONLY = ("slice_step_mm", "sag_fine_window_mm", "sag_fine_width_mm", "level_rule", "level_shift_below",
                  "level_doubt_below")
# Fine-pass search radius (mm) around each level's coarse point.
REFINE_RADIUS_MM = 14.0
# Logistic (a, b) of P(levels not shifted) on the chain margin for a model without a fitted curve: margin 0
# (a shifted chain explains the heatmaps as well) → 0.5, margin 0.3 → 0.86.
DEFAULT_LEVEL_CALIBRATION = (0.0, 6.0)
SHIPPED_DIR = Path(__file__).resolve().parent / "shipped"


def shipped_localizer_dir() -> Path:
    """Folder of the pretrained localizer shipped with the package (``scripts/train_shipped_localizer.py``)."""
    return SHIPPED_DIR


def _flag(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


def untrained_flag(cond: str) -> str:
    """Flag of a condition the bundle has no labels for."""
    return f"not localised: no {CONDITION_NAMES[cond]} labels in training"


@dataclass
class Scan:
    """Heatmaps of a set of canonical sagittal planes: plane offsets ``ds`` (D,), ``heat`` (D, 10, H, W),
    all planes sampled on ``frame``'s grid centred at in-plane shift ``shift`` (mm along u, v)."""

    frame: PlaneFrame
    ds: np.ndarray
    heat: np.ndarray
    shift: tuple[float, float]

    def world(self, d: float, row: float, col: float) -> np.ndarray:
        return self.frame.to_world(d, row, col, self.shift)

    def px(self, world: np.ndarray) -> tuple[float, float, float]:
        """(d mm, row px, col px) of a world point on this scan's (shifted) grid."""
        d, row, col = self.frame.to_frame(world)
        return float(d), float(row - self.shift[1] / self.frame.spacing), float(col - self.shift[0] / self.frame.spacing)


def straddles(left: np.ndarray, right: np.ndarray, centre: np.ndarray) -> bool:
    """Whether two recess points lie on opposite sides of the canal centre in world x (LPS: left is +x)."""
    return bool((left[0] - centre[0]) * (right[0] - centre[0]) < 0)


def _grid_size(extent_mm: float, spacing: float, depth: int) -> int:
    m = 2**depth
    return max(m, int(np.ceil(extent_mm / spacing / m)) * m)


class Localizer:
    """Trained heatmap models + learned geometric offsets; see :meth:`predict_study`.

    ``sag_net`` / ``ax_net`` may be None when the training data had no labels for their heads;
    ``conditions`` lists the condition keys the bundle can predict (the others are written
    "not localised: no ... labels in training"); ``calibration[head] = (raw peaks, confidences)`` knots.
    """

    def __init__(self, cfg: LocalizerConfig, sag_net: HeatmapUNet | None, ax_net: HeatmapUNet | None, offsets: dict,
                 conditions: list[str] | None = None, calibration: dict | None = None,
                 level_calibration: tuple[float, float] | None = None):  # fmt: skip
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.sag_net = sag_net.to(self.device).eval() if sag_net is not None else None
        self.ax_net = ax_net.to(self.device).eval() if ax_net is not None else None
        # offsets[key][level] = mean world vector (mm) from the canal point: "sub_mid", "sub_left", "sub_right".
        self.offsets = {k: {lv: np.asarray(v, dtype=np.float64) for lv, v in d.items()} for k, d in offsets.items()}
        self.conditions = list(CONDITIONS if conditions is None else conditions)
        self.calibration = {k: (list(map(float, v[0])), list(map(float, v[1]))) for k, v in (calibration or {}).items()}
        self.level_calibration: tuple[float, float] | None = (
            None if level_calibration is None else (float(level_calibration[0]), float(level_calibration[1])))
        # Axial canonical frames of the study being localised (reset per study by predict_volumes).
        self._ax_frames: dict[int, PlaneFrame] = {}

    def level_confidence(self, choice: LevelChoice | None) -> float:
        """P(the study's chain of levels is not shifted) from the chosen chain's margin over the chain one disc
        up or down: a logistic curve fitted on real held-out studies (``level_calibration`` = (a, b)), or
        ``DEFAULT_LEVEL_CALIBRATION`` for a model without one. NaN when no chain was chosen by the level channels."""
        if choice is None:
            return float("nan")
        a, b = self.level_calibration or DEFAULT_LEVEL_CALIBRATION
        return float(1.0 / (1.0 + np.exp(-(a + b * choice.margin))))

    def confidence(self, cond: str, raw: float) -> float:
        """Calibrated confidence in [0, 1] of a raw heatmap peak (identity where the bundle has no curve)."""
        knots = self.calibration.get(HEAD_OF[cond])
        if not np.isfinite(raw):
            return 0.0
        if not knots or len(knots[0]) < 2:
            return float(np.clip(raw, 0.0, 1.0))
        return float(np.clip(np.interp(raw, knots[0], knots[1]), 0.0, 1.0))

    # ----------------------------------------------------------------- persistence
    def state(self) -> dict:
        """Serialisable state (state dicts, config, offsets, predictable conditions, calibration)."""
        def sd(net):
            return None if net is None else {k: v.detach().cpu() for k, v in net.state_dict().items()}

        return {
            "format_version": FORMAT_VERSION,
            "config": self.cfg.model_dump(),
            "sag_state": sd(self.sag_net),
            "ax_state": sd(self.ax_net),
            "offsets": {k: {lv: [float(x) for x in v] for lv, v in d.items()} for k, d in self.offsets.items()},
            "conditions": list(self.conditions),
            "calibration": {k: [list(v[0]), list(v[1])] for k, v in self.calibration.items()},
            "level_calibration": None if self.level_calibration is None else list(self.level_calibration),
            # Inference settings the user chose (not the code's default): kept on loading, see :meth:`load`.
            "inference_custom": {f: getattr(self.cfg, f) for f in INFERENCE_ONLY
                                 if getattr(self.cfg, f) != LocalizerConfig.model_fields[f].default},
        }

    def save(self, model_dir: Path, extra_meta: dict | None = None) -> None:
        """Write ``localizer.pt`` and ``meta.json`` atomically into ``model_dir``."""
        from radspine.fsutil import atomic_path, write_json_atomic

        model_dir = Path(model_dir)
        model_dir.mkdir(parents=True, exist_ok=True)
        with atomic_path(model_dir / MODEL_FILE) as tmp:
            torch.save(self.state(), tmp)
        meta = {
            "format_version": FORMAT_VERSION,
            "config": self.cfg.model_dump(),
            "torch": torch.__version__,
            "conditions": list(self.conditions),
            "not_predicted": [c for c in CONDITIONS if c not in self.conditions],
            "calibrated_heads": sorted(self.calibration),
            **(extra_meta or {}),
        }
        write_json_atomic(model_dir / META_FILE, meta)

    @classmethod
    def load(cls, model_dir: Path | str, device: str | None = None, shipped_fallback: bool | None = None) -> Localizer:
        """Load a bundle written by :func:`radspine.localize.train_localizer`; ModelError if unusable.

        ``shipped_fallback``: use the shipped pretrained localizer when ``model_dir`` holds none. None (default)
        = only when ``model_dir`` is an existing folder, or the ``localizer`` folder of an existing bundle, that
        has no ``localizer.pt`` (a mistyped path is still an error).
        """
        model_dir = Path(model_dir)
        path = model_dir / MODEL_FILE
        if not path.is_file():
            if shipped_fallback is None:
                shipped_fallback = model_dir.is_dir() or (model_dir.name == "localizer" and model_dir.parent.is_dir())
            if shipped_fallback and (SHIPPED_DIR / MODEL_FILE).is_file():
                log.warning("%s: no localizer model, using the shipped pretrained localizer", model_dir)
                path = SHIPPED_DIR / MODEL_FILE
            else:
                raise ModelError(f"{path}: localizer model not found (run `radspine train-localizer` first)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            version = state.get("format_version")
            if version != FORMAT_VERSION:
                raise ModelError(f"{path}: localizer format {version} != {FORMAT_VERSION} (retrain the localizer)")
            saved = dict(state["config"])
            # A net trained before the axial slice search saw only labelled slices: its peaks cannot rank them.
            saved.setdefault("ax_slice_search_mm", 0.0)
            head = (state.get("sag_state") or {}).get("head.weight")
            saved["sacrum_channel"] = head is not None and int(head.shape[0]) > N_SAG
            cfg = LocalizerConfig(**saved)
            # How a trained net is applied is the code's business, not the saved model's (an older bundle
            # would otherwise keep an older, slower scan step forever), unless the user set a value of their own.
            custom = {f: v for f, v in (state.get("inference_custom") or {}).items() if f in INFERENCE_ONLY}
            cfg = cfg.model_copy(update={**{f: LocalizerConfig.model_fields[f].default for f in INFERENCE_ONLY},
                                         **custom})
            if device is not None:
                cfg = cfg.model_copy(update={"device": device})
            sag = ax = None
            if state.get("sag_state") is not None:
                sag = HeatmapUNet(3, N_SAG + int(cfg.sacrum_channel), cfg.base_channels, cfg.sag_depth)
                sag.load_state_dict(state["sag_state"])
            if state.get("ax_state") is not None:
                ax = HeatmapUNet(3, N_AX, cfg.base_channels, cfg.ax_depth)
                ax.load_state_dict(state["ax_state"])
        except ModelError:
            raise
        except Exception as err:  # noqa: BLE001 - any unpickling/shape problem means a corrupt bundle
            raise ModelError(f"{path}: corrupt localizer model ({type(err).__name__}: {err})".splitlines()[0]) from None
        return cls(cfg, sag, ax, state["offsets"], state.get("conditions"), state.get("calibration"),
                   state.get("level_calibration"))

    # ----------------------------------------------------------------- networks
    @torch.no_grad()
    def _heatmaps(self, net: HeatmapUNet, images: np.ndarray, batch: int = 64) -> np.ndarray:
        """Sigmoid heatmaps of (N, 3, H, W) images; all planes of a study go through in few forwards."""
        outs = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).to(self.device)
            outs.append(torch.sigmoid(net(x)).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def _scan(self, frame: PlaneFrame, step: float, shift: tuple[float, float]) -> Scan:
        lo, hi = frame.offset_range()
        n = max(int(np.floor((hi - lo) / step)) + 1, 1)
        # Planes exactly ``step`` apart centred on the stack (slice count and thickness do not matter); with
        # step = channel offset, neighbouring planes share their channel planes and each is sampled once.
        ds = (lo + hi) / 2 + step * (np.arange(n) - (n - 1) / 2)
        imgs = frame.sample(ds, np.tile(np.asarray(shift, float), (len(ds), 1)), self.cfg.channel_offset_mm)
        return Scan(frame, ds, self._heatmaps(self.sag_net, imgs), (float(shift[0]), float(shift[1])))

    def coarse_scan(self, vol: Volume) -> Scan:
        """Whole-FOV pass: every plane across the stack, the stack's whole in-plane extent, coarse spacing."""
        cfg = self.cfg
        base = PlaneFrame.build(vol, "sagittal", cfg.sag_spacing_mm, 2**cfg.sag_depth)
        u0, u1, v0, v1 = base.extent()
        pad = 2 * cfg.sag_spacing_mm
        frame = base.with_grid(cfg.sag_spacing_mm, _grid_size(v1 - v0 + pad, cfg.sag_spacing_mm, cfg.sag_depth),
                               _grid_size(u1 - u0 + pad, cfg.sag_spacing_mm, cfg.sag_depth))  # fmt: skip
        return self._scan(frame, 2 * cfg.slice_step_mm, ((u0 + u1) / 2, (v0 + v1) / 2))

    def sagittal_scan(self, vol: Volume) -> tuple[Scan, Scan, dict[str, np.ndarray], LevelChoice | None]:
        """(coarse, fine, coarse level anchors, their level choice) of a sagittal stack: the fine window is
        centred on the spine the coarse pass found, and the coarse anchors (whole-FOV context) fix which disc
        is which level."""
        cfg = self.cfg
        coarse = self.coarse_scan(vol)
        pts, _, choice = self._levels(coarse)
        centre = np.mean(np.stack(list(pts.values())), axis=0)
        rel = centre - coarse.frame.origin
        shift = (float(rel @ coarse.frame.u), float(rel @ coarse.frame.v))
        rows = _grid_size(cfg.sag_fine_window_mm, cfg.sag_fine_spacing_mm, cfg.sag_depth)
        cols = _grid_size(cfg.sag_fine_width_mm, cfg.sag_fine_spacing_mm, cfg.sag_depth)
        fine = self._scan(coarse.frame.with_grid(cfg.sag_fine_spacing_mm, rows, cols), cfg.slice_step_mm, shift)
        return coarse, fine, pts, choice

    @property
    def has_canal(self) -> bool:
        return CANAL in self.conditions

    def _levels(self, scan: Scan, near: dict[str, np.ndarray] | None = None,
                near_choice: LevelChoice | None = None) -> tuple[dict[str, np.ndarray], dict[str, float], LevelChoice | None]:  # fmt: skip
        """Level anchors: canal points when the bundle has a canal head, else the foramina's midline projection.

        ``near``: coarse anchors; each level's peak is then searched within ``REFINE_RADIUS_MM`` of its coarse
        point (the fine pass refines, it does not re-decide the level order).
        """
        decode = self._canal if self.has_canal else self._foramen_anchors
        free = decode(scan)
        if near is None:
            return free
        # The coarse pass has the whole-FOV context, the fine pass the detail: keep whichever level assignment
        # explains the fine heatmaps better (summed level responses), so neither pass's slip is final.
        refined = decode(scan, near)
        if sum(refined[1].values()) >= sum(free[1].values()):
            return refined[0], refined[1], near_choice
        return free

    @staticmethod
    def _near_mask(scan: Scan, near: dict[str, np.ndarray] | None, lv: str) -> np.ndarray | None:
        if near is None:
            return None
        _, row, col = scan.px(near[lv])
        gr = np.arange(scan.frame.size, dtype=np.float64)
        gc = np.arange(scan.frame.width, dtype=np.float64)
        r2 = ((gr[:, None] - row) ** 2 + (gc[None, :] - col) ** 2) * scan.frame.spacing**2
        return r2 <= REFINE_RADIUS_MM**2

    def _ordered(self, scan: Scan, maps: np.ndarray, sacrum: np.ndarray | None = None) -> LevelChoice | None:
        sp = scan.frame.spacing
        # Row of the image's lower (feet-side) edge on this scan's grid: rows run along −z (v).
        floor = scan.frame.extent()[3] / sp + (scan.frame.size - 1) / 2.0 - scan.shift[1] / sp
        return choose_levels(maps, min_sep_px=max(1, int(round(12.0 / sp))), floor_row=floor,
                             rule=self.cfg.level_rule, sacrum=sacrum)  # fmt: skip

    def _sacrum_map(self, heat: np.ndarray) -> np.ndarray | None:
        """The sacrum channel of (C, H, W) heatmaps of one plane, or None for a model without one."""
        return heat[SACRUM] if self.cfg.sacrum_channel and heat.shape[0] > SACRUM else None

    def _canal(self, scan: Scan, near: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict[str, float], LevelChoice | None]:
        """Canal point per level: one midline plane, then disc candidates assigned to levels in order (or, with
        ``near``, each level's peak next to its coarse point)."""
        ds, heat = scan.ds, scan.heat
        prof = heat[:, :5].reshape(len(ds), 5, -1).max(axis=2).sum(axis=1)
        sel = np.arange(len(ds))
        if FORA[0] in self.conditions and len(ds) > 2:
            # The canal plane lies between the two foramina: keep planes within a margin of the foramen
            # responses' centre of symmetry (stops a bright lateral plane from passing for the midline).
            near_mid = np.abs(ds - self._symmetry_centre(scan)) <= max(self.cfg.side_margin_mm, 2 * self.cfg.slice_step_mm)
            sel = np.flatnonzero(near_mid) if near_mid.any() else sel
        j, d = refine_argmax_1d(prof[sel], ds[sel])
        i = int(sel[j])
        maps = heat[i, :5]
        choice = self._ordered(scan, maps, self._sacrum_map(heat[i])) if near is None else None
        rows_cols = (None if choice is None else choice.rows_cols) if near is None else self._masked_argmax(scan, maps, near)
        points, scores = {}, {}
        for li, lv in enumerate(LEVELS):
            row, col, val = decode_peak(maps[li], at=None if rows_cols is None else rows_cols[li])
            points[lv], scores[lv] = scan.world(d, row, col), val
        return points, scores, choice

    @staticmethod
    def _symmetry_centre(scan: Scan) -> float:
        """Plane offset (mm) midway between the foramen responses: their response-weighted centre (the two
        sides being symmetric about the midline)."""
        ds = scan.ds
        prof = scan.heat[:, 5:10].reshape(len(ds), 5, -1).max(axis=2).sum(axis=1)
        w = np.clip(prof - np.median(prof), 0, None)
        return float((w * ds).sum() / w.sum()) if w.sum() > 0 else float(ds.mean())

    def _masked_argmax(self, scan: Scan, maps: np.ndarray, near: dict[str, np.ndarray]) -> list[tuple[int, int]]:
        out = []
        for li, lv in enumerate(LEVELS):
            m = self._near_mask(scan, near, lv)
            h = np.where(m, maps[li], -1.0) if m is not None and m.any() else maps[li]
            out.append(tuple(int(v) for v in np.unravel_index(int(np.argmax(h)), h.shape)))
        return out

    def _foramen_anchors(self, scan: Scan, near: dict[str, np.ndarray] | None = None) -> tuple[dict[str, np.ndarray], dict[str, float], LevelChoice | None]:
        """Without a canal head: levels from the foramen channels projected over all planes, on the midline
        plane (the response-weighted centre of the planes, the two sides being symmetric about it)."""
        heat = scan.heat
        d = self._symmetry_centre(scan)
        maps = heat[:, 5:10].max(axis=0)
        choice = self._ordered(scan, maps, self._sacrum_map(heat.max(axis=0))) if near is None else None
        rows_cols = (None if choice is None else choice.rows_cols) if near is None else self._masked_argmax(scan, maps, near)
        points, scores = {}, {}
        for li, lv in enumerate(LEVELS):
            row, col, val = decode_peak(maps[li], at=None if rows_cols is None else rows_cols[li])
            points[lv], scores[lv] = scan.world(d, row, col), val
        return points, scores, choice

    @staticmethod
    def _peak(scan: Scan, heat: np.ndarray, ch: int, mask: np.ndarray | None = None) -> tuple[np.ndarray, float]:
        """World point and score of channel ch: best plane (refined across planes), sub-pixel in-plane peak."""
        ds = scan.ds
        prof = heat[:, ch].reshape(len(ds), -1).max(axis=1)
        sel = np.flatnonzero(mask) if mask is not None else np.arange(len(ds))
        i, d = refine_argmax_1d(prof[sel], ds[sel])
        row, col, val = decode_peak(heat[sel[i], ch])
        return scan.world(d, row, col), val

    def _foramina(self, scan: Scan, anchors: dict[str, np.ndarray]) -> tuple[dict, dict, dict, list[str]]:
        """Left/right foramen per level near its level anchor; returns (left, right, raw scores, notes)."""
        ds, heat = scan.ds, scan.heat
        left, right, scores, notes = {}, {}, {}, []
        sp = scan.frame.spacing
        grid_r = np.arange(scan.frame.size, dtype=np.float64) * sp
        grid_c = np.arange(scan.frame.width, dtype=np.float64) * sp
        for li, lv in enumerate(LEVELS):
            mid, crow, ccol = scan.px(anchors[lv])
            # A foramen lies beside its own disc: weight its heatmap by a Gaussian prior around the anchor of
            # the same level, so the level of a foramen can never disagree with the canal's.
            prior = np.exp(-((grid_r - crow * sp) ** 2) / (2 * self.cfg.foramen_prior_z_mm**2))[:, None] * np.exp(
                -((grid_c - ccol * sp) ** 2) / (2 * self.cfg.foramen_prior_y_mm**2)
            )[None, :]
            weighted = heat[:, 5 + li : 6 + li] * prior[None, None]
            # Frame normal points to world +x = patient left, so larger offsets are the patient's left.
            for side, mask, store in (
                ("left", ds > mid + self.cfg.side_margin_mm, left),
                ("right", ds < mid - self.cfg.side_margin_mm, right),
            ):
                if not mask.any():
                    notes.append(f"{side} {LEVEL_NAMES[lv]} doubtful: foramen beyond stack")
                    mask = (ds > mid) if side == "left" else (ds < mid)
                    if not mask.any():
                        mask = np.ones_like(ds, dtype=bool)
                point, score = self._peak(scan, weighted, 0, mask)
                store[lv] = point
                scores[(side, lv)] = score
                if score < self.cfg.min_peak:
                    notes.append(f"{side} {LEVEL_NAMES[lv]} doubtful: low confidence (peak {score:.2f})")
        return left, right, scores, notes

    def _axial(self, stacks: list[Volume], centre: np.ndarray) -> tuple[Volume, int, np.ndarray, np.ndarray, float, tuple[float, float]]:
        """The axial slice of the level and the left/right recess world points on it.

        The stack nearest to ``centre``; in it every slice within ``ax_slice_search_mm`` of ``centre`` goes
        through the axial net and the one with the strongest mean recess peak wins, among those whose two recess
        points straddle the canal if any do (the nearest slice when the search is off or no slice is that close). Returns (volume, slice index, left, right, plane distance of
        the chosen slice from ``centre`` in mm, (left peak, right peak)).
        """
        vol, pr, _ = nearest_stack(stacks, centre)
        cfg = self.cfg
        frame = self._ax_frames.setdefault(id(vol), PlaneFrame.build(vol, "axial", cfg.ax_spacing_mm, cfg.ax_size))
        d_c, row, col = frame.to_frame(centre)
        cand = np.flatnonzero(np.abs(frame.offsets - d_c) <= cfg.ax_slice_search_mm) if cfg.ax_slice_search_mm else []
        if len(cand) == 0:
            cand = np.array([pr.slice_index])
        c = (cfg.ax_size - 1) / 2.0
        shift = ((col - c) * cfg.ax_spacing_mm, (row - c) * cfg.ax_spacing_mm)
        ds = frame.offsets[cand].astype(np.float64)
        heat = self._heatmaps(self.ax_net, frame.sample(ds, np.repeat([shift], len(ds), axis=0), cfg.channel_offset_mm))
        peaks = [[decode_peak(h[ch]) for ch in range(N_AX)] for h in heat]
        pts = [[frame.to_world(float(d), r, cc, shift) for r, cc, _ in pk] for d, pk in zip(ds, peaks, strict=True)]
        # A slice whose two recess peaks straddle the canal (in world x) beats one where both sit on one side;
        # then the strongest mean peak; ties go to the slice nearest the expected plane.
        best = max(range(len(cand)), key=lambda i: (straddles(pts[i][0], pts[i][1], centre),
                                                    np.mean([p[2] for p in peaks[i]]), -abs(ds[i] - d_c)))  # fmt: skip
        vals = [v for _, _, v in peaks[best]]
        return vol, int(cand[best]), pts[best][0], pts[best][1], abs(float(ds[best]) - d_c), (vals[0], vals[1])

    def _gap_doubts(self, pts: dict[str, np.ndarray], scores: dict[str, float]) -> dict[str, str]:
        """Levels implausibly far from a neighbour (gap > max_gap_ratio × the study's median disc gap): the
        lower-scoring end of each such gap is doubtful."""
        gaps = np.array([np.linalg.norm(pts[b] - pts[a]) for a, b in zip(LEVELS[:-1], LEVELS[1:], strict=True)])
        med = float(np.median(gaps))
        out: dict[str, str] = {}
        for j, g in enumerate(gaps):
            if med > 0 and g > self.cfg.max_gap_ratio * med:
                a, b = LEVELS[j], LEVELS[j + 1]
                lv = a if scores[a] < scores[b] else b
                out[lv] = f"doubtful: {g:.0f} mm from the next level (median disc gap {med:.0f} mm)"
        return out

    # ----------------------------------------------------------------- public
    def predict_volumes(self, study_id: int, vols: StudyVolumes) -> pd.DataFrame:
        """The 25 points of a study from already-read stacks (see :meth:`predict_study`)."""
        with torch_threads(self.cfg.num_threads):
            return self._predict_volumes(study_id, vols)

    def _predict_volumes(self, study_id: int, vols: StudyVolumes) -> pd.DataFrame:
        self._ax_frames = {}
        rows: dict[tuple[str, str], dict] = {}
        conf = self.confidence

        def put(cond: str, lv: str, vol: Volume | None, world: np.ndarray | None, flag: str, raw: float = np.nan,
                k: int | None = None, scale: float = 1.0):  # fmt: skip
            if vol is None or world is None:
                rows[(cond, lv)] = {"series_id": -1, "instance_number": -1, "x": np.nan, "y": np.nan,
                                    "world": np.full(3, np.nan), "flag": flag, "confidence": 0.0}  # fmt: skip
                return
            pr = project_point(vol, world)
            k = pr.slice_index if k is None else k
            snapped = pixel_to_world(vol, pr.x, pr.y, k)
            c = conf(cond, raw) * scale
            if "doubtful" in flag:
                c = min(c, 0.5)
            rows[(cond, lv)] = {"series_id": int(vol.series_id), "instance_number": int(vol.instance_numbers[k]),
                                "x": pr.x, "y": pr.y, "world": snapped, "flag": flag, "confidence": c}  # fmt: skip

        for cond in CONDITIONS:  # conditions without labels in training: never guessed
            if cond not in self.conditions:
                for lv in LEVELS:
                    put(cond, lv, None, None, untrained_flag(cond))

        t2, t1 = vols.sag_t2, vols.sag_t1
        p_t2, p_t1 = vols.problems.get(SAG_T2, ""), vols.problems.get(SAG_T1, "")
        sag_conds = [c for c in (CANAL, *FORA) if c in self.conditions]
        anchors: dict[str, np.ndarray] | None = None
        anchor_vol: Volume | None = None
        level_doubt: dict[str, str] = {}
        spine_doubt, spine_scale = "", 1.0
        level_conf, shift_note = float("nan"), ""
        if self.sag_net is not None and (t2 is not None or t1 is not None):
            scans: dict[int, Scan] = {}

            coarse_pts: dict[int, dict[str, np.ndarray]] = {}
            coarse_choice: dict[int, LevelChoice | None] = {}

            def fine(vol: Volume) -> Scan:
                if id(vol) not in scans:
                    _, scans[id(vol)], coarse_pts[id(vol)], coarse_choice[id(vol)] = self.sagittal_scan(vol)
                return scans[id(vol)]

            # Level anchors from the canal series (T2, else T1) or, for a foramina-only bundle, from T1 (else T2).
            if self.has_canal:
                anchor_vol = t2 if t2 is not None else t1
                base_flag = "" if t2 is not None else f"{p_t2}: canal from {SAG_T1}"
            else:
                anchor_vol = t1 if t1 is not None else t2
                base_flag = ""
            scan = fine(anchor_vol)
            anchors, a_scores, choice = self._levels(scan, coarse_pts[id(anchor_vol)], coarse_choice[id(anchor_vol)])
            level_conf = self.level_confidence(choice)
            if level_conf < self.cfg.level_doubt_below:
                shift_note = (f"doubtful: level count (a chain one disc up or down fits as well; level confidence "
                              f"{level_conf:.2f})")
            elif level_conf < self.cfg.level_shift_below:
                # Still graded (not "doubtful"): the chain may sit one disc off, and the user should know.
                shift_note = f"levels may be shifted (level confidence {level_conf:.2f})"
            mean_score = float(np.mean(list(a_scores.values())))
            if mean_score < self.cfg.spine_min_peak:
                spine_doubt = f"doubtful: no spine in view (mean peak {mean_score:.2f})"
                spine_scale = float(np.clip(mean_score / max(self.cfg.spine_min_peak, 1e-6), 0.0, 1.0))
            z = np.array([anchors[lv][2] for lv in LEVELS])
            order_doubt = "" if np.all(np.diff(z) < 0) else "doubtful: canal levels out of head-to-feet order"
            level_doubt = self._gap_doubts(anchors, a_scores)
            if CANAL in self.conditions:
                for lv in LEVELS:
                    low = (f"doubtful: low confidence (peak {a_scores[lv]:.2f})"
                           if a_scores[lv] < self.cfg.min_peak else "")  # fmt: skip
                    put(CANAL, lv, anchor_vol, anchors[lv],
                        _flag(base_flag, spine_doubt, order_doubt, level_doubt.get(lv, ""), low, shift_note), a_scores[lv],
                        scale=spine_scale)  # fmt: skip
            if FORA[0] in self.conditions:
                fora_vol = t1 if t1 is not None else t2
                fora_flag = "" if t1 is not None else f"{p_t1}: foramina from {SAG_T2}"
                left, right, f_scores, notes = self._foramina(fine(fora_vol), anchors)
                for lv in LEVELS:
                    for side, cond, store in (("left", FORA[0], left), ("right", FORA[1], right)):
                        extra = [n.split(" ", 2)[2] for n in notes if n.startswith(f"{side} {LEVEL_NAMES[lv]} ")]
                        put(cond, lv, fora_vol, store[lv],
                            _flag(fora_flag, spine_doubt, order_doubt if not self.has_canal else "",
                                  level_doubt.get(lv, ""), *extra, shift_note), f_scores[(side, lv)],
                            scale=spine_scale)  # fmt: skip
        else:
            why = ("not localised: no sagittal labels in training" if self.sag_net is None
                   else f"not localised: {_flag(p_t2, p_t1) or 'no sagittal series'}")  # fmt: skip
            for cond in sag_conds:
                for lv in LEVELS:
                    put(cond, lv, None, None, why)

        if SUBS[0] in self.conditions:
            for lv in LEVELS:
                if anchors is None:
                    why = _flag(p_t2, p_t1) or "no sagittal series"
                    for cond in SUBS:
                        put(cond, lv, None, None, f"not localised: {why} (subarticular levels come from the sagittal)")
                    continue
                common = _flag(spine_doubt, level_doubt.get(lv, ""), shift_note)
                centre = anchors[lv] + self.offsets["sub_mid"][lv]
                if not vols.axial or self.ax_net is None:
                    why = vols.problems.get(AX_T2, "no Axial T2 series")
                    flag = _flag(f"{why}: subarticular estimated from sagittal", common)
                    for cond, key in ((SUBS[0], "sub_left"), (SUBS[1], "sub_right")):
                        put(cond, lv, anchor_vol, anchors[lv] + self.offsets[key][lv], flag, 0.0, scale=spine_scale)
                    continue
                vol, k, lp, rp, dist, (lr, rr) = self._axial(vols.axial, centre)
                far = f"doubtful: axial slice {dist:.1f} mm from level" if dist > self.cfg.axial_max_distance_mm else ""
                flag = _flag(common, far)
                if lp[0] < rp[0]:  # patient left must have the larger world x (LPS); never trust channel order blindly
                    flag = _flag(flag, "left/right recess order swapped by world x")
                    lp, rp, lr, rr = rp, lp, rr, lr
                if not straddles(lp, rp, centre):
                    flag = _flag(flag, "doubtful: both recess points on one side of the canal")
                for cond, pt, raw in ((SUBS[0], lp, lr), (SUBS[1], rp, rr)):
                    low = f"doubtful: low confidence (peak {raw:.2f})" if raw < self.cfg.min_peak else ""
                    put(cond, lv, vol, pt, _flag(flag, low), raw, k, scale=spine_scale)
        return self._frame(study_id, rows, level_conf)

    def predict_study(self, study: Study) -> pd.DataFrame:
        """All 25 points of a study (columns :data:`POINT_COLUMNS`), in competition condition × level order.

        Missing or unreadable series are inferred from the others where possible; ``flag`` says why.
        """
        return self.predict_volumes(study.study_id, load_study_volumes(study))

    @staticmethod
    def _frame(study_id: int, rows: dict, level_conf: float = float("nan")) -> pd.DataFrame:
        recs = []
        for cond in CONDITIONS:
            for lv in LEVELS:
                r = rows[(cond, lv)]
                recs.append({
                    "study_id": int(study_id), "series_id": r["series_id"], "instance_number": r["instance_number"],
                    "condition": CONDITION_NAMES[cond], "level": LEVEL_NAMES[lv],
                    "x": float(r["x"]), "y": float(r["y"]),
                    "world_x": float(r["world"][0]), "world_y": float(r["world"][1]), "world_z": float(r["world"][2]),
                    "flag": r["flag"], "confidence": float(r.get("confidence", 0.0)),
                    "level_confidence": float(level_conf),
                })  # fmt: skip
        df = pd.DataFrame.from_records(recs, columns=list(POINT_COLUMNS))
        return df.astype({"study_id": "int64", "series_id": "int64", "instance_number": "int64"})


def fallback_rows(study_id: int, reason: str) -> pd.DataFrame:
    """25 unlocalised rows (series/instance −1, NaN coordinates, confidence 0) carrying ``reason`` in ``flag``."""
    rows = {(c, lv): {"series_id": -1, "instance_number": -1, "x": np.nan, "y": np.nan,
                      "world": np.full(3, np.nan), "flag": reason, "confidence": 0.0}
            for c in CONDITIONS for lv in LEVELS}  # fmt: skip
    return Localizer._frame(study_id, rows)


class _StudyTask:
    """Picklable per-study job for :func:`radspine.parallel.map_items`: loads the localizer once per process."""

    def __init__(self, model_dir: Path, device: str | None, volumes: Mapping[int, StudyVolumes] | None = None,
                 loc: Localizer | None = None):  # fmt: skip
        self.model_dir, self.device, self.volumes = Path(model_dir), device, volumes or {}
        self._loc = loc

    def __getstate__(self) -> dict:
        return {**self.__dict__, "_loc": None}

    def __call__(self, study: Study) -> pd.DataFrame:
        if self._loc is None:
            self._loc = Localizer.load(self.model_dir, device=self.device)
        vols = self.volumes.get(int(study.study_id))
        return self._loc.predict_study(study) if vols is None else self._loc.predict_volumes(study.study_id, vols)


def localize_dataset(
    data_dir: Path | str, model_dir: Path | str, out_csv: Path | str, split: str = "test", *,
    workers: int | None = None, scheduler: str | None = None, volumes: Mapping[int, StudyVolumes] | None = None,
    device: str | None = None,
) -> pd.DataFrame:
    """Localise every study of ``split``; write the points CSV (+ ``_detail.csv``) atomically; return all rows.

    ``workers``: None or 1 = serial in this process; N > 1 = N processes; ``scheduler``: a Dask scheduler
    (see :func:`radspine.parallel.map_items`); the points are the same in every mode. ``volumes``: already
    read stacks by study id (those studies are not read again). A study that fails is logged and gets 25
    flagged fallback rows ("failed: ..."); the batch never stops.
    """
    from radspine.io.dataset import Dataset
    from radspine.parallel import map_items

    loc = Localizer.load(model_dir, device=device)  # fail fast on a missing/corrupt bundle
    ds = Dataset.open(Path(data_dir))
    studies = list(ds.studies(split))
    serial = (workers is None or workers <= 1) and not scheduler
    task = _StudyTask(Path(model_dir), device, volumes, loc if serial else None)
    outcomes = map_items(task, studies, key=lambda s: s.study_id, workers=1 if serial else workers,
                         scheduler=scheduler, desc="localize")  # fmt: skip
    frames = []
    for study, oc in zip(studies, outcomes, strict=True):
        if oc.ok:
            frames.append(oc.value)
        else:
            reason = (oc.error or "error").splitlines()[0]
            log.warning("study %s: localisation failed, fallback rows: %s", study.study_id, reason)
            frames.append(fallback_rows(study.study_id, f"failed: {reason}"))
    out = pd.concat(frames, ignore_index=True) if frames else fallback_rows(0, "").iloc[:0]
    write_points(out, out_csv)
    return out


def model_summary(model_dir: Path | str) -> dict:
    """meta.json of a bundle (for CLI display)."""
    return json.loads((Path(model_dir) / META_FILE).read_text())
