"""Plain DICOM exports: scanning, series typing, ids, overrides and the Kaggle-layout view."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine import constants as C
from radspine.errors import DatasetError
from radspine.io.export import (
    SeriesScan,
    build_layout,
    classify_series,
    read_study_uids,
    scan_export,
    stable_id,
)

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "commands"))
from hospital_export import SCOUT_NUMBER, build_export  # noqa: E402


@pytest.fixture(scope="module")
def export(tmp_path_factory: pytest.TempPathFactory) -> dict:
    return build_export(tmp_path_factory.mktemp("hosp") / "export")


@pytest.fixture(scope="module")
def scan(export: dict):
    return scan_export(export["root"])


def _by_uid(scan) -> dict[str, SeriesScan]:
    return {se.series_uid: se for se in scan.all_series()}


# ---------------------------------------------------------------- scanning the messy export


def test_scan_groups_series_and_counts_non_dicom(export, scan):
    truth = export["truth"]
    assert len(scan.studies) == 2
    assert sorted(st.study_uid for st in scan.studies) == sorted(export["study_uids"])
    got = _by_uid(scan)
    assert set(got) == set(truth["series_uid"])
    for row in truth.itertuples():
        assert got[row.series_uid].n_files == row.files, row
        assert got[row.series_uid].study_uid == row.study_uid
    assert scan.non_dicom == 2  # README.txt + thumb.jpg
    assert scan.n_images == truth["files"].sum()
    assert scan.n_files == scan.n_images + 2


def test_series_types_from_vendor_descriptions_and_timing(export, scan):
    got = _by_uid(scan)
    for row in export["truth"].itertuples():
        se = got[row.series_uid]
        assert (se.series_type or "") == row.expected, (se.description, se.why)
    empty = next(se for se in scan.all_series() if se.description == "" and se.series_type)
    assert empty.series_type == C.SAG_T2
    assert "TR 3500 / TE 95" in empty.why
    tirm = next(se for se in scan.all_series() if se.description == "SAG T2 TIRM")
    assert "STIR" in tirm.why and "'tirm'" in tirm.why
    scouts = [se for se in scan.all_series() if se.series_number == SCOUT_NUMBER]
    assert len(scouts) == 2
    assert all(se.series_type is None and "3 orientations" in se.why for se in scouts)


def test_ids_hash_uids_when_folders_are_not_integers(export, scan):
    for st in scan.studies:
        assert st.study_id == stable_id(st.study_uid)
        assert 0 <= st.study_id < 2**31
        assert st.source.name in export["folders"]
        # SeriesNumber is unique per study in this export, so it is the series id.
        numbers = export["truth"].query("study_uid == @st.study_uid")["series_number"]
        assert sorted(se.series_id for se in st.series) == sorted(numbers) and SCOUT_NUMBER in numbers.values
    again = scan_export(export["root"])
    assert [st.study_id for st in again.studies] == [st.study_id for st in scan.studies]


def test_integer_study_folders_become_study_ids(tmp_path):
    b = build_export(tmp_path / "export", integer_folders=True)
    s = scan_export(b["root"])
    assert sorted(st.study_id for st in s.studies) == [777, 4242]


def test_duplicate_series_numbers_fall_back_to_uid_ids():
    def se(uid: str, n: int) -> SeriesScan:
        return SeriesScan("1.2.3", uid, [Path(f"/x/{uid}/{k}") for k in range(3)], series_number=n)

    from radspine.io.export import _assign_ids

    sers = [se("1.1", 3), se("1.2", 3), se("1.3", 4)]
    (st,) = _assign_ids(Path("/x"), {"1.2.3": sers})
    ids = {s.series_uid: s.series_id for s in st.series}
    assert ids["1.3"] == 4
    assert ids["1.1"] != ids["1.2"] and 3 not in (ids["1.1"], ids["1.2"])
    assert ids["1.1"] == stable_id("1.1")


@pytest.mark.parametrize(
    ("desc", "orient", "timing", "expected", "why_part"),
    [
        ("SAG T2 TSE", "sagittal", (3000, 100, None), C.SAG_T2, "'t2'"),
        ("t1_tse_sag", "sagittal", (500, 10, None), C.SAG_T1, "'t1'"),
        ("T1 FSE SAG", "sagittal", (None, None, None), C.SAG_T1, "'t1'"),
        ("STIR", "sagittal", (4000, 40, 160), C.SAG_T2, "'stir'"),
        ("AX T2", "axial", (4000, 100, None), C.AX_T2, "'t2'"),
        ("T2_TRA", "axial", (None, None, None), C.AX_T2, "'t2'"),
        ("", "sagittal", (550, 12, None), C.SAG_T1, "short: T1"),
        ("", "sagittal", (5000, 60, 220), C.SAG_T2, "InversionTime 220"),
        ("AX T1", "axial", (500, 10, None), None, "axial T1"),
        ("COR T2", "coronal", (3000, 100, None), None, "coronal orientation"),
        ("SAG PD", "sagittal", (2000, 30, None), None, "unknown weighting"),
        ("T1 SAG POST", "sagittal", (500, 10, None), None, "post-contrast"),
        ("DWI SAG", "sagittal", (4000, 80, None), None, "not a structural"),
    ],
)
def test_classify_vendor_spellings(desc, orient, timing, expected, why_part):
    tr, te, ti = timing
    se = SeriesScan("1", "2", [Path(str(k)) for k in range(12)], description=desc, orientations={orient: 12},
                    tr=tr, te=te, ti=ti, modality="MR")
    classify_series(se)
    assert se.series_type == expected, se.why
    assert why_part in se.why


def test_classify_localizer_by_image_type_and_modality():
    se = SeriesScan("1", "2", [Path("a")] * 20, description="SAG T2", orientations={"sagittal": 20},
                    image_type=("ORIGINAL", "PRIMARY", "LOCALIZER"), modality="MR")
    classify_series(se)
    assert se.series_type is None and "ImageType LOCALIZER" in se.why
    ct = SeriesScan("1", "3", [Path("a")] * 20, description="SAG T2", orientations={"sagittal": 20}, modality="CT")
    classify_series(ct)
    assert ct.series_type is None and "modality CT" in ct.why


def test_missing_or_empty_folder_is_a_one_line_error(tmp_path):
    with pytest.raises(DatasetError, match="does not exist"):
        scan_export(tmp_path / "nope")
    (tmp_path / "junk").mkdir()
    (tmp_path / "junk" / "a.txt").write_text("hello")
    with pytest.raises(DatasetError, match=r"no DICOM image files found in 1 files .*a\.txt"):
        scan_export(tmp_path / "junk")


# ---------------------------------------------------------------- overrides


def test_override_csv_replaces_guesses(export, scan, tmp_path):
    st = scan.studies[0]
    scout = next(se for se in st.series if se.series_number == SCOUT_NUMBER)
    ax = next(se for se in st.series if se.series_type == C.AX_T2)
    csv = tmp_path / "types.csv"
    pd.DataFrame({"study_id": [st.study_id, ""], "series_id": [str(scout.series_id), ax.series_uid],
                  "series_description": ["Sagittal T1", "skip"]}).to_csv(csv, index=False)
    s = scan_export(export["root"], overrides=csv)
    got = _by_uid(s)
    assert got[scout.series_uid].series_type == C.SAG_T1
    assert got[scout.series_uid].why.startswith("override") and got[scout.series_uid].overridden
    assert got[ax.series_uid].series_type is None
    assert "guess was Axial T2" in got[ax.series_uid].why
    # The other study is untouched.
    other = [se for se in s.all_series() if se.study_id != st.study_id]
    assert sorted(se.series_type or "" for se in other) == ["", C.AX_T2, C.SAG_T1, C.SAG_T2]


@pytest.mark.parametrize(
    ("content", "match"),
    [
        ("series_id,series_description\n1,Sagittal T1\n", r"row 1: series_id 1 exists in studies"),
        ("series_id,series_description\n12345,Axial T2\n", r"row 1, column 'series_id': no series '12345'"),
        ("series_id,series_description\n5,Axial T3\n", r"unknown value 'Axial T3'"),
        ("series,description\n5,Axial T2\n", r"missing column 'series_id'"),
    ],
)
def test_bad_override_csv_names_file_and_row(export, tmp_path, content, match):
    csv = tmp_path / "types.csv"
    csv.write_text(content)
    with pytest.raises(DatasetError, match=match) as err:
        scan_export(export["root"], overrides=csv)
    assert str(csv) in str(err.value) and "\n" not in str(err.value)


# ---------------------------------------------------------------- the view


def test_view_is_a_readable_kaggle_layout(export, scan, tmp_path):
    from radspine.io.dataset import Dataset, iter_studies

    view = build_layout(scan, tmp_path / "work" / "view")
    ds = Dataset.open(view)
    assert ds.findings == []
    studies = ds.studies("test")
    assert [st.study_id for st in studies] == sorted(st.study_id for st in scan.studies)
    desc = pd.read_csv(view / "test_series_descriptions.csv")
    typed = export["truth"].query("expected != ''")
    assert len(desc) == 6
    assert sorted(zip(desc["series_id"], desc["series_description"])) == sorted(
        zip(typed["series_number"], typed["expected"]))
    assert (desc.groupby("study_id")["series_description"].apply(sorted) == [sorted(C.SERIES_TYPES)] * 2).all()
    # Files are symlinks to the originals, named by InstanceNumber.
    f = next((view / "test_images" / str(studies[0].study_id) / "1").iterdir())
    assert f.is_symlink() and Path(os.readlink(f)).is_relative_to(export["root"])
    n = 0
    for _, volumes, found in iter_studies(studies):
        assert found == []
        assert len(volumes) == 3
        n += sum(v.pixels.shape[0] for vols in volumes.values() for v in vols)
    assert n == export["truth"].query("expected != ''")["files"].sum()
    uids = read_study_uids(view)
    assert uids == {st.study_id: st.study_uid for st in scan.studies}
    rows = pd.read_csv(view / "study_uids.csv")
    assert set(rows["source"]) == {str(export["root"] / f) for f in export["folders"]}
    assert len(pd.read_csv(view / "export_series.csv")) == 8


def test_view_is_rebuilt_and_never_clobbers_other_folders(scan, tmp_path):
    view = build_layout(scan, tmp_path / "view")
    (view / "stale.txt").write_text("x")
    build_layout(scan, view)
    assert not (view / "stale.txt").exists() and (view / "study_uids.csv").is_file()
    assert [p.name for p in tmp_path.iterdir()] == ["view"]  # no temp folders left
    other = tmp_path / "mine"
    other.mkdir()
    (other / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not a radspine DICOM view"):
        build_layout(scan, other)
    assert (other / "keep.txt").read_text() == "x"


def test_view_copies_when_symlinks_fail(scan, tmp_path, monkeypatch):
    def no_links(*a, **k):
        raise OSError("symlinks not permitted")

    monkeypatch.setattr(os, "symlink", no_links)
    view = build_layout(scan, tmp_path / "view")
    files = list((view / "test_images").glob("*/*/*.dcm"))
    assert len(files) == sum(se.n_files for se in scan.all_series() if se.series_type)
    assert not any(f.is_symlink() for f in files)


def test_study_without_typed_series_still_gets_a_folder(export, tmp_path):
    csv = tmp_path / "types.csv"
    s0 = scan_export(export["root"])
    st = s0.studies[0]
    pd.DataFrame({"study_id": st.study_id, "series_id": [se.series_id for se in st.series],
                  "series_description": "skip"}).to_csv(csv, index=False)
    s = scan_export(export["root"], overrides=csv)
    view = build_layout(s, tmp_path / "view")
    assert (view / "test_images" / str(st.study_id)).is_dir()
    assert list((view / "test_images" / str(st.study_id)).iterdir()) == []
    from radspine.io.dataset import Dataset

    assert st.study_id in [x.study_id for x in Dataset.open(view).studies("test")]


def test_duplicate_copies_and_non_image_dicom_are_counted_not_scanned(export, scan, tmp_path):
    import shutil

    import pydicom
    from pydicom.dataset import FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, generate_uid

    root = tmp_path / "export"
    shutil.copytree(export["root"], root)
    some = next(p for p in root.rglob("IM*"))
    shutil.copy(some, root / "copy_of_one_image")  # PACS exports often hold the same image twice
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.1.3.10"  # Media Storage Directory (a DICOMDIR)
    meta.MediaStorageSOPInstanceUID = generate_uid(entropy_srcs=["dicomdir"])
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = pydicom.Dataset()
    ds.file_meta = meta
    ds.FileSetID = "EXPORT"
    ds.save_as(root / "DICOMDIR", enforce_file_format=True)
    s = scan_export(root)
    assert s.duplicates == 1 and s.non_image == 1 and s.non_dicom == 2
    assert s.n_images == scan.n_images
    assert [se.n_files for se in s.all_series()] == [se.n_files for se in scan.all_series()]


def _disc_blocks(root: Path, tilts: tuple[float, ...], *, description: str = "", n: int = 5) -> str:
    """One axial T2 series of per-disc blocks (``n`` slices, 4 mm apart) tilted about the patient x axis by
    ``tilts`` degrees, 40 mm apart cranio-caudally; no description unless given (typed by TR/TE)."""
    import pydicom
    from dicom_writer import ramp, tilted_axial, unit, write_series
    from pydicom.uid import generate_uid

    uid = generate_uid(entropy_srcs=["disc-blocks", str(root)])
    inst = 1
    for k, t in enumerate(tilts):
        row, col = tilted_axial(t)
        normal = unit(np.cross(row, col))
        origin = np.array([-60.0, -60.0, -40.0 * k])
        paths = write_series(root / f"block{k}", ramp(n, 8, 8, seed=k), origin=origin, row_cosine=row,
                             col_cosine=col, slice_step=4.0, series_uid=uid,
                             instance_numbers=list(range(inst, inst + n)))
        inst += n
        for p in paths:
            ds = pydicom.dcmread(p)
            ds.SeriesDescription = description
            ds.RepetitionTime, ds.EchoTime, ds.SeriesNumber = "4000", "100", 5
            ds.save_as(p, enforce_file_format=True)
        assert abs(float(normal[2])) > 0  # the block's normal is tilted, never in-plane
    return uid


def test_tilted_per_disc_axial_blocks_are_typed_block_by_block(tmp_path):
    # A series of per-disc blocks at 0°, 30° and 55° (the L5/S1 one steeper than 45°, where the normal points
    # more antero-posterior than cranio-caudal): every block is axial, the series is Axial T2, nothing left out.
    uid = _disc_blocks(tmp_path / "export" / "ax", (0.0, 30.0, 55.0))
    scan = scan_export(tmp_path / "export")
    se = _by_uid(scan)[uid]
    assert se.series_type == C.AX_T2, se.why
    assert [(b.plane, round(b.tilt_deg), len(b.files)) for b in se.blocks] == [
        ("axial", 0, 5), ("axial", 30, 5), ("axial", 55, 5)]
    assert se.left_out == [] and "3 blocks tilted 0°/30°/55°" in se.why and "TR 4000 / TE 100" in se.why
    # The view holds all 15 slices, and the reader takes the 55° block as an axial stack of the study.
    view = build_layout(scan, tmp_path / "view")
    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes

    (study,) = Dataset.open(view).studies("test")
    vols = load_study_volumes(study)
    assert sorted(v.pixels.shape[0] for v in vols.axial) == [5, 5, 5]
    assert C.AX_T2 not in vols.problems


def test_three_plane_scout_is_skipped_but_a_stray_block_only_left_out(tmp_path):
    from dicom_writer import ramp, write_series
    from pydicom.uid import generate_uid

    # Three-plane scout: 3 sagittal, 3 coronal, 3 axial slices in one series.
    scout = generate_uid(entropy_srcs=["scout3"])
    planes = {"sag": ([0, 1, 0], [0, 0, -1]), "cor": ([1, 0, 0], [0, 0, -1]), "ax": ([1, 0, 0], [0, 1, 0])}
    inst = 1
    for k, (name, (row, col)) in enumerate(planes.items()):
        write_series(tmp_path / "export" / "scout" / name, ramp(3, 8, 8, seed=k), origin=[-100, -100, 50],
                     row_cosine=row, col_cosine=col, slice_step=10.0, series_uid=scout,
                     instance_numbers=[inst, inst + 1, inst + 2], pixel_spacing=(2.0, 2.0))
        inst += 3
    # A tilted axial series with one stray coronal block of 12 slices (a thick slab, not a disc block).
    ax = _disc_blocks(tmp_path / "export" / "ax", (10.0, 20.0), description="AX T2")
    write_series(tmp_path / "export" / "ax" / "stray", ramp(12, 8, 8, seed=9), origin=[-60, -60, 0],
                 row_cosine=[1, 0, 0], col_cosine=[0, 0, -1], slice_step=4.0, series_uid=ax,
                 instance_numbers=list(range(100, 112)))
    scan = scan_export(tmp_path / "export")
    by = _by_uid(scan)
    assert by[scout].series_type is None and by[scout].orientation == "mixed"
    assert "localizer/scout (9 files in 3 orientations at right angles)" in by[scout].why
    se = by[ax]
    assert se.series_type == C.AX_T2, se.why
    assert len(se.left_out) == 12 and "left out: coronal 0° ×12 (not axial)" in se.why
    view = build_layout(scan, tmp_path / "view")
    linked = list((view / "test_images").rglob(f"{se.series_id}/*.dcm"))
    assert len(linked) == 10  # the two disc blocks; the coronal block stays out of the view
