"""radspine.io.dicom on real pydicom test files and on series written with known geometry."""

from __future__ import annotations

import re
import shutil
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dicom_writer import ramp, tilted_axial, write_series
from pydicom.data import get_testdata_file
from pydicom.uid import JPEG2000, ImplicitVRLittleEndian, RLELossless

from radspine import geometry as G
from radspine.errors import DicomError
from radspine.io.dicom import (
    list_dicom_files,
    looks_like_dicom,
    probe_series_folder,
    read_series,
    read_volume,
)

TEST_FILES = Path(get_testdata_file("MR_small.dcm")).parent
DICOMDIR_TESTS = TEST_FILES / "dicomdirtests"

# Every MR_small variant pydicom ships; all are lossless encodings of MR_small.dcm.
MR_SMALL_VARIANTS = (
    "MR_small_implicit.dcm",  # Implicit VR Little Endian
    "MR_small_bigendian.dcm",  # Explicit VR Big Endian
    "MR_small_expb.dcm",  # Explicit VR Big Endian (other writer)
    "MR_small_padded.dcm",  # Explicit VR LE with padded pixel data
    "MR_small_RLE.dcm",  # RLE Lossless
    "MR_small_jpeg_ls_lossless.dcm",  # JPEG-LS Lossless
    "MR_small_jp2klossless.dcm",  # JPEG 2000 Lossless
)


def _copy_as_series(src: Path, folder: Path, name: str = "1.dcm") -> Path:
    folder.mkdir(parents=True)
    shutil.copy(src, folder / name)
    return folder


@pytest.fixture(scope="module")
def mr_small(tmp_path_factory):
    folder = _copy_as_series(TEST_FILES / "MR_small.dcm", tmp_path_factory.mktemp("ref") / "7")
    return read_volume(folder)


def test_mr_small_reference_geometry(mr_small):
    v = mr_small
    assert v.shape == (1, 64, 64)
    assert v.pixels.dtype == np.float32
    assert v.series_id == 7  # from the folder name
    np.testing.assert_allclose(v.positions[0], [-83.9063, -91.2, 6.6406])
    np.testing.assert_allclose(v.normal, [0, 0, 1])
    assert v.pixel_spacing == (0.3125, 0.3125)
    assert v.instance_numbers.tolist() == [1]
    assert v.slice_thickness == pytest.approx(0.8)
    # No rescale tags: values are the stored int16 pixels.
    raw = pydicom.dcmread(TEST_FILES / "MR_small.dcm").pixel_array
    np.testing.assert_array_equal(v.pixels[0], raw.astype(np.float32))


@pytest.mark.filterwarnings("ignore:The pixel data is .* excess padding")  # MR_small_padded, by design
@pytest.mark.parametrize("name", MR_SMALL_VARIANTS)
def test_mr_small_variants_decode_identically(name, mr_small, tmp_path):
    v = read_volume(_copy_as_series(TEST_FILES / name, tmp_path / "s"))
    np.testing.assert_array_equal(v.pixels, mr_small.pixels)
    np.testing.assert_allclose(v.positions, mr_small.positions)
    np.testing.assert_allclose(v.normal, mr_small.normal)


def test_lossy_jpeg2000_within_tolerance(mr_small, tmp_path):
    # pydicom ships no lossy MR_small, so encode one: JPEG 2000 at a fixed compression ratio.
    ds = pydicom.dcmread(TEST_FILES / "MR_small.dcm")
    ds.compress(JPEG2000, j2k_cr=[4])
    (tmp_path / "s").mkdir()
    ds.save_as(tmp_path / "s" / "1.dcm", enforce_file_format=True)
    v = read_volume(tmp_path / "s")
    diff = v.pixels - mr_small.pixels
    assert np.abs(diff).max() > 0  # really lossy
    # Lossy coding bounds the error energy, not each pixel: require a high PSNR and a small mean error
    # relative to the image's dynamic range instead of exact equality.
    peak = float(np.ptp(mr_small.pixels))
    psnr = 20 * np.log10(peak / np.sqrt(np.mean(diff**2)))
    assert psnr > 40
    assert np.abs(diff).mean() < 0.01 * peak


def test_jpeg_extended_decodes(tmp_path):
    # JPGExtended.dcm (JPEG process 2/4) has no geometry tags; add them so it forms a series.
    src = TEST_FILES / "JPGExtended.dcm"
    ds = pydicom.dcmread(src)
    ds.ImagePositionPatient = [0, 0, 0]
    ds.ImageOrientationPatient = [1, 0, 0, 0, 1, 0]
    ds.PixelSpacing = [0.5, 0.5]
    (tmp_path / "s").mkdir()
    ds.save_as(tmp_path / "s" / "1.dcm")
    v = read_volume(tmp_path / "s")
    assert v.shape == (1, 1024, 256)
    ref = pydicom.dcmread(src).pixel_array
    np.testing.assert_array_equal(v.pixels[0], ref.astype(np.float32))


def test_real_ct_stack_with_reversed_instance_numbers():
    # dicomdirtests/98892001/CT5N: InstanceNumber 6..10 while z falls 8.76 → -1.24 mm.
    folder = DICOMDIR_TESTS / "98892001" / "CT5N"
    stacks = read_series(folder, study_id=98892001)
    assert len(stacks) == 1
    v = stacks[0]
    assert v.instance_numbers.tolist() == [10, 9, 8, 7, 6]
    assert np.all(np.diff(v.slice_offsets) > 0)
    assert v.slice_spacing == pytest.approx(2.5, abs=1e-4)
    assert v.slice_index(6) == 4
    # CT RescaleSlope 1 / Intercept -1024 applied, each slice from the file of its instance.
    for k, f in enumerate(v.meta["files"]):
        ds = pydicom.dcmread(folder / f)
        assert int(ds.InstanceNumber) == v.instance_numbers[k]
        expected = ds.pixel_array.astype(np.float64) * float(ds.RescaleSlope) + float(ds.RescaleIntercept)
        np.testing.assert_array_equal(v.pixels[k], expected.astype(np.float32))
        assert float(ds.ImagePositionPatient[2]) == pytest.approx(v.positions[k][2])


def test_real_series_split_at_gap():
    # dicomdirtests/77654033/CT2: instance 18 at z=-99.5 and 180..182 at z=103..105.5 (one series).
    stacks = read_series(DICOMDIR_TESTS / "77654033" / "CT2")
    assert [v.instance_numbers.tolist() for v in stacks] == [[18], [180, 181, 182]]
    assert stacks[1].slice_spacing == pytest.approx(1.25, abs=1e-4)
    assert read_volume(DICOMDIR_TESTS / "77654033" / "CT2").instance_numbers.tolist() == [180, 181, 182]


def test_real_localizer_split_by_orientation():
    # dicomdirtests/98892003/MR700: seven slices, each with its own orientation (radial localizer).
    stacks = read_series(DICOMDIR_TESTS / "98892003" / "MR700")
    assert len(stacks) == 7
    for v in stacks:
        ds = pydicom.dcmread(DICOMDIR_TESTS / "98892003" / "MR700" / v.meta["files"][0])
        iop = np.array([float(x) for x in ds.ImageOrientationPatient])
        np.testing.assert_allclose(v.row_cosine, iop[:3] / np.linalg.norm(iop[:3]), atol=1e-9)
    assert [v.instance_numbers[0] for v in stacks] == [1, 2, 3, 4, 5, 6, 7]


def test_written_sagittal_geometry_rescale_and_missing_tags(tmp_path):
    px = ramp(5, 12, 10, seed=1)
    # Instance numbers run opposite to position; optional tags absent, InstanceNumber only in the name.
    write_series(
        tmp_path / "300", px, origin=(-12.0, -40.0, 60.0), row_cosine=(0, 1, 0), col_cosine=(0, 0, -1),
        pixel_spacing=(0.8, 0.7), slice_step=3.5, instance_numbers=[5, 4, 3, 2, 1], slope=2.0, intercept=-100.0,
        slice_thickness=None, omit=("InstanceNumber", "Manufacturer"),
    )
    v = read_volume(tmp_path / "300", study_id=9, description="Sagittal T1")
    assert (v.study_id, v.series_id, v.description) == (9, 300, "Sagittal T1")
    assert v.slice_thickness is None
    assert G.orientation_of(v) == "sagittal"
    np.testing.assert_allclose(v.normal, [-1, 0, 0])  # (0,1,0) × (0,0,-1)
    # Sorted along the normal, so InstanceNumbers (written opposite to position) come out descending.
    assert v.instance_numbers.tolist() == [5, 4, 3, 2, 1]
    assert np.all(np.diff(v.slice_offsets) > 0)
    assert v.slice_spacing == pytest.approx(3.5, abs=1e-5)
    assert v.pixel_spacing == (0.8, 0.7)
    np.testing.assert_array_equal(v.pixels, px.astype(np.float32) * 2 - 100)
    assert v.slice_index(2) == 3
    # Pixel (x=3, y=2) on instance 2 (written slice k=3) is at origin + 3 step along −x of written normal.
    written_normal = np.cross([0, 1, 0], [0, 0, -1])
    expected = np.array([-12.0, -40.0, 60.0]) + 3 * 3.5 * written_normal + 3 * 0.7 * np.array([0, 1, 0]) \
        + 2 * 0.8 * np.array([0, 0, -1])
    np.testing.assert_allclose(G.instance_to_world(v, 3, 2, 2), expected, atol=1e-4)


def test_transfer_syntaxes_written(tmp_path):
    px = ramp(3, 8, 8, seed=2)
    ref = None
    for ts in (ImplicitVRLittleEndian, RLELossless):
        write_series(tmp_path / ts, px, origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0))
        v = read_volume(tmp_path / ts)
        np.testing.assert_array_equal(v.pixels, px.astype(np.float32))
        ref = v if ref is None else ref
        np.testing.assert_allclose(v.positions, ref.positions)


def _write_multistack_axial(folder: Path) -> list[tuple[np.ndarray, np.ndarray, np.ndarray]]:
    """Three tilted 4-slice stacks (one per disc) in one folder, instances interleaved; returns geometry."""
    geoms = []
    for i, (angle, z) in enumerate(((-12.0, 40.0), (0.0, 0.0), (15.0, -40.0))):
        row, col = tilted_axial(angle)
        origin = np.array([-20.0, -25.0, z])
        write_series(folder, ramp(4, 10, 12, seed=10 + i), origin=origin, row_cosine=row, col_cosine=col,
                     pixel_spacing=(0.6, 0.6), slice_step=4.0, instance_numbers=[i + 1 + 3 * j for j in range(4)])
        geoms.append((origin, row, col))
    return geoms


def test_multistack_oblique_axial(tmp_path):
    geoms = _write_multistack_axial(tmp_path / "500")
    stacks = read_series(tmp_path / "500")
    assert len(stacks) == 3
    for i, (v, (origin, row, col)) in enumerate(zip(stacks, geoms, strict=True)):
        assert v.stack_index == i
        assert v.instance_numbers.tolist() == [i + 1 + 3 * j for j in range(4)]
        np.testing.assert_allclose(v.row_cosine, row, atol=1e-6)
        np.testing.assert_allclose(v.col_cosine, col, atol=1e-6)
        np.testing.assert_allclose(v.positions[0], origin, atol=1e-5)
        assert v.slice_spacing == pytest.approx(4.0, abs=1e-4)
        assert G.orientation_of(v) == "axial"
        np.testing.assert_array_equal(v.pixels, ramp(4, 10, 12, seed=10 + i).astype(np.float32))


def test_same_orientation_gap_and_mixed_size_split(tmp_path):
    row, col = (1, 0, 0), (0, 1, 0)
    write_series(tmp_path / "s", ramp(4, 8, 8), origin=(0, 0, 0), row_cosine=row, col_cosine=col,
                 slice_step=3.0, instance_numbers=[1, 2, 3, 4])
    # Same plane family, 30 mm further: a gap.
    write_series(tmp_path / "s", ramp(3, 8, 8, seed=3), origin=(0, 0, 30), row_cosine=row, col_cosine=col,
                 slice_step=3.0, instance_numbers=[5, 6, 7])
    # Same orientation but 16×16 images interleaved with the first stack: split by size.
    write_series(tmp_path / "s", ramp(2, 16, 16, seed=4), origin=(0, 0, 1.5), row_cosine=row, col_cosine=col,
                 slice_step=3.0, instance_numbers=[8, 9])
    stacks = read_series(tmp_path / "s")
    assert [(v.shape, v.instance_numbers.tolist()) for v in stacks] == [
        ((4, 8, 8), [1, 2, 3, 4]), ((3, 8, 8), [5, 6, 7]), ((2, 16, 16), [8, 9])
    ]
    assert read_volume(tmp_path / "s").instance_numbers.tolist() == [1, 2, 3, 4]


def test_project_sagittal_point_into_axial_stack(tmp_path):
    # Sagittal planes at world x = -18 + k (normal −x, step −1 mm); 1 mm pixels from (y=-30, z=20).
    write_series(tmp_path / "sag", ramp(7, 40, 40), origin=(-18.0, -30.0, 20.0), row_cosine=(0, 1, 0),
                 col_cosine=(0, 0, -1), pixel_spacing=(1.0, 1.0), slice_step=-1.0, instance_numbers=range(1, 8))
    _write_multistack_axial(tmp_path / "ax")
    sag = read_volume(tmp_path / "sag")
    target = read_series(tmp_path / "ax")[1]  # 0° stack: z = 4k, pixels 0.6 mm from (-20, -25)
    # Sagittal pixel (9.35, 12) on the plane x = -16 (instance 3) is world (-16, -20.65, 8).
    world = G.instance_to_world(sag, 9.35, 12.0, 3)
    np.testing.assert_allclose(world, [-16.0, -20.65, 8.0], atol=1e-4)
    pr = G.project_point(target, world)
    # Axial slice k=2 holds z=8 and carries instance 2 + 3·2 (instances interleaved across stacks).
    assert (pr.slice_index, pr.instance_number) == (2, 8)
    assert pr.x * 0.6 == pytest.approx(4.0, abs=0.01) and pr.y * 0.6 == pytest.approx(4.35, abs=0.01)
    assert abs(pr.distance_mm) < 0.01
    # And back: axial pixel → world → sagittal pixel, within 0.01 mm.
    back = G.world_to_pixel(sag, G.pixel_to_world(target, pr.x, pr.y, pr.slice_index))
    assert back[2] == sag.slice_index(3)
    assert back[0] == pytest.approx(9.35, abs=0.01) and back[1] == pytest.approx(12.0, abs=0.01)
    # World x decides the side: the sagittal plane with the larger x is patient left.
    left = G.plane_center(sag, int(np.argmax(sag.positions[:, 0])))
    right = G.plane_center(sag, int(np.argmin(sag.positions[:, 0])))
    assert G.side_of(left, -15.0) == "left" and G.side_of(right, -15.0) == "right"


# ------------------------------------------------------------------ bad input


def test_truncated_real_file_names_file(tmp_path):
    folder = _copy_as_series(get_testdata_file("MR_truncated.dcm"), tmp_path / "s")
    with pytest.raises(DicomError) as exc:
        read_series(folder)
    msg = str(exc.value)
    assert "1.dcm" in msg and "\n" not in msg and "decode" in msg


def test_cut_slice_is_dropped_with_warning(tmp_path, caplog):
    paths = write_series(tmp_path / "s", ramp(3, 8, 8), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                         col_cosine=(0, 1, 0))
    data = paths[1].read_bytes()
    paths[1].write_bytes(data[:-50])  # cut inside the pixel data
    with caplog.at_level("WARNING", logger="radspine.io.dicom"):
        (v,) = read_series(tmp_path / "s")
    assert v.instance_numbers.tolist() == [1, 3]
    np.testing.assert_array_equal(v.pixels, ramp(3, 8, 8)[[0, 2]].astype(np.float32))
    # Slices 1 and 3 are 6 mm apart now: the gap is kept as geometry, not papered over.
    np.testing.assert_allclose(v.positions[:, 2], [0.0, 6.0])
    (drop,) = v.meta["dropped_files"]
    assert drop["file"] == str(paths[1])
    assert re.match(r"cannot decode pixel data .*less than expected", drop["error"])
    (rec,) = [r for r in caplog.records if "slice dropped" in r.getMessage()]
    assert "2.dcm: cannot decode pixel data" in rec.getMessage() and "\n" not in rec.getMessage()

    paths[1].write_bytes(data[:300])  # cut before the pixel data
    (v,) = read_series(tmp_path / "s")
    assert v.meta["dropped_files"][0]["error"].startswith("no pixel data (truncated")
    # Every slice cut: the series is unusable, one line naming the folder and the first file.
    for p in paths:
        p.write_bytes(data[:300])
    with pytest.raises(DicomError, match=r"s: no readable DICOM slice among 3 files \(first: .*1\.dcm: no pixel"):
        read_series(tmp_path / "s")


def test_empty_missing_and_non_dicom_folders(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(DicomError, match=r"empty.*empty series folder"):
        read_series(tmp_path / "empty")
    with pytest.raises(DicomError, match=r"nope: series folder does not exist"):
        read_series(tmp_path / "nope")
    (tmp_path / "txt").mkdir()
    (tmp_path / "txt" / "notes.txt").write_text("hello")
    with pytest.raises(DicomError, match=r"notes\.txt: not a DICOM file"):
        read_series(tmp_path / "txt")
    (tmp_path / "fake").mkdir()
    (tmp_path / "fake" / "1.dcm").write_bytes(b"\x00" * 300)
    with pytest.raises(DicomError, match=r"1\.dcm: not a DICOM file"):
        read_series(tmp_path / "fake")


def test_missing_geometry_is_an_error(tmp_path):
    write_series(tmp_path / "s", ramp(2, 8, 8), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 omit=("ImageOrientationPatient",))
    with pytest.raises(DicomError, match=r"1\.dcm: missing geometry tag\(s\) ImageOrientationPatient"):
        read_series(tmp_path / "s")


def test_same_seed_same_volume(tmp_path):
    for name in ("a", "b"):
        write_series(tmp_path / name, ramp(3, 8, 8, seed=5), origin=(1, 2, 3), row_cosine=(1, 0, 0),
                     col_cosine=(0, 1, 0))
    a, b = read_volume(tmp_path / "a"), read_volume(tmp_path / "b")
    np.testing.assert_array_equal(a.pixels, b.pixels)
    np.testing.assert_array_equal(a.positions, b.positions)


def test_stray_files_ignored_and_numeric_file_order(tmp_path):
    write_series(tmp_path / "s", ramp(12, 6, 6), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0))
    (tmp_path / "s" / "README.txt").write_text("not dicom")
    (tmp_path / "s" / ".DS_Store").write_bytes(b"\x00\x01")
    assert [p.name for p in list_dicom_files(tmp_path / "s")] == [f"{i}.dcm" for i in range(1, 13)]
    assert read_volume(tmp_path / "s").instance_numbers.tolist() == list(range(1, 13))


# ------------------------------------------------------------------ partial series


def _edit(path: Path, fn) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, enforce_file_format=True)


def _drop_spacing(ds) -> None:
    del ds.PixelSpacing


def test_pixel_spacing_fallbacks(tmp_path, caplog):
    # Only ImagerPixelSpacing: used as is (no other slice needed).
    paths = write_series(tmp_path / "a", ramp(2, 8, 6), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                         col_cosine=(0, 1, 0), pixel_spacing=(0.7, 0.9), omit=("PixelSpacing",))
    for p in paths:
        _edit(p, lambda ds: setattr(ds, "ImagerPixelSpacing", ["0.8", "0.6"]))
    with caplog.at_level("WARNING", logger="radspine.io.dicom"):
        (v,) = read_series(tmp_path / "a")
    assert v.pixel_spacing == (0.8, 0.6)
    assert v.meta["pixel_spacing_fallback"] == {"1.dcm": "ImagerPixelSpacing", "2.dcm": "ImagerPixelSpacing"}
    assert any("2 slice(s) without PixelSpacing use ImagerPixelSpacing" in r.getMessage() for r in caplog.records)

    # Neither tag on one slice: it borrows the PixelSpacing of the same-size, same-orientation slices.
    caplog.clear()
    paths = write_series(tmp_path / "b", ramp(4, 8, 6), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                         col_cosine=(0, 1, 0), pixel_spacing=(0.7, 0.9))
    _edit(paths[2], _drop_spacing)
    with caplog.at_level("WARNING", logger="radspine.io.dicom"):
        (v,) = read_series(tmp_path / "b")
    assert v.shape == (4, 8, 6) and v.pixel_spacing == (0.7, 0.9)
    assert v.meta["pixel_spacing_fallback"] == {"3.dcm": "series"}
    assert "dropped_files" not in v.meta
    (rec,) = [r for r in caplog.records if "same grid" in r.getMessage()]
    assert "1 slice(s)" in rec.getMessage() and "[0.7, 0.9]" in rec.getMessage() and "3.dcm" in rec.getMessage()

    # No slice of the same size to borrow from: that slice is dropped, naming the file and the size.
    extra = write_series(tmp_path / "c", ramp(1, 5, 5), origin=(0, 0, 30), row_cosine=(1, 0, 0),
                         col_cosine=(0, 1, 0), instance_numbers=[9])
    _edit(extra[0], _drop_spacing)
    write_series(tmp_path / "c", ramp(2, 8, 6), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0))
    (v,) = read_series(tmp_path / "c")
    assert v.instance_numbers.tolist() == [1, 2]
    (drop,) = v.meta["dropped_files"]
    assert drop["file"].endswith("9.dcm")
    assert drop["error"].startswith("missing PixelSpacing (no ImagerPixelSpacing, and no slice of the series "
                                    "with the same image size 5x5")


def test_pixel_spacing_donors_that_disagree_drop_the_slice(tmp_path):
    # Two same-size stacks with different spacing (a second FOV): borrowing would be a guess.
    write_series(tmp_path / "s", ramp(2, 8, 8), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 pixel_spacing=(0.5, 0.5))
    write_series(tmp_path / "s", ramp(2, 8, 8), origin=(0, 0, 100), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 pixel_spacing=(0.8, 0.8), instance_numbers=[3, 4])
    paths = write_series(tmp_path / "s", ramp(1, 8, 8), origin=(0, 0, 50), row_cosine=(1, 0, 0),
                         col_cosine=(0, 1, 0), instance_numbers=[5])
    _edit(paths[0], _drop_spacing)
    stacks = read_series(tmp_path / "s")
    assert [v.instance_numbers.tolist() for v in stacks] == [[1, 2], [3, 4]]
    (drop,) = stacks[0].meta["dropped_files"]
    assert drop["file"].endswith("5.dcm") and "disagree" in drop["error"]
    assert stacks[1].meta["dropped_files"] == stacks[0].meta["dropped_files"]


def test_mixed_sizes_warn_and_split(tmp_path, caplog):
    write_series(tmp_path / "s", ramp(3, 8, 8), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0))
    write_series(tmp_path / "s", ramp(2, 6, 10), origin=(0, 0, 9), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 instance_numbers=[4, 5])
    with caplog.at_level("WARNING", logger="radspine.io.dicom"):
        stacks = read_series(tmp_path / "s")
    assert [v.shape for v in stacks] == [(3, 8, 8), (2, 6, 10)]
    (rec,) = caplog.records
    assert "slices have 2 image sizes (10x6: 2, 8x8: 3)" in rec.getMessage()


def test_probe_series_folder(tmp_path):
    assert probe_series_folder(tmp_path / "missing") == (0, False)
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / ".DS_Store").write_bytes(b"\x00")
    assert probe_series_folder(tmp_path / "empty") == (0, False)
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "1.dcm").write_bytes(b"\x00" * 300)
    (tmp_path / "junk" / "2.dcm").write_bytes(b"")
    assert probe_series_folder(tmp_path / "junk") == (2, False)
    write_series(tmp_path / "ok", ramp(2, 4, 4), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0))
    (tmp_path / "ok" / "0.dcm").write_bytes(b"junk")
    assert probe_series_folder(tmp_path / "ok") == (3, True)
    assert looks_like_dicom(TEST_FILES / "MR_small.dcm") and not looks_like_dicom(tmp_path / "ok" / "0.dcm")


def test_dropped_slice_leaves_a_gap_not_a_second_stack(tmp_path):
    paths = write_series(tmp_path / "s", ramp(8, 6, 6), origin=(0, 0, 0), row_cosine=(0, 1, 0),
                         col_cosine=(0, 0, -1), slice_step=4.0)
    paths[3].write_bytes(b"\x00" * 400)
    (v,) = read_series(tmp_path / "s")
    assert v.instance_numbers.tolist() == [1, 2, 3, 5, 6, 7, 8]
    np.testing.assert_allclose(np.diff(v.slice_offsets), [4, 4, 8, 4, 4, 4])
    assert v.slice_spacing == pytest.approx(4.0)
    # Two dropped neighbours: still one stack (two missing planes, two dropped files).
    paths[4].write_bytes(b"\x00" * 400)
    (v,) = read_series(tmp_path / "s")
    assert v.instance_numbers.tolist() == [1, 2, 3, 6, 7, 8]


def test_real_gap_still_splits_despite_a_dropped_slice(tmp_path):
    # The 10 mm jump is not a whole number of 3 mm steps, and two missing planes need two dropped files.
    pos_a = np.array([[0, 0, 3.0 * k] for k in range(4)])
    write_series(tmp_path / "s", ramp(4, 6, 6), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 positions=pos_a)
    write_series(tmp_path / "s", ramp(3, 6, 6), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 positions=pos_a[-1] + np.array([[0, 0, 10.0 + 3.0 * k] for k in range(3)]),
                 instance_numbers=[5, 6, 7])
    (tmp_path / "s" / "8.dcm").write_bytes(b"junk")
    assert [v.instance_numbers.tolist() for v in read_series(tmp_path / "s")] == [[1, 2, 3, 4], [5, 6, 7]]
    (tmp_path / "s" / "8.dcm").unlink()
    write_series(tmp_path / "t", ramp(6, 6, 6), origin=(0, 0, 0), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 positions=np.array([[0, 0, z] for z in (0, 3, 6, 15, 18, 21)]))
    (tmp_path / "t" / "7.dcm").write_bytes(b"junk")  # one dropped file, but the 9 mm gap lacks two planes
    assert [v.instance_numbers.tolist() for v in read_series(tmp_path / "t")] == [[1, 2, 3], [4, 5, 6]]
