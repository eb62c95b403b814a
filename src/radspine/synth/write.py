"""Build phantom studies and write them in the exact RSNA 2024 LSDC Kaggle layout."""

from __future__ import annotations

import dataclasses
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from radspine.constants import (
    AX_T2,
    CONDITION_NAMES,
    CONDITIONS,
    LABEL_COLUMNS,
    LEVEL_NAMES,
    LEVELS,
    SAG_T1,
    SAG_T2,
    SEVERITIES,
    SEVERITY_COLUMNS,
    row_id,
    study_row_ids,
)
from radspine.errors import ConfigError, DatasetError
from radspine.fsutil import write_csv_atomic
from radspine.geometry import project_point
from radspine.synth.anatomy import CONTRASTS, LEVEL_DISC, Patient, Variation, random_table
from radspine.synth.labels import sample_latents
from radspine.synth.presets import LARGE_FOV_MM, check_preset, draw_geoms
from radspine.synth.quirks import QuirkConfig
from radspine.synth.render import VENDORS, SeriesPlan, plan_axial, plan_sagittal, render_series

log = logging.getLogger(__name__)

MR_IMAGE_STORAGE = "1.2.840.10008.5.1.4.1.1.4"
UID_PREFIX = "1.2.826.0.1.3680043.8.498."  # pydicom's registered root; suffix is a hash of the seed
OPTIONAL_TAGS = ("SpacingBetweenSlices", "SliceThickness", "Manufacturer", "MagneticFieldStrength", "PatientPosition")


@dataclass(frozen=True)
class _StudyJob:
    split: str
    study_id: int
    seed_seq: np.random.SeedSequence
    seed: int
    size: int
    quirks: QuirkConfig
    root: str
    preset: str | None = None
    matrix_scale: float = 1.0


def _job_key(job: _StudyJob) -> int:
    return job.study_id


def _uid(seed: int, *parts: object) -> str:
    from pydicom.uid import generate_uid

    return str(generate_uid(prefix=UID_PREFIX, entropy_srcs=["radspine-synth", str(seed), *map(str, parts)]))


def _ds(v: float) -> str:
    """DICOM decimal string of at most 16 characters."""
    s = f"{v:.6f}".rstrip("0").rstrip(".")
    return s if len(s) <= 16 else f"{v:.8g}"


def _write_series(folder: Path, plan: SeriesPlan, pixels: np.ndarray, slope: float, intercept: float,
                  job: _StudyJob, vendor: str, field: float) -> int:
    """Write one series as MR Image Storage files ``<InstanceNumber>.dcm``; returns bytes written."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian

    folder.mkdir(parents=True, exist_ok=True)
    study_uid = _uid(job.seed, job.study_id)
    series_uid = _uid(job.seed, job.study_id, plan.series_id)
    frame_uid = _uid(job.seed, job.study_id, "frame")
    total = 0
    vmax = int(pixels.max()) if pixels.size else 0
    bits = plan.bits_stored or (12 if vmax < 4096 else 16)
    for k in range(len(plan.positions)):
        inst = int(plan.instance_numbers[k])
        sop_uid = _uid(job.seed, job.study_id, plan.series_id, inst)
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MR_IMAGE_STORAGE
        meta.MediaStorageSOPInstanceUID = sop_uid
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SpecificCharacterSet = "ISO_IR 100"
        ds.ImageType = ["ORIGINAL", "PRIMARY", "M", "NONE"]
        ds.SOPClassUID = MR_IMAGE_STORAGE
        ds.SOPInstanceUID = sop_uid
        ds.Modality = "MR"
        ds.Manufacturer = vendor
        ds.PatientName = f"SYNTH^{job.study_id}"
        ds.PatientID = str(job.study_id)
        ds.BodyPartExamined = "LSPINE"
        ds.ScanningSequence = "SE" if plan.contrast != "STIR" else ["SE", "IR"]
        ds.MagneticFieldStrength = _ds(field)
        ds.SliceThickness = _ds(plan.thickness)
        ds.SpacingBetweenSlices = _ds(plan.spacing_between)
        ds.RepetitionTime = _ds(600.0 if plan.contrast == "T1" else 3500.0)
        ds.EchoTime = _ds(12.0 if plan.contrast == "T1" else 95.0)
        ds.PatientPosition = "HFS"
        ds.StudyInstanceUID = study_uid
        ds.SeriesInstanceUID = series_uid
        ds.StudyID = str(job.study_id)[-6:]
        ds.SeriesNumber = plan.series_number
        ds.InstanceNumber = inst
        ds.SeriesDescription = plan.dicom_description
        ds.ImagePositionPatient = [_ds(v) for v in plan.positions[k]]
        ds.ImageOrientationPatient = [_ds(v) for v in (*plan.row_cos[k], *plan.col_cos[k])]
        normal = np.cross(plan.row_cos[k], plan.col_cos[k])
        ds.FrameOfReferenceUID = frame_uid
        ds.SliceLocation = _ds(float(plan.positions[k] @ normal))
        ds.SamplesPerPixel = 1
        ds.PhotometricInterpretation = "MONOCHROME2"
        ds.Rows = plan.rows
        ds.Columns = plan.cols
        ds.PixelSpacing = [_ds(plan.pixel_spacing[0]), _ds(plan.pixel_spacing[1])]
        ds.BitsAllocated = 16
        ds.BitsStored = bits
        ds.HighBit = bits - 1
        ds.PixelRepresentation = 0
        if slope != 1.0 or intercept != 0.0:
            ds.RescaleIntercept = _ds(intercept)
            ds.RescaleSlope = _ds(slope)
            ds.RescaleType = "US"
        img = pixels[k]
        wc = float(np.percentile(img[:: max(1, plan.rows // 32), :: max(1, plan.cols // 32)], 60)) * slope
        ds.WindowCenter = _ds(round(wc))
        ds.WindowWidth = _ds(round(2 * wc + 1))
        ds.PixelData = img.astype("<u2").tobytes()
        if plan.missing_tag is not None and plan.missing_tag in ds:
            delattr(ds, plan.missing_tag)
        path = folder / f"{inst}.dcm"
        ds.save_as(path, enforce_file_format=True)
        if plan.transfer_syntax:
            _compress_file(path, ds, plan.transfer_syntax)
        total += path.stat().st_size
    return total


def _compress_file(path: Path, ds, kind: str) -> None:
    """Rewrite ``path`` (written uncompressed from ``ds``) with a lossless compressed transfer syntax.

    JPEG 2000 and RLE use pydicom's encoders (pylibjpeg-openjpeg / native RLE). pydicom has no JPEG-LS encoder
    here (pyjpegls is not installed), so JPEG-LS frames come from GDCM (CharLS): GDCM re-encodes the file
    and only its encapsulated PixelData is kept, so every other tag stays ours. Without GDCM the series falls
    back to JPEG 2000.
    """
    from pydicom import dcmread
    from pydicom.uid import JPEG2000Lossless, JPEGLSLossless, RLELossless

    if kind == "jpegls":
        try:
            import gdcm
        except ImportError:  # pragma: no cover - gdcm ships with the project's dependencies
            kind = "j2k"
        else:
            tmp = path.with_suffix(".jls.tmp")
            reader = gdcm.ImageReader()
            reader.SetFileName(str(path))
            change = gdcm.ImageChangeTransferSyntax()
            change.SetTransferSyntax(gdcm.TransferSyntax(gdcm.TransferSyntax.JPEGLSLossless))
            if not reader.Read():
                raise DatasetError(f"synth: GDCM cannot read {path} to compress it")
            change.SetInput(reader.GetImage())
            if not change.Change():
                raise DatasetError(f"synth: GDCM could not JPEG-LS encode {path}")
            writer = gdcm.ImageWriter()
            writer.SetFileName(str(tmp))
            writer.SetFile(reader.GetFile())
            writer.SetImage(change.GetOutput())
            if not writer.Write():
                raise DatasetError(f"synth: GDCM could not write {tmp}")
            data = dcmread(tmp).PixelData
            tmp.unlink()
            ds.PixelData = data
            ds["PixelData"].VR = "OB"
            ds.file_meta.TransferSyntaxUID = JPEGLSLossless
            ds.save_as(path, enforce_file_format=True)
            return
    if kind == "j2k" and min(int(ds.Rows), int(ds.Columns)) < 64:
        kind = "rle"  # openjpeg's 6 resolution levels need >= 32 px a side; tiny test phantoms use RLE
    if kind == "j2k":
        # openjpeg logs an INFO line per encoded tile; thousands of them would drown the CLI's log.
        logging.getLogger("openjpeg").setLevel(logging.WARNING)
    ds.compress(JPEG2000Lossless if kind == "j2k" else RLELossless, generate_instance_uid=False)
    ds.save_as(path, enforce_file_format=True)


def _series_ids(rng: np.random.Generator, n: int) -> list[int]:
    ids: list[int] = []
    while len(ids) < n:
        v = int(rng.integers(10**6, 4 * 10**9))
        if v not in ids:
            ids.append(v)
    return ids


def _variation_rngs(job: _StudyJob) -> list[np.random.Generator]:
    """Independent streams for reader noise, anatomy, acquisition and clicks: the main study stream (and
    so the clean phantom) is the same whatever the variation rates are."""
    base = job.seed_seq
    return [np.random.default_rng(np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, 7919, i)))
            for i in range(4)]


def _extra_rngs(job: _StudyJob) -> tuple[np.random.Generator, np.random.Generator]:
    """Streams of the localizer-hardness variations and of the preset's geometry, apart from the four above
    so that neither changes a study's anatomy, reader or acquisition draws."""
    base = job.seed_seq
    return tuple(np.random.default_rng(np.random.SeedSequence(base.entropy, spawn_key=(*base.spawn_key, 7919, i)))
                 for i in (4, 5))


# Acquisition draws per series slot (T1, T2, 2nd T1, 3 split axial, repeated axial), one row each.
_PV, _THIN, _FLIP, _FLIP_KIND, _GHOST, _WRAP, _PHASE, _THIN_GAP, _THIN_COVER = range(9)


@dataclass
class _PlannedStudy:
    rng: np.random.Generator
    acq_rng: np.random.Generator
    click_rng: np.random.Generator
    lat: object
    pat: Patient
    plans: list[SeriesPlan]
    main_axial: list[SeriesPlan]
    vendor: str
    field: float
    wide: bool
    wide_scale: float
    cropped: int


def _plan_study(job: _StudyJob) -> _PlannedStudy:
    """Sample one study's patient and plan its series (no pixels yet)."""
    rng = np.random.default_rng(job.seed_seq)
    reader_rng, anat_rng, acq_rng, click_rng = _variation_rngs(job)
    hard_rng, preset_rng = _extra_rngs(job)
    q = job.quirks
    lat = sample_latents(rng, 1, q, reader_rng=reader_rng)[0]
    pat = Patient.sample(rng, lat, Variation.sample(anat_rng, q))
    acq = acq_rng.random((7, 9))
    wide = acq_rng.random() < q.wide_intensity
    wide_scale = float(np.exp(acq_rng.uniform(np.log(80.0), np.log(20000.0))))
    # Localizer-hardness variations: fixed draws first, so each rate leaves the others' draws alone.
    hu = hard_rng.random(4)
    h_shift = hard_rng.uniform(-60.0, 60.0, 2)
    h_crop = 1 if hard_rng.random() < 0.7 else -1  # mostly a thoracic scan, else one below the sacrum
    h_tables = {c: random_table(hard_rng, c) for c in CONTRASTS}
    h_lower = LEVELS[-3:] if hard_rng.random() < 0.5 else LEVELS[-2:]
    h_slot = hard_rng.random((7, 4))  # large FOV, its size, compressed, which syntax
    shift = tuple(h_shift) if hu[0] < q.spine_offcentre else (0.0, 0.0)
    crop = h_crop if hu[1] < q.spine_cropped else 0
    tables = h_tables if hu[2] < q.random_contrast else None
    lower_only = bool(hu[3] < q.axial_lower_only)
    geoms = (draw_geoms(preset_rng, [True, True, True, False, False, False, False], job.matrix_scale)
             if job.preset == "rsna" else None)

    def sag_geom(slot: int) -> dict:
        kw: dict = {"shift": shift, "crop": crop}
        big = h_slot[slot, 0] < q.large_fov
        if geoms is not None:
            g = geoms[slot]
            lo, hi = LARGE_FOV_MM if big else (g.fov, g.fov)
            kw.update(matrix=g.matrix, fov=lo + (hi - lo) * h_slot[slot, 1], n_slices=g.n_slices)
        elif big:
            kw["fov"] = 300.0 + 150.0 * h_slot[slot, 1]
        return kw

    def ax_geom(slot: int) -> dict:
        if geoms is None:
            return {}
        g = geoms[slot]
        return {"matrix": g.matrix, "fov": g.fov, "n_slices": g.n_slices}

    def flip(slot: int) -> int:
        return 0 if acq[slot, _FLIP] >= q.flipped_orientation else 1 + int(acq[slot, _FLIP_KIND] < 0.5)

    def thin(slot: int) -> tuple[float, float] | None:
        return (acq[slot, _THIN_GAP], acq[slot, _THIN_COVER]) if acq[slot, _THIN] < q.thin_slices else None

    vendor = str(rng.choice(VENDORS))
    field = float(rng.choice([1.5, 3.0]))
    ids = _series_ids(rng, 7)  # T1, T2, 2nd T1, up to 3 split axial, repeated axial
    stir = rng.random() < 0.15
    plans = [
        plan_sagittal(rng, pat, job.size, SAG_T1, "T1", ids[0], 1, thin=thin(0), flip=flip(0), **sag_geom(0)),
        plan_sagittal(rng, pat, job.size, SAG_T2, "STIR" if stir else "T2", ids[1], 2, thin=thin(1), flip=flip(1),
                      **sag_geom(1)),
    ]
    slots = [0, 1]
    if rng.random() < q.second_sag_t1:
        plans.append(plan_sagittal(rng, pat, job.size, SAG_T1, "T1", ids[2], 4, thin=thin(2), flip=flip(2),
                                   **sag_geom(2)))
        slots.append(2)
    main_axial: list[SeriesPlan] = []
    if rng.random() >= q.no_axial:
        tilted = bool(rng.random() < 0.6)
        if rng.random() < q.axial_split:
            n_parts = 3 if rng.random() < 0.15 else 2  # real data: 306 studies with 2 axial series, 28 with 3
            cuts = np.sort(rng.choice(np.arange(1, len(LEVELS)), size=n_parts - 1, replace=False))
            groups = np.split(np.array(LEVELS), cuts)
            for gi, grp in enumerate(groups):
                main_axial.append(plan_axial(rng, pat, job.size, ids[3 + gi], 5 + gi, tuple(grp), tilted,
                                             flip=flip(3 + gi), **ax_geom(3 + gi)))
                slots.append(3 + gi)
        else:
            main_axial.append(plan_axial(rng, pat, job.size, ids[3], 5, h_lower if lower_only else LEVELS, tilted,
                                         flip=flip(3), **ax_geom(3)))
            slots.append(3)
        plans += main_axial
        if rng.random() < q.two_axial:
            plans.append(plan_axial(rng, pat, job.size, ids[6], 9, LEVELS, not tilted, flip=flip(6), **ax_geom(6)))
            slots.append(6)
    for p, slot in zip(plans, slots):
        if rng.random() < q.reversed_instances:
            p.instance_numbers = p.instance_numbers[::-1].copy()
        if rng.random() < q.missing_tag:
            p.missing_tag = str(rng.choice(OPTIONAL_TAGS))
        a = acq[slot]
        p.partial_volume = bool(a[_PV] < q.partial_volume)
        p.ghosting = bool(a[_GHOST] < q.motion_ghosting)
        p.wrap = bool(a[_WRAP] < q.wrap_around)
        # Phase encoding usually runs anterior-posterior (the short body axis on sagittal, rows on axial).
        ap_axis = 1 if p.description != AX_T2 else 0
        p.phase_axis = ap_axis if a[_PHASE] < 0.7 else 1 - ap_axis
        p.table = tables[p.contrast] if tables is not None else None
        hs = h_slot[slot]
        if hs[2] < q.compressed:
            p.transfer_syntax = "jpegls" if hs[3] < 0.5 else ("j2k" if hs[3] < 0.85 else "rle")
        if job.preset == "rsna":
            p.bits_stored = 16
    return _PlannedStudy(rng, acq_rng, click_rng, lat, pat, plans, main_axial, vendor, field, bool(wide),
                         wide_scale, crop)


def _build_study(job: _StudyJob) -> dict:
    """Sample, render and write one study; returns its CSV rows and counts."""
    st = _plan_study(job)
    rng, acq_rng, click_rng, lat, pat, plans = st.rng, st.acq_rng, st.click_rng, st.lat, st.pat, st.plans
    main_axial, vendor, field, wide, wide_scale = st.main_axial, st.vendor, st.field, st.wide, st.wide_scale
    q = job.quirks

    # Render and write into a hidden folder, renamed into place when complete.
    root = Path(job.root) / f"{job.split}_images"
    final = root / str(job.study_id)
    tmp = root / f".{job.study_id}.partial"
    if tmp.exists():
        shutil.rmtree(tmp)
    nbytes = nfiles = 0
    for p in plans:
        pix, slope, icpt = render_series(rng, pat, p, vendor, vrng=acq_rng, scale=wide_scale if wide else None)
        nbytes += _write_series(tmp / str(p.series_id), p, pix, slope, icpt, job, vendor, field)
        nfiles += len(p.positions)
    if final.exists():
        shutil.rmtree(final)
    os.replace(tmp, final)

    click_sd = float(q.click_noise_mm * click_rng.uniform(0.5, 1.5))
    coords = _label_points(rng, pat, plans, main_axial, job.study_id, click_rng, click_sd)
    keep = [not lat.blank[CONDITIONS.index(c[3]), LEVELS.index(c[4])] for c in coords]
    coords = [c for c, k in zip(coords, keep) if k]
    if coords and rng.random() < q.missing_coords:
        drop = set(rng.choice(len(coords), size=min(len(coords), int(rng.integers(1, 4))), replace=False).tolist())
        coords = [c for i, c in enumerate(coords) if i not in drop]
    return {
        "study_id": job.study_id,
        "split": job.split,
        "series": [(job.study_id, p.series_id, p.description) for p in plans],
        "coords": coords,
        "landmarks": _landmarks(pat, job.study_id),
        "severity": lat.severity,
        "grade": lat.grade,
        "label": lat.label,
        "blank": lat.blank,
        "variation": pat.var,
        "acquisition": [(job.study_id, p.series_id, p.description, len(p.positions), round(p.spacing_between, 4),
                         int(p.extra.get("flip", 0)), p.partial_volume, p.ghosting, p.wrap, p.phase_axis,
                         round(wide_scale, 1) if wide else 0.0) for p in plans],
        "bytes": nbytes,
        "files": nfiles,
    }


def _landmarks(pat: Patient, study_id: int) -> list[tuple]:
    """Ground-truth geometry per level: disc centre (world), disc-plane normal (superior), true canal AP (mm)."""
    rows = []
    for lv in LEVELS:
        disc = LEVEL_DISC[lv]
        c = pat.to_world(pat.s_disc[disc], 0.0, 0.0)
        n = pat.tangent(pat.s_disc[disc])
        rows.append((study_id, lv, *np.round(c, 4), *np.round(n, 6), round(pat.canal_ap_at(disc), 4),
                     round(pat.midline_x(disc), 4)))
    return rows


FAR_MM = 10.0  # a label point farther than this from every slice of its series is not clickable


def _label_points(rng: np.random.Generator, pat: Patient, plans: list[SeriesPlan], axial: list[SeriesPlan],
                  study_id: int, click_rng: np.random.Generator | None = None, click_sd: float = 0.0) -> list[tuple]:
    """Reader clicks: (study_id, series_id, instance, condition, level, x, y).

    The slice is the one nearest the structure (after ~0.4 mm 3D jitter); the in-plane click then misses
    by a Gaussian of ``click_sd`` mm per axis (drawn from ``click_rng``, always, so images never change).
    A structure outside every image of its series (off-centre or cropped FOV), or more than ``FAR_MM`` from
    its nearest slice (an axial series that does not reach the level), gets no row: a reader cannot click it.
    """
    grid = {p.series_id: (p.rows, p.cols) for p in plans}
    sag_t1 = next(p for p in plans if p.description == SAG_T1).volumes()[0]
    sag_t2 = next(p for p in plans if p.description == SAG_T2).volumes()[0]
    ax_vols = [v for p in axial for v in p.volumes()]
    rows = []
    for c in CONDITIONS:
        for lv in LEVELS:
            disc = LEVEL_DISC[lv]
            if c == "spinal_canal_stenosis":
                vols, pt = [sag_t2], pat.canal_point(disc)
            elif "foraminal" in c:
                vols, pt = [sag_t1], pat.foramen_center(disc, "left" if c.startswith("left") else "right")
            else:
                vols, pt = ax_vols, pat.recess_center(disc, "left" if c.startswith("left") else "right")
            if not vols:
                continue
            pt = pt + rng.normal(0.0, 0.4, 3)
            best = min((project_point(v, pt) for v in vols), key=lambda pr: abs(pr.distance_mm))
            vol = next(v for v in vols if best.instance_number in set(v.instance_numbers.tolist())
                       and abs(project_point(v, pt).distance_mm) == abs(best.distance_mm))
            miss = click_rng.standard_normal(2) * click_sd if click_rng is not None else np.zeros(2)
            x, y = best.x + miss[0] / vol.pixel_spacing[1], best.y + miss[1] / vol.pixel_spacing[0]
            nr, nc = grid[vol.series_id]
            if abs(best.distance_mm) > FAR_MM or not (-0.5 <= best.x <= nc - 0.5 and -0.5 <= best.y <= nr - 0.5):
                continue  # after every draw, so the streams (and the other rows) stay the same
            rows.append((study_id, vol.series_id, best.instance_number, c, lv, round(x, 3), round(y, 3)))
    return rows


def study_ids(seed: int, n: int) -> list[int]:
    """Study ids of the first ``n`` studies of ``make_dataset(seed=seed)``, in index order (train first).

    Study k's id does not depend on ``n``.
    """
    id_seq = np.random.SeedSequence(int(seed)).spawn(1 + n)[0]
    id_rng = np.random.default_rng(id_seq)
    ids: list[int] = []
    while len(ids) < n:
        v = int(id_rng.integers(10**6, 4_290_000_000))
        if v not in ids:
            ids.append(v)
    return ids


def _study_jobs(seed: int, n: int, size: int, quirks: QuirkConfig, root: str, preset: str | None,
                matrix_scale: float, splits: list[str]) -> list[_StudyJob]:
    """Jobs of the first ``n`` studies of a seed (study k's seed and id do not depend on ``n``)."""
    study_seqs = np.random.SeedSequence(int(seed)).spawn(1 + n)[1:]
    return [_StudyJob(sp, sid, sq, int(seed), int(size), quirks, root, preset, float(matrix_scale))
            for sp, sid, sq in zip(splits, study_ids(seed, n), study_seqs)]


def study_patients(seed: int, n: int, size: int = 256, quirks: QuirkConfig | None = None,
                   preset: str | None = None, matrix_scale: float = 1.0) -> dict[int, Patient]:  # fmt: skip
    """The anatomy (:class:`Patient`) of the first ``n`` studies of ``make_dataset(seed=seed, ...)``, by study id.

    The phantom's own truth for measurement tests and benchmarks (sac area, foramen and recess sizes), drawn
    by the same code as the written studies, so it can never drift from them.
    """
    _check_args(size, preset, matrix_scale)
    if quirks is None:
        quirks = QuirkConfig.rsna() if preset == "rsna" else QuirkConfig()
    jobs = _study_jobs(seed, n, size, quirks, "", preset, matrix_scale, ["train"] * n)
    return {job.study_id: _plan_study(job).pat for job in jobs}


def _check_args(size: int, preset: str | None, matrix_scale: float) -> None:
    if not 16 <= int(size) <= 1024:
        raise ConfigError(f"synth: --size {size} must lie in [16, 1024] pixels")
    check_preset(preset)
    if not 0.0 < float(matrix_scale) <= 1.0:
        raise ConfigError(f"synth: matrix_scale {matrix_scale} must lie in (0, 1]")


def make_dataset(out: Path, train_studies: int, test_studies: int = 0, seed: int = 0, size: int = 256,
                 quirks: QuirkConfig | None = None, *, workers: int = 1, overwrite: bool = False,
                 preset: str | None = None, matrix_scale: float = 1.0) -> dict:
    """Write a labelled phantom in the Kaggle layout under ``out``; return a summary dict.

    Writes ``train_images/``, ``train.csv``, ``train_label_coordinates.csv``, ``train_series_descriptions.csv``,
    ``test_images/``, ``test_series_descriptions.csv``, ``sample_submission.csv`` and, outside the image folders,
    ``test_solution.csv`` (row_id, normal_mild, moderate, severe one-hot, study_id) and ``synth_truth.csv``
    (study_id, condition, level, severity, grade; every study), plus ``synth_landmarks.csv`` (per study and
    level: disc centre x/y/z in world mm, disc-plane normal nx/ny/nz, true canal AP diameter canal_ap_mm,
    midline_x: world x of the canal centre at that level) for geometry checks, ``synth_variations.csv``
    (per study: which anatomical variations it got) and ``synth_acquisition.csv`` (per series: slices, flip,
    partial volume, ghosting, wrap-around, phase axis, unusual scale). train.csv and test_solution.csv hold
    the reader's (noisy) grades; synth_truth.csv has the latent ``grade`` and the ``reader_grade``.
    Same arguments -> byte-identical files, whatever ``workers`` is.

    ``preset="rsna"`` draws each series' geometry like the real data (:mod:`radspine.synth.presets`:
    matrices from the real mix incl. non-square ones, sagittal FOV 260-400 mm, 15-24 sagittal and 25-60 axial
    slices, 16-bit pixel data; ``size`` is then unused) and defaults ``quirks`` to :meth:`QuirkConfig.rsna`
    (some compressed series, some lower-discs-only axials). ``matrix_scale`` (0-1] shrinks preset matrices
    and keeps the FOV, for small test phantoms of the same geometry.

    Raises:
        ConfigError: counts/size out of range. DatasetError: ``out`` is a non-empty folder and not ``overwrite``.
    """
    from radspine.parallel import map_items

    t0 = time.perf_counter()
    out = Path(out)
    if train_studies < 0 or test_studies < 0 or train_studies + test_studies < 1:
        raise ConfigError(f"synth: need at least one study (train={train_studies}, test={test_studies})")
    _check_args(size, preset, matrix_scale)
    if out.exists() and not out.is_dir():
        raise DatasetError(f"synth: output {out} exists and is not a folder")
    if out.is_dir() and any(out.iterdir()):
        if not overwrite:
            raise DatasetError(f"synth: output folder {out} is not empty (pass overwrite to replace it)")
        for name in ("train_images", "test_images"):
            shutil.rmtree(out / name, ignore_errors=True)
    if quirks is None:
        quirks = QuirkConfig.rsna() if preset == "rsna" else QuirkConfig()
    out.mkdir(parents=True, exist_ok=True)

    splits = ["train"] * train_studies + ["test"] * test_studies
    for split in ("train", "test"):
        (out / f"{split}_images").mkdir(exist_ok=True)
    jobs = _study_jobs(seed, train_studies + test_studies, size, quirks, str(out), preset, matrix_scale, splits)
    outcomes = map_items(_build_study, jobs, key=_job_key, workers=workers, desc="synth")
    failed = [o for o in outcomes if not o.ok]
    if failed:
        raise DatasetError(f"synth: study {failed[0].key} failed: {failed[0].error}")
    results = sorted((o.value for o in outcomes), key=lambda r: (r["split"], r["study_id"]))
    _write_csvs(out, results)
    train_ids = sorted(r["study_id"] for r in results if r["split"] == "train")
    test_ids = sorted(r["study_id"] for r in results if r["split"] == "test")
    return {
        "out": str(out),
        "train_study_ids": train_ids,
        "test_study_ids": test_ids,
        "files": int(sum(r["files"] for r in results)),
        "bytes": int(sum(r["bytes"] for r in results)),
        "coordinate_rows": int(sum(len(r["coords"]) for r in results if r["split"] == "train")),
        "seconds": round(time.perf_counter() - t0, 3),
    }


def _write_csvs(out: Path, results: list[dict]) -> None:
    train = [r for r in results if r["split"] == "train"]
    test = [r for r in results if r["split"] == "test"]
    label_rows, truth_rows, sol_rows, sub_rows = [], [], [], []
    for r in results:
        for i, c in enumerate(CONDITIONS):
            for j, lv in enumerate(LEVELS):
                truth_rows.append((r["study_id"], c, lv, round(float(r["severity"][i, j]), 6), int(r["grade"][i, j]),
                                   int(r["label"][i, j])))
    for r in train:
        cells = {}
        for i, c in enumerate(CONDITIONS):
            for j, lv in enumerate(LEVELS):
                cells[f"{c}_{lv}"] = "" if r["blank"][i, j] else SEVERITIES[int(r["label"][i, j])]
        label_rows.append({"study_id": r["study_id"], **cells})
    for r in test:
        sub_rows += [(rid, 1 / 3, 1 / 3, 1 / 3) for rid in study_row_ids(r["study_id"])]
        for i, c in enumerate(CONDITIONS):
            for j, lv in enumerate(LEVELS):
                if not r["blank"][i, j]:
                    onehot = [0, 0, 0]
                    onehot[int(r["label"][i, j])] = 1
                    sol_rows.append((row_id(r["study_id"], c, lv), *onehot, r["study_id"]))
    train_df = pd.DataFrame(label_rows, columns=["study_id", *LABEL_COLUMNS])
    write_csv_atomic(train_df, out / "train.csv")
    coords = pd.DataFrame(
        [(s, se, inst, CONDITION_NAMES[c], LEVEL_NAMES[lv], x, y) for r in train for (s, se, inst, c, lv, x, y) in r["coords"]],
        columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"],
    )
    write_csv_atomic(coords, out / "train_label_coordinates.csv")
    cols = ["study_id", "series_id", "series_description"]
    write_csv_atomic(pd.DataFrame([s for r in train for s in r["series"]], columns=cols), out / "train_series_descriptions.csv")
    write_csv_atomic(pd.DataFrame([s for r in test for s in r["series"]], columns=cols), out / "test_series_descriptions.csv")
    write_csv_atomic(pd.DataFrame(sub_rows, columns=["row_id", *SEVERITY_COLUMNS]), out / "sample_submission.csv")
    write_csv_atomic(pd.DataFrame(sol_rows, columns=["row_id", *SEVERITY_COLUMNS, "study_id"]), out / "test_solution.csv")
    write_csv_atomic(
        pd.DataFrame([row for r in results for row in r["landmarks"]],
                     columns=["study_id", "level", "x", "y", "z", "nx", "ny", "nz", "canal_ap_mm", "midline_x"]),
        out / "synth_landmarks.csv",
    )
    var_rows = []
    for r in results:
        v = r["variation"]
        var_rows.append((r["study_id"], v.lordosis is not None,
                         round(float(np.rad2deg(v.lordosis[2:].sum())), 2) if v.lordosis is not None else np.nan,
                         round(v.scol_amp, 3), round(float(np.rad2deg(v.scol_rot)), 3),
                         LEVELS[v.slip_disc - 2] if v.slip_disc >= 2 else "", round(v.slip_mm, 3),
                         v.transitional, round(v.sacral_remnant, 3)))
    write_csv_atomic(pd.DataFrame(var_rows, columns=["study_id", "varied_lordosis", "lordosis_deg", "scoliosis_mm",
                                                     "rotation_deg", "slip_level", "slip_mm", "transitional",
                                                     "sacral_remnant"]),
                     out / "synth_variations.csv")
    write_csv_atomic(pd.DataFrame([a for r in results for a in r["acquisition"]],
                                  columns=["study_id", "series_id", "series_description", "slices", "spacing_mm",
                                           "flip", "partial_volume", "ghosting", "wrap", "phase_axis",
                                           "wide_scale"]),
                     out / "synth_acquisition.csv")
    write_csv_atomic(pd.DataFrame(truth_rows, columns=["study_id", "condition", "level", "severity", "grade",
                                                       "reader_grade"]), out / "synth_truth.csv")


@dataclass
class SeriesLabels:
    """Tissue label map of one series on its DICOM grid (what :func:`label_volumes` returns per series).

    ``labels[k, y, x]`` (uint8, :data:`radspine.synth.anatomy.TISSUE_LABELS`) is the tissue at the centre of
    pixel (y, x) of the file with ``instance_numbers[k]``; ``positions``, ``row_cosines``, ``col_cosines``
    (S, 3) and ``pixel_spacing`` are that file's ImagePositionPatient, ImageOrientationPatient and
    PixelSpacing, exactly as :func:`make_dataset` writes them.
    """

    study_id: int
    series_id: int
    description: str
    contrast: str
    labels: np.ndarray
    instance_numbers: np.ndarray
    positions: np.ndarray
    row_cosines: np.ndarray
    col_cosines: np.ndarray
    pixel_spacing: tuple[float, float]
    slice_thickness: float
    plan: SeriesPlan

    def volumes(self) -> list:
        """:class:`radspine.types.Volume` stacks (slices sorted along the normal, like ``read_series``) whose
        ``pixels`` are the label maps (float32 codes)."""
        out = []
        order = {int(n): k for k, n in enumerate(self.instance_numbers)}
        for v in self.plan.volumes():
            pix = self.labels[[order[int(n)] for n in v.instance_numbers]].astype(np.float32)
            out.append(dataclasses.replace(v, pixels=pix, study_id=self.study_id))
        return out


def label_volumes(seed: int, index: int = 0, *, size: int = 256, quirks: QuirkConfig | None = None,
                  preset: str | None = None, matrix_scale: float = 1.0) -> list[SeriesLabels]:
    """Tissue label maps of every series of study ``index`` of ``make_dataset(..., seed=seed, size=size,
    quirks=quirks, preset=preset, matrix_scale=matrix_scale)`` (studies counted train first, then test),
    sampled on each series' pixel grid; no files are written.

    For domain randomisation: a trainer paints its own random intensity per label (and blur, bias, noise)
    with the geometry that the written DICOM files carry. Labels ignore partial volume, ghosting and
    wrap-around: the centre of each pixel decides.
    """
    _check_args(size, preset, matrix_scale)
    if index < 0:
        raise ConfigError(f"synth: study index {index} must be >= 0")
    if quirks is None:
        quirks = QuirkConfig.rsna() if preset == "rsna" else QuirkConfig()
    job = _study_jobs(seed, index + 1, size, quirks, "", preset, matrix_scale, ["train"] * (index + 1))[index]
    st = _plan_study(job)
    from radspine.synth.render import series_grid

    out = []
    for p in st.plans:
        lab = np.stack([st.pat.labels(series_grid(p, k).reshape(-1, 3)).reshape(p.rows, p.cols)
                        for k in range(len(p.positions))])
        out.append(SeriesLabels(job.study_id, p.series_id, p.description, p.contrast, lab, p.instance_numbers.copy(),
                                p.positions.copy(), p.row_cos.copy(), p.col_cos.copy(), p.pixel_spacing,
                                p.thickness, p))
    return out


__all__ = ["make_dataset", "label_volumes", "SeriesLabels"]
