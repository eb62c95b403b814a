"""Domain randomisation (SynthSeg idea): phantom tissue label maps painted with random contrasts.

:func:`paint_study` turns the label maps of one phantom study (:func:`radspine.synth.label_volumes`) into a
:class:`StudyVolumes` whose pixels are random intensities per tissue (any ordering, or a jittered T1/T2/STIR
table), times a smooth random bias field, blurred, with noise and an arbitrary scanner scale. Geometry is
the written DICOM geometry, so the study's ``train_label_coordinates.csv`` rows resolve onto it.
:func:`randomised_loaders` builds the loaders :class:`radspine.localize.train._TrainData` takes.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd
from scipy import ndimage

from radspine.constants import AX_T2, SAG_T1, SAG_T2
from radspine.io.volumes import StudyVolumes
from radspine.types import Volume

# A painted copy of study s number r gets the pseudo study id s * COPY_BASE + r (r = 0 is never painted:
# it is the phantom's own rendering, read from DICOM).
COPY_BASE = 1000


def _bias(shape: tuple[int, int, int], rng: np.random.Generator, strength: float) -> np.ndarray:
    """Smooth multiplicative field: exp of a random low-order polynomial over (slice, row, col)."""
    s, r, c = shape
    k, y, x = np.meshgrid(np.linspace(-1, 1, s), np.linspace(-1, 1, r), np.linspace(-1, 1, c), indexing="ij")
    terms = [x, y, k, x * y, x * x, y * y, x * k, y * k]
    coef = rng.normal(0, strength, len(terms))
    return np.exp(sum(a * t for a, t in zip(coef, terms, strict=True))).astype(np.float32)


def paint(vol: Volume, rng: np.random.Generator, contrast: str = "T2") -> Volume:
    """A label-map Volume (pixels = tissue codes) painted with a random contrast, bias, blur and noise."""
    from radspine.synth import TISSUE_LABELS, random_table

    codes = np.clip(np.rint(vol.pixels), 0, 255).astype(np.int64)
    lut = np.zeros(int(max(TISSUE_LABELS.values())) + 1, np.float32)
    if rng.random() < 0.5:
        table = random_table(rng, contrast)  # jittered real table half the time, any ordering otherwise
        for name, code in TISSUE_LABELS.items():
            lut[code] = table.get(name, 0.0)
    else:
        lut[:] = rng.uniform(0.0, 1.0, len(lut))
    lut[0] = rng.uniform(0.0, 0.1)  # air/background stays dark on MRI
    img = lut[np.clip(codes, 0, len(lut) - 1)]
    # Per-tissue texture, then resolution loss (blur), bias field and noise.
    img = img * (1 + rng.uniform(0, 0.15) * rng.standard_normal(img.shape).astype(np.float32))
    sig = rng.uniform(0.0, 1.2)
    if sig > 0.2:
        img = ndimage.gaussian_filter(img, (0, sig, sig))
    img = img * _bias(img.shape, rng, rng.uniform(0.0, 0.35))
    img = np.abs(img + rng.normal(0, rng.uniform(0.005, 0.06), img.shape).astype(np.float32))
    scale = float(np.exp(rng.uniform(np.log(50.0), np.log(5000.0))))
    return replace(vol, pixels=(img * scale).astype(np.float32))


def paint_study(labels: list, rng: np.random.Generator, study_id: int | None = None) -> StudyVolumes:
    """StudyVolumes of painted label maps (``labels``: the :class:`radspine.synth.SeriesLabels` of a study)."""
    from radspine.geometry import orientation_of

    out = StudyVolumes(study_id=int(labels[0].study_id if study_id is None else study_id))
    for sl in labels:
        contrast = getattr(sl, "contrast", "T2") or "T2"
        vols = [paint(v, rng, contrast if contrast in ("T1", "T2", "STIR") else "T2") for v in sl.volumes()]
        if study_id is not None:
            vols = [replace(v, study_id=int(study_id)) for v in vols]
        if sl.description == AX_T2:
            out.axial.extend(v for v in vols if orientation_of(v) == "axial")
            continue
        vols = sorted((v for v in vols if orientation_of(v) == "sagittal"), key=lambda v: -v.pixels.shape[0])
        attr = "sag_t2" if sl.description == SAG_T2 else "sag_t1" if sl.description == SAG_T1 else None
        if attr is None or not vols:
            continue
        if getattr(out, attr) is None:
            setattr(out, attr, vols[0])
            out.extra.extend(vols[1:])
        else:
            out.extra.extend(vols)
    return out


class _Painted:
    """Loader of one painted copy (picklable; the label maps are computed once and cached)."""

    def __init__(self, seed: int, index: int, copy: int, synth_kwargs: dict, cache: dict, study_id: int):
        self.seed, self.index, self.copy, self.kw, self.cache = seed, index, copy, synth_kwargs, cache
        self.study_id = study_id

    def __call__(self) -> StudyVolumes:
        from radspine.synth import label_volumes

        key = (self.seed, self.index)
        if key not in self.cache:
            self.cache.clear()  # one study's maps at a time: copies of a study are loaded consecutively
            self.cache[key] = label_volumes(self.seed, self.index, **self.kw)
        labs = self.cache[key]
        if int(labs[0].study_id) != self.study_id:
            raise RuntimeError(f"label maps of index {self.index} are study {labs[0].study_id}, not {self.study_id}")
        rng = np.random.default_rng([self.seed, self.index, self.copy, 7])
        return paint_study(labs, rng, study_id=int(labs[0].study_id) * COPY_BASE + self.copy)


def randomised_loaders(data_dir: Path, seed: int, copies: int, synth_kwargs: dict,
                       dicom: bool = True) -> tuple[dict[int, Callable[[], StudyVolumes]], pd.DataFrame]:  # fmt: skip
    """Loaders and coordinates for a phantom written by ``make_dataset(data_dir, ..., seed=seed, **synth_kwargs)``:
    per train study its DICOM rendering (pseudo id ``s * COPY_BASE``, if ``dicom``) and ``copies`` painted
    copies (ids ``s * COPY_BASE + r``, r = 1..copies); the coordinates are duplicated under those ids."""
    from functools import partial

    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes

    ds = Dataset.open(Path(data_dir))
    coords = ds.coordinates
    studies = ds.studies("train")
    loaders: dict[int, Callable[[], StudyVolumes]] = {}
    frames = []
    cache: dict = {}
    index_of = {sid: i for i, sid in enumerate(phantom_study_ids(seed, len(ds.studies("train")) + len(ds.studies("test"))))}
    for st in studies:
        index = index_of[int(st.study_id)]
        rows = coords[coords.study_id == st.study_id]
        if dicom:
            loaders[st.study_id * COPY_BASE] = partial(_reid, partial(load_study_volumes, st), st.study_id * COPY_BASE)
            frames.append(rows.assign(study_id=st.study_id * COPY_BASE))
        for r in range(1, copies + 1):
            loaders[st.study_id * COPY_BASE + r] = _Painted(seed, index, r, synth_kwargs, cache, int(st.study_id))
            frames.append(rows.assign(study_id=st.study_id * COPY_BASE + r))
    return loaders, pd.concat(frames, ignore_index=True)


def _reid(load: Callable[[], StudyVolumes], sid: int) -> StudyVolumes:
    vols = load()
    vols.study_id = sid
    return vols


def phantom_study_ids(seed: int, n: int) -> list[int]:
    """Study ids of the first ``n`` studies of ``make_dataset(seed=seed)`` (synth's own rule)."""
    from radspine.synth import study_ids

    return study_ids(seed, n)


class _RealVariant:
    """Loader of a field-of-view / scale variant of a real study's sagittal stacks (picklable).

    Rows ``[r0, r1)`` of every sagittal stack are kept (the stack's origin moves with them) and the pixel spacing
    is multiplied by ``scale`` (anatomy looks larger or smaller in mm); the coordinates' y shift by ``r0``.
    """

    def __init__(self, load: Callable[[], StudyVolumes], study_id: int, r0: int, r1: int, scale: float):
        self.load, self.study_id, self.r0, self.r1, self.scale = load, study_id, r0, r1, scale

    def _vol(self, v: Volume | None) -> Volume | None:
        if v is None:
            return None
        r1 = min(self.r1, v.pixels.shape[1])
        ps = (v.pixel_spacing[0] * self.scale, v.pixel_spacing[1] * self.scale)
        pos = v.positions + self.r0 * ps[0] * v.col_cosine[None, :]
        return replace(v, pixels=np.ascontiguousarray(v.pixels[:, self.r0 : r1, :]), positions=pos, pixel_spacing=ps,
                       study_id=self.study_id, meta={**v.meta, "variant": (self.r0, r1, self.scale)})  # fmt: skip

    def __call__(self) -> StudyVolumes:
        vols = self.load()
        return StudyVolumes(sag_t2=self._vol(vols.sag_t2), sag_t1=self._vol(vols.sag_t1),
                            problems=dict(vols.problems), study_id=self.study_id)  # fmt: skip


def real_variants(loaders: dict[int, Callable[[], StudyVolumes]], coords: pd.DataFrame, rows: dict[int, int],
                  copies: int, seed: int) -> tuple[dict[int, Callable[[], StudyVolumes]], pd.DataFrame]:  # fmt: skip
    """``copies`` field-of-view / scale variants of each real labelled study (sagittal stacks only).

    Real fields of view range from tight (L1-S1) to wide (lower thoracic to sacrum), and a few real scans teach
    level identity only if the net sees both: half the variants crop tight around the labelled levels (from
    0.3-1 disc gap above the highest to 0.6-1.6 gaps below the lowest, so the sacrum stays in view or is just
    cut), the others keep a random 60-100 % window of the rows that holds every label; every variant scales
    the anatomy by 0.9-1.1. ``rows``: image rows of each study's sagittal stack. Variant r of study s gets the
    pseudo id ``s * COPY_BASE + r`` (r ≥ 1) and the study's coordinates with y moved by the crop.
    """
    out: dict[int, Callable[[], StudyVolumes]] = {}
    frames = []
    for sid, load in loaders.items():
        c = coords[coords.study_id == sid]
        if c.empty:
            continue
        n = int(rows[sid])
        ys = np.sort(c["y"].to_numpy(dtype=np.float64))
        gap = float(np.median(np.diff(ys))) if len(ys) > 1 else n / 8.0
        for r in range(1, copies + 1):
            rng = np.random.default_rng([seed, int(sid) % (2**31), r])
            if rng.random() < 0.5:
                r0 = ys[0] - rng.uniform(0.3, 1.0) * gap
                r1 = ys[-1] + rng.uniform(0.6, 1.6) * gap
            else:
                h = rng.uniform(0.6, 1.0) * n
                lo, hi = max(0.0, ys[-1] + 0.3 * gap - h), min(ys[0] - 0.3 * gap, n - h)
                r0 = rng.uniform(lo, hi) if hi > lo else max(0.0, (ys[0] + ys[-1] - h) / 2)
                r1 = r0 + h
            r0, r1 = int(np.clip(np.floor(r0), 0, n - 1)), int(np.clip(np.ceil(r1), 1, n))
            new_id = int(sid) * COPY_BASE + r
            out[new_id] = _RealVariant(load, new_id, r0, r1, float(rng.uniform(0.9, 1.1)))
            frames.append(c.assign(study_id=new_id, y=c["y"] - r0))
    return out, (pd.concat(frames, ignore_index=True) if frames else coords.iloc[:0])
