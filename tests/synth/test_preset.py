"""preset="rsna": real matrix mix, FOV, slice counts, 16-bit and compressed files that every reader decodes alike."""

from __future__ import annotations

import dataclasses
import hashlib
from collections import Counter
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
import pytest

from radspine.constants import AX_T2, LEVELS, SAG_T1, SAG_T2
from radspine.errors import ConfigError
from radspine.io.dicom import read_series
from radspine.synth import QuirkConfig, make_dataset
from radspine.synth.presets import AX_SLICES, RSNA_MATRIX_COUNTS, SAG_FOV_MM, SAG_SLICES, draw_geoms

# No thin protocols or split axials here, so every series must meet the preset's slice ranges; most series
# compressed so all three syntaxes show up.
PRESET_Q = dataclasses.replace(QuirkConfig.rsna(), thin_slices=0.0, axial_split=0.0, axial_lower_only=0.0,
                               compressed=0.8, second_sag_t1=0.0, two_axial=0.5)


@pytest.fixture(scope="module")
def preset_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("preset") / "data"
    make_dataset(root, 3, 0, seed=11, preset="rsna", matrix_scale=0.1, quirks=PRESET_Q)
    return root


def _series(root: Path) -> list[tuple[Path, str]]:
    desc = pd.read_csv(root / "train_series_descriptions.csv")
    return [(root / "train_images" / str(r.study_id) / str(r.series_id), r.series_description)
            for r in desc.itertuples()]


def test_matrix_mix_fov_and_slices_follow_the_real_data() -> None:
    rng = np.random.default_rng(0)
    geoms = draw_geoms(rng, [True] * 3000)
    real = {(h, w) for (w, h) in RSNA_MATRIX_COUNTS}  # counts are W x H; geoms hold (rows, cols)
    assert {g.matrix for g in geoms} <= real
    share = Counter(g.matrix for g in geoms)
    total = sum(RSNA_MATRIX_COUNTS.values())
    assert abs(share[(512, 512)] / 3000 - 816 / total) < 0.03
    assert abs(share[(760, 640)] / 3000 - 89 / total) < 0.015  # non-square 640 x 760: rows 760
    nonsquare = sum(v for (r, c), v in share.items() if r != c) / 3000
    assert 0.08 < nonsquare < 0.16  # real: 12.5 % minus the left-out rarer sizes
    fov = np.array([g.fov for g in geoms])
    assert SAG_FOV_MM[0] <= fov.min() and fov.max() <= SAG_FOV_MM[1] and fov.max() - fov.min() > 120
    n = np.array([g.n_slices for g in geoms])
    assert n.min() == SAG_SLICES[0] and n.max() == SAG_SLICES[1]
    ax = draw_geoms(rng, [False] * 500)
    assert min(g.n_slices for g in ax) == AX_SLICES[0] and max(g.n_slices for g in ax) == AX_SLICES[1]
    assert all(g.matrix[1] >= g.matrix[0] for g in ax)  # axial: the long side runs left-right
    with pytest.raises(ConfigError):
        draw_geoms(rng, [True], matrix_scale=0.0)


def test_preset_series_geometry_ranges_and_16_bit(preset_root: Path) -> None:
    seen_ts = set()
    for folder, desc in _series(preset_root):
        files = sorted(folder.glob("*.dcm"))
        d = pydicom.dcmread(files[0])
        seen_ts.add(str(d.file_meta.TransferSyntaxUID))
        assert d.BitsStored == 16 and d.BitsAllocated == 16
        ps = float(d.PixelSpacing[0])
        assert float(d.PixelSpacing[1]) == ps
        if desc == AX_T2:
            assert AX_SLICES[0] <= len(files) <= AX_SLICES[1]
        else:
            assert SAG_SLICES[0] <= len(files) <= SAG_SLICES[1]
            fov = ps * max(d.Rows, d.Columns)
            assert SAG_FOV_MM[0] - 0.01 <= fov <= SAG_FOV_MM[1] + 0.01
    assert {"1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.90", "1.2.840.10008.1.2.5"} & seen_ts
    assert "1.2.840.10008.1.2.1" in seen_ts or len(seen_ts) >= 2


def test_preset_reads_back_identically_with_radspine_pydicom_and_simpleitk(preset_root: Path) -> None:
    import SimpleITK as sitk

    compressed = 0
    for folder, desc in _series(preset_root):
        vols = read_series(folder, description=desc)
        files = {int(pydicom.dcmread(p, stop_before_pixels=True).InstanceNumber): p for p in folder.glob("*.dcm")}
        for v in vols:
            for k, inst in enumerate(v.instance_numbers):
                d = pydicom.dcmread(files[int(inst)])
                compressed += d.file_meta.TransferSyntaxUID.is_compressed
                np.testing.assert_allclose(v.positions[k], np.array(d.ImagePositionPatient, float), atol=1e-4)
                np.testing.assert_allclose(v.row_cosine, np.array(d.ImageOrientationPatient[:3], float), atol=1e-5)
                assert v.pixels.shape[1:] == (d.Rows, d.Columns)
                assert v.pixel_spacing == pytest.approx(tuple(float(x) for x in d.PixelSpacing))
                ref = d.pixel_array.astype(np.float32) * float(getattr(d, "RescaleSlope", 1.0)) \
                    + float(getattr(d, "RescaleIntercept", 0.0))
                np.testing.assert_allclose(v.pixels[k], ref, rtol=1e-6)
        # SimpleITK (GDCM) decodes the same pixels, JPEG-LS and JPEG 2000 included.
        reader = sitk.ImageSeriesReader()
        names = reader.GetGDCMSeriesFileNames(str(folder))
        reader.SetFileNames(names)
        arr = sitk.GetArrayFromImage(reader.Execute())
        for name, plane in zip(names, arr):
            d = pydicom.dcmread(name)
            slope = float(getattr(d, "RescaleSlope", 1.0))
            np.testing.assert_allclose(plane.astype(np.float64), d.pixel_array * slope, rtol=1e-6, atol=1e-3)
    assert compressed > 0


def test_preset_is_deterministic_and_keeps_the_anatomy(tmp_path: Path) -> None:
    def digest(root: Path) -> str:
        h = hashlib.sha256()
        for p in sorted(root.rglob("*")):
            if p.is_file():
                h.update(p.relative_to(root).as_posix().encode())
                h.update(p.read_bytes())
        return h.hexdigest()

    q = dataclasses.replace(QuirkConfig.rsna(), compressed=1.0)
    a = make_dataset(tmp_path / "a", 1, 0, seed=5, preset="rsna", matrix_scale=0.06, quirks=q)
    b = make_dataset(tmp_path / "b", 1, 0, seed=5, preset="rsna", matrix_scale=0.06, quirks=q)
    assert digest(tmp_path / "a") == digest(tmp_path / "b")
    assert a["train_study_ids"] == b["train_study_ids"]
    # The preset changes the series, not the patient: same truth and landmarks as the default phantom.
    make_dataset(tmp_path / "d", 1, 0, seed=5, size=32, quirks=q)
    for name in ("synth_truth.csv", "synth_landmarks.csv"):
        assert (tmp_path / "a" / name).read_bytes() == (tmp_path / "d" / name).read_bytes()
    with pytest.raises(ConfigError):
        make_dataset(tmp_path / "e", 1, 0, preset="nope")


def test_one_real_size_study(tmp_path: Path) -> None:
    """matrix_scale 1: real matrices (>= 256 px) on one study, read back with the right geometry."""
    q = dataclasses.replace(QuirkConfig.rsna(), two_axial=0.0, axial_split=0.0, second_sag_t1=0.0,
                            thin_slices=0.0, partial_volume=0.0, compressed=0.5)
    make_dataset(tmp_path / "r", 1, 0, seed=21, preset="rsna", quirks=q)
    shapes = []
    for folder, desc in _series(tmp_path / "r"):
        (v, *_) = read_series(folder, description=desc)
        d = pydicom.dcmread(next(folder.glob("*.dcm")))
        shapes.append(v.pixels.shape[1:])
        assert (d.Columns, d.Rows) in RSNA_MATRIX_COUNTS or (d.Rows, d.Columns) in RSNA_MATRIX_COUNTS
        assert min(d.Rows, d.Columns) >= 256
        if desc in (SAG_T1, SAG_T2):
            assert SAG_FOV_MM[0] - 0.01 <= v.pixel_spacing[0] * max(d.Rows, d.Columns) <= SAG_FOV_MM[1] + 0.01
        assert v.pixels.max() > 100
    assert len(shapes) == 3
    coords = pd.read_csv(tmp_path / "r" / "train_label_coordinates.csv")
    assert set(coords.level.str.lower().str.replace("/", "_")) <= set(LEVELS)
