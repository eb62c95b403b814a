"""Inference: the 25 points of a study from its sagittal and axial series (no coordinates needed)."""

from __future__ import annotations

import json
import logging
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
from radspine.errors import ModelError, RadspineError
from radspine.geometry import nearest_stack, pixel_to_world, project_point
from radspine.io.volumes import StudyVolumes, load_study_volumes
from radspine.localize.canon import PlaneFrame
from radspine.localize.config import LocalizerConfig
from radspine.localize.net import HeatmapUNet, assign_ordered_peaks, decode_peak, refine_argmax_1d
from radspine.points import DETAIL_COLUMNS, write_points
from radspine.torchutil import resolve_device, torch_threads
from radspine.types import Study, Volume

log = logging.getLogger(__name__)

MODEL_FILE = "localizer.pt"
META_FILE = "meta.json"
FORMAT_VERSION = 1
POINT_COLUMNS = DETAIL_COLUMNS
# Sagittal model channels: 0-4 canal per level, 5-9 foramen per level (either side).
N_SAG, N_AX = 10, 2


def _flag(*parts: str) -> str:
    return "; ".join(p for p in parts if p)


class Localizer:
    """Trained heatmap models + learned geometric offsets; see :meth:`predict_study`."""

    def __init__(self, cfg: LocalizerConfig, sag_net: HeatmapUNet, ax_net: HeatmapUNet, offsets: dict):
        self.cfg = cfg
        self.device = resolve_device(cfg.device)
        self.sag_net = sag_net.to(self.device).eval()
        self.ax_net = ax_net.to(self.device).eval()
        # offsets[key][level] = mean world vector (mm) from the canal point: "sub_mid", "sub_left", "sub_right".
        self.offsets = {k: {lv: np.asarray(v, dtype=np.float64) for lv, v in d.items()} for k, d in offsets.items()}

    # ----------------------------------------------------------------- persistence
    def state(self) -> dict:
        """Serialisable state (state dicts, config, offsets)."""
        return {
            "format_version": FORMAT_VERSION,
            "config": self.cfg.model_dump(),
            "sag_state": {k: v.detach().cpu() for k, v in self.sag_net.state_dict().items()},
            "ax_state": {k: v.detach().cpu() for k, v in self.ax_net.state_dict().items()},
            "offsets": {k: {lv: [float(x) for x in v] for lv, v in d.items()} for k, d in self.offsets.items()},
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
            **(extra_meta or {}),
        }
        write_json_atomic(model_dir / META_FILE, meta)

    @classmethod
    def load(cls, model_dir: Path | str, device: str | None = None) -> Localizer:
        """Load a bundle written by :func:`radspine.localize.train_localizer`; ModelError if unusable."""
        path = Path(model_dir) / MODEL_FILE
        if not path.is_file():
            raise ModelError(f"{path}: localizer model not found (run `radspine train-localizer` first)")
        try:
            state = torch.load(path, map_location="cpu", weights_only=True)
            if state.get("format_version") != FORMAT_VERSION:
                raise ModelError(f"{path}: localizer format {state.get('format_version')} != {FORMAT_VERSION}")
            cfg = LocalizerConfig(**state["config"])
            if device is not None:
                cfg = cfg.model_copy(update={"device": device})
            sag = HeatmapUNet(3, N_SAG, cfg.base_channels, cfg.sag_depth)
            sag.load_state_dict(state["sag_state"])
            ax = HeatmapUNet(3, N_AX, cfg.base_channels, cfg.ax_depth)
            ax.load_state_dict(state["ax_state"])
        except ModelError:
            raise
        except Exception as err:  # noqa: BLE001 - any unpickling/shape problem means a corrupt bundle
            raise ModelError(f"{path}: corrupt localizer model ({type(err).__name__}: {err})".splitlines()[0]) from None
        return cls(cfg, sag, ax, state["offsets"])

    # ----------------------------------------------------------------- networks
    @torch.no_grad()
    def _heatmaps(self, net: HeatmapUNet, images: np.ndarray, batch: int = 32) -> np.ndarray:
        outs = []
        for i in range(0, len(images), batch):
            x = torch.from_numpy(np.ascontiguousarray(images[i : i + batch])).to(self.device)
            outs.append(torch.sigmoid(net(x)).float().cpu().numpy())
        return np.concatenate(outs) if outs else np.zeros((0,), np.float32)

    def sagittal_scan(self, vol: Volume) -> tuple[PlaneFrame, np.ndarray, np.ndarray]:
        """Heatmaps of every canonical sagittal plane of a stack: (frame, offsets (D,), heat (D, 10, H, W))."""
        cfg = self.cfg
        frame = PlaneFrame.build(vol, "sagittal", cfg.sag_spacing_mm, cfg.sag_size)
        lo, hi = frame.offset_range()
        n = max(int(np.floor((hi - lo) / cfg.slice_step_mm)) + 1, 1)
        # Evenly spaced planes spanning the stack: the slice count and thickness do not matter.
        ds = np.linspace(lo, hi, n) if n > 1 else np.array([lo])
        heat = self._heatmaps(self.sag_net, frame.sample(ds, channel_offset=cfg.channel_offset_mm))
        return frame, ds, heat

    @staticmethod
    def _peak(frame: PlaneFrame, ds: np.ndarray, heat: np.ndarray, ch: int, mask: np.ndarray | None = None):
        """World point and score of channel ch: best plane (refined across planes), sub-pixel in-plane peak."""
        prof = heat[:, ch].reshape(len(ds), -1).max(axis=1)
        sel = np.flatnonzero(mask) if mask is not None else np.arange(len(ds))
        i, d = refine_argmax_1d(prof[sel], ds[sel])
        row, col, val = decode_peak(heat[sel[i], ch])
        return frame.to_world(d, row, col), val

    def _canal(self, vol: Volume, scan) -> tuple[dict[str, np.ndarray], dict[str, float]]:
        """Canal point per level: one midline plane, then disc candidates assigned to levels in order."""
        frame, ds, heat = scan
        prof = heat[:, :5].reshape(len(ds), 5, -1).max(axis=2).sum(axis=1)
        i, d = refine_argmax_1d(prof, ds)
        maps = heat[i, :5]
        rows_cols = assign_ordered_peaks(maps, min_sep_px=max(1, int(round(12.0 / self.cfg.sag_spacing_mm))))
        points, scores = {}, {}
        for li, lv in enumerate(LEVELS):
            if rows_cols is None:  # too few distinct discs: fall back to each channel's own maximum
                row, col, val = decode_peak(maps[li])
            else:
                row, col, val = decode_peak(maps[li], at=rows_cols[li])
            points[lv], scores[lv] = frame.to_world(d, row, col), val
        return points, scores

    def _foramina(self, scan, canal: dict[str, np.ndarray]) -> tuple[dict, dict, list[str]]:
        frame, ds, heat = scan
        left, right, notes = {}, {}, []
        size, sp = self.cfg.sag_size, self.cfg.sag_spacing_mm
        grid = np.arange(size, dtype=np.float64) * sp
        for li, lv in enumerate(LEVELS):
            mid, crow, ccol = frame.to_frame(canal[lv])
            # A foramen lies beside its own disc: weight its heatmap by a Gaussian prior around the canal
            # point of the same level, so the level of a foramen can never disagree with the canal's.
            prior = np.exp(-((grid - crow * sp) ** 2) / (2 * self.cfg.foramen_prior_z_mm**2))[:, None] * np.exp(
                -((grid - ccol * sp) ** 2) / (2 * self.cfg.foramen_prior_y_mm**2)
            )[None, :]
            weighted = heat[:, 5 + li : 6 + li] * prior[None, None]
            # Frame normal points to world +x = patient left, so larger offsets are the patient's left.
            for side, mask, store in (
                ("left", ds > mid + self.cfg.side_margin_mm, left),
                ("right", ds < mid - self.cfg.side_margin_mm, right),
            ):
                if not mask.any():
                    notes.append(f"{side} foramen {LEVEL_NAMES[lv]} beyond stack")
                    mask = (ds > mid) if side == "left" else (ds < mid)
                    if not mask.any():
                        mask = np.ones_like(ds, dtype=bool)
                point, score = self._peak(frame, ds, weighted, 0, mask)
                store[lv] = point
                if score < self.cfg.min_peak:
                    notes.append(f"{side} foramen {LEVEL_NAMES[lv]} low confidence (peak {score:.2f})")
        return left, right, notes

    def _axial(self, stacks: list[Volume], centre: np.ndarray) -> tuple[Volume, int, np.ndarray, np.ndarray, float]:
        """Nearest axial slice to ``centre`` over all stacks, then left/right recess world points on it."""
        vol, pr, _ = nearest_stack(stacks, centre)
        cfg = self.cfg
        frame = self._ax_frames.setdefault(id(vol), PlaneFrame.build(vol, "axial", cfg.ax_spacing_mm, cfg.ax_size))
        d = float(frame.offsets[pr.slice_index])
        _, row, col = frame.to_frame(centre)
        c = (cfg.ax_size - 1) / 2.0
        shift = ((col - c) * cfg.ax_spacing_mm, (row - c) * cfg.ax_spacing_mm)
        img = frame.sample(np.array([d]), np.array([shift]), cfg.channel_offset_mm)
        heat = self._heatmaps(self.ax_net, img)[0]
        pts = []
        for ch in range(N_AX):
            r, cc, _ = decode_peak(heat[ch])
            pts.append(frame.to_world(d, r, cc, shift))
        return vol, pr.slice_index, pts[0], pts[1], abs(pr.distance_mm)

    # ----------------------------------------------------------------- public
    def predict_volumes(self, study_id: int, vols: StudyVolumes) -> pd.DataFrame:
        """The 25 points of a study from already-read stacks (see :meth:`predict_study`)."""
        with torch_threads(self.cfg.num_threads):
            return self._predict_volumes(study_id, vols)

    def _predict_volumes(self, study_id: int, vols: StudyVolumes) -> pd.DataFrame:
        self._ax_frames: dict[int, PlaneFrame] = {}
        rows: dict[tuple[str, str], dict] = {}

        def put(cond: str, lv: str, vol: Volume | None, world: np.ndarray | None, flag: str, k: int | None = None):
            if vol is None or world is None:
                rows[(cond, lv)] = {"series_id": -1, "instance_number": -1, "x": np.nan, "y": np.nan,
                                    "world": np.full(3, np.nan), "flag": flag}  # fmt: skip
                return
            pr = project_point(vol, world)
            k = pr.slice_index if k is None else k
            snapped = pixel_to_world(vol, pr.x, pr.y, k)
            rows[(cond, lv)] = {"series_id": int(vol.series_id), "instance_number": int(vol.instance_numbers[k]),
                                "x": pr.x, "y": pr.y, "world": snapped, "flag": flag}  # fmt: skip

        t2, t1 = vols.sag_t2, vols.sag_t1
        scan_t2 = self.sagittal_scan(t2) if t2 is not None else None
        scan_t1 = self.sagittal_scan(t1) if t1 is not None else None
        p_t2, p_t1 = vols.problems.get(SAG_T2, ""), vols.problems.get(SAG_T1, "")
        if scan_t2 is None and scan_t1 is None:
            why = _flag(p_t2, p_t1) or "no sagittal series"
            for cond in CONDITIONS:
                for lv in LEVELS:
                    put(cond, lv, None, None, f"not localised: {why}")
            return self._frame(study_id, rows)

        canal_vol, canal_scan = (t2, scan_t2) if scan_t2 is not None else (t1, scan_t1)
        canal_flag = "" if scan_t2 is not None else f"{p_t2}: canal from {SAG_T1}"
        canal, canal_score = self._canal(canal_vol, canal_scan)
        z = np.array([canal[lv][2] for lv in LEVELS])
        if not np.all(np.diff(z) < 0):  # levels must run head→feet; otherwise two levels share a disc
            canal_flag = _flag(canal_flag, "canal levels out of head-to-feet order")
        for lv in LEVELS:
            low = f"low confidence (peak {canal_score[lv]:.2f})" if canal_score[lv] < self.cfg.min_peak else ""
            put("spinal_canal_stenosis", lv, canal_vol, canal[lv], _flag(canal_flag, low))

        fora_vol, fora_scan = (t1, scan_t1) if scan_t1 is not None else (t2, scan_t2)
        fora_flag = "" if scan_t1 is not None else f"{p_t1}: foramina from {SAG_T2}"
        left, right, notes = self._foramina(fora_scan, canal)
        for lv in LEVELS:
            extra = [n for n in notes if LEVEL_NAMES[lv] in n]
            put("left_neural_foraminal_narrowing", lv, fora_vol, left[lv], _flag(fora_flag, *[n for n in extra if n.startswith("left")]))
            put("right_neural_foraminal_narrowing", lv, fora_vol, right[lv], _flag(fora_flag, *[n for n in extra if n.startswith("right")]))

        for lv in LEVELS:
            centre = canal[lv] + self.offsets["sub_mid"][lv]
            if not vols.axial:
                why = vols.problems.get(AX_T2, "no Axial T2 series")
                flag = f"{why}: subarticular estimated from sagittal"
                put("left_subarticular_stenosis", lv, canal_vol, canal[lv] + self.offsets["sub_left"][lv], flag)
                put("right_subarticular_stenosis", lv, canal_vol, canal[lv] + self.offsets["sub_right"][lv], flag)
                continue
            vol, k, lp, rp, dist = self._axial(vols.axial, centre)
            flag = f"axial slice {dist:.1f} mm from level" if dist > self.cfg.axial_max_distance_mm else ""
            if lp[0] < rp[0]:  # patient left must have the larger world x (LPS); never trust channel order blindly
                flag = _flag(flag, "left/right recess order swapped by world x")
                lp, rp = rp, lp
            put("left_subarticular_stenosis", lv, vol, lp, flag, k)
            put("right_subarticular_stenosis", lv, vol, rp, flag, k)
        return self._frame(study_id, rows)

    def predict_study(self, study: Study) -> pd.DataFrame:
        """All 25 points of a study (columns :data:`POINT_COLUMNS`), in competition condition × level order.

        Missing or unreadable series are inferred from the others where possible; ``flag`` says why.
        """
        return self.predict_volumes(study.study_id, load_study_volumes(study))

    @staticmethod
    def _frame(study_id: int, rows: dict) -> pd.DataFrame:
        recs = []
        for cond in CONDITIONS:
            for lv in LEVELS:
                r = rows[(cond, lv)]
                recs.append({
                    "study_id": int(study_id), "series_id": r["series_id"], "instance_number": r["instance_number"],
                    "condition": CONDITION_NAMES[cond], "level": LEVEL_NAMES[lv],
                    "x": float(r["x"]), "y": float(r["y"]),
                    "world_x": float(r["world"][0]), "world_y": float(r["world"][1]), "world_z": float(r["world"][2]),
                    "flag": r["flag"],
                })  # fmt: skip
        df = pd.DataFrame.from_records(recs, columns=list(POINT_COLUMNS))
        return df.astype({"study_id": "int64", "series_id": "int64", "instance_number": "int64"})


def fallback_rows(study_id: int, reason: str) -> pd.DataFrame:
    """25 unlocalised rows (series/instance −1, NaN coordinates) carrying ``reason`` in ``flag``."""
    rows = {(c, lv): {"series_id": -1, "instance_number": -1, "x": np.nan, "y": np.nan,
                      "world": np.full(3, np.nan), "flag": reason}
            for c in CONDITIONS for lv in LEVELS}  # fmt: skip
    return Localizer._frame(study_id, rows)


def localize_dataset(
    data_dir: Path | str, model_dir: Path | str, out_csv: Path | str, split: str = "test"
) -> pd.DataFrame:
    """Localise every study of ``split``; write the points CSV (+ ``_detail.csv``) atomically; return all rows.

    A study that fails is logged and gets 25 flagged fallback rows; the batch never stops.
    """
    from radspine.io.dataset import Dataset

    loc = Localizer.load(model_dir)
    ds = Dataset.open(Path(data_dir))
    frames = []
    for study in ds.studies(split):
        try:
            frames.append(loc.predict_study(study))
        except Exception as err:  # noqa: BLE001 - one bad study must not stop the batch
            reason = str(err) if isinstance(err, RadspineError) else f"{type(err).__name__}: {err}"
            reason = reason.splitlines()[0] if reason else type(err).__name__
            log.warning("study %s: localisation failed, fallback rows: %s", study.study_id, reason)
            frames.append(fallback_rows(study.study_id, f"failed: {reason}"))
    out = pd.concat(frames, ignore_index=True) if frames else fallback_rows(0, "").iloc[:0]
    write_points(out, out_csv)
    return out


def model_summary(model_dir: Path | str) -> dict:
    """meta.json of a bundle (for CLI display)."""
    return json.loads((Path(model_dir) / META_FILE).read_text())
