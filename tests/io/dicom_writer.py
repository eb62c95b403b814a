"""Test helper: write small DICOM series with known geometry using pydicom (no radspine code)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
import pydicom
from pydicom.dataset import FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, ImplicitVRLittleEndian, MRImageStorage, generate_uid


def unit(v: Sequence[float]) -> np.ndarray:
    """v / |v| as float64."""
    a = np.asarray(v, dtype=np.float64)
    return a / np.linalg.norm(a)


def tilted_axial(angle_deg: float) -> tuple[np.ndarray, np.ndarray]:
    """(row_cosine, col_cosine) of an axial plane tilted by ``angle_deg`` about the patient x axis."""
    t = np.deg2rad(angle_deg)
    return np.array([1.0, 0.0, 0.0]), np.array([0.0, np.cos(t), -np.sin(t)])


def write_series(
    folder: Path,
    pixels: np.ndarray,
    *,
    origin: Sequence[float],
    row_cosine: Sequence[float],
    col_cosine: Sequence[float],
    pixel_spacing: tuple[float, float] = (0.5, 0.5),
    slice_step: float = 3.0,
    positions: np.ndarray | None = None,
    instance_numbers: Sequence[int] | None = None,
    slope: float | None = None,
    intercept: float | None = None,
    slice_thickness: float | None = 3.0,
    omit: Sequence[str] = (),
    transfer_syntax: str = ExplicitVRLittleEndian,
    series_uid: str | None = None,
    file_names: Sequence[str] | None = None,
) -> list[Path]:
    """Write ``pixels`` (S, R, C) uint16 as single-frame MR files; returns the file paths.

    Slice k sits at ``origin + k * slice_step * normal`` (normal = row × col) unless ``positions``
    is given. Files are named ``<InstanceNumber>.dcm`` as in the competition, unless ``file_names``.
    ``omit`` lists keywords to leave out (to test missing optional tags).
    """
    folder.mkdir(parents=True, exist_ok=True)
    pixels = np.asarray(pixels)
    n = pixels.shape[0]
    row = unit(row_cosine)
    col = unit(col_cosine)
    normal = np.cross(row, col)
    if positions is None:
        positions = np.asarray(origin, dtype=np.float64) + np.arange(n)[:, None] * slice_step * normal
    if instance_numbers is None:
        instance_numbers = list(range(1, n + 1))
    series_uid = series_uid or generate_uid(entropy_srcs=[str(folder)])
    paths = []
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        sop = generate_uid(entropy_srcs=[str(folder), str(k)])
        meta.MediaStorageSOPInstanceUID = sop
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = pydicom.Dataset()
        ds.file_meta = meta
        ds.SOPClassUID = MRImageStorage
        ds.SOPInstanceUID = sop
        ds.Modality = "MR"
        ds.SeriesInstanceUID = series_uid
        ds.StudyInstanceUID = generate_uid(entropy_srcs=["study"])
        ds.InstanceNumber = int(instance_numbers[k])
        ds.ImagePositionPatient = [f"{v:.6f}" for v in positions[k]]
        ds.ImageOrientationPatient = [f"{v:.6f}" for v in (*row, *col)]
        ds.PixelSpacing = [f"{pixel_spacing[0]:.6f}", f"{pixel_spacing[1]:.6f}"]
        if slice_thickness is not None:
            ds.SliceThickness = f"{slice_thickness:.4f}"
        if slope is not None:
            ds.RescaleSlope = f"{slope:g}"
        if intercept is not None:
            ds.RescaleIntercept = f"{intercept:g}"
        ds.Manufacturer = "radspine-test"
        ds.set_pixel_data(np.ascontiguousarray(pixels[k].astype(np.uint16)), "MONOCHROME2", 16,
                          generate_instance_uid=False)
        for kw in omit:
            if kw in ds:
                delattr(ds, kw)
        if transfer_syntax == ImplicitVRLittleEndian:
            ds.file_meta.TransferSyntaxUID = ImplicitVRLittleEndian
        elif transfer_syntax != ExplicitVRLittleEndian:
            ds.compress(transfer_syntax, generate_instance_uid=False)
        name = file_names[k] if file_names is not None else f"{int(instance_numbers[k])}.dcm"
        path = folder / name
        ds.save_as(path, enforce_file_format=True)
        paths.append(path)
    return paths


def ramp(n: int, rows: int, cols: int, seed: int = 0) -> np.ndarray:
    """Distinct, seeded uint16 slices so any mis-sorted or transposed slice is detectable."""
    rng = np.random.default_rng(seed)
    base = rng.integers(0, 1000, size=(n, rows, cols))
    return (base + 1000 * np.arange(n)[:, None, None]).astype(np.uint16)
