"""One table of bad inputs: every user mistake is a one-line error naming the file, or a logged skip.

Each row says which file, what is wrong with it, and what the user sees: a ``RadspineError`` whose
message holds a substring, or (where a batch should go on) a warning with a substring and a safe result.
"""

from __future__ import annotations

import logging
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pydicom
import pytest
from dataset_builder import edit_csv, write_dataset
from dicom_writer import ramp, write_series
from pydicom.data import get_testdata_file

from radspine import constants as C
from radspine.config import load_config
from radspine.errors import ConfigError, DatasetError, DicomError, RadspineError
from radspine.io.dataset import Dataset, read_coordinates, read_train_csv
from radspine.io.dicom import read_series


@dataclass(frozen=True)
class Case:
    """``make(tmp)`` builds the input and returns (action, file the message must name)."""

    id: str
    wrong: str
    make: Callable[[Path], tuple[Callable[[], object], Path]]
    expect: str  # substring of the error message, or of the warning for a logged skip
    error: type[RadspineError] | None  # None: a logged skip, the action returns normally
    check: Callable[[object], None] | None = None  # what the safe result must be, for skips


# ------------------------------------------------------------------ builders


def _dataset(tmp: Path) -> Path:
    return write_dataset(tmp / "data")


def _csv_edit(name: str, fn) -> Callable[[Path], tuple[Callable[[], object], Path]]:
    def make(tmp: Path):
        root = _dataset(tmp)
        edit_csv(root / name, fn)
        return (lambda: Dataset.open(root)), root / name
    return make


def _csv_text(name: str, text: bytes | str, reader=None) -> Callable[[Path], tuple[Callable[[], object], Path]]:
    def make(tmp: Path):
        root = _dataset(tmp)
        p = root / name
        p.write_bytes(text if isinstance(text, bytes) else text.encode())
        return ((lambda: reader(p)) if reader else (lambda: Dataset.open(root))), p
    return make


def _set(col: str, row: int, value: str):
    def fn(df):
        df.loc[df.index[row], col] = value
        return df
    return fn


def _series(tmp: Path, n: int = 3, rows: int = 8, cols: int = 8, **kw) -> list[Path]:
    return write_series(tmp / "s", ramp(n, rows, cols, seed=n), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                        col_cosine=(0, 1, 0), **kw)


def _edit_dicom(path: Path, fn) -> None:
    ds = pydicom.dcmread(path)
    fn(ds)
    ds.save_as(path, enforce_file_format=True)


def _del(*keywords: str):
    def fn(ds):
        for kw in keywords:
            delattr(ds, kw)
    return fn


def _dicom(prepare: Callable[[Path], Path]) -> Callable[[Path], tuple[Callable[[], object], Path]]:
    """``prepare(tmp)`` writes tmp/s and returns the file the message must name."""
    def make(tmp: Path):
        named = prepare(tmp)
        return (lambda: read_series(tmp / "s")), named
    return make


def _copy_testdata(name: str, as_name: str = "1.dcm") -> Callable[[Path], Path]:
    def prepare(tmp: Path) -> Path:
        (tmp / "s").mkdir()
        return Path(shutil.copy(get_testdata_file(name), tmp / "s" / as_name))
    return prepare


def _one_slice(fn, index: int = 1, n: int = 3) -> Callable[[Path], Path]:
    def prepare(tmp: Path) -> Path:
        paths = _series(tmp, n)
        fn(paths[index])
        return paths[index]
    return prepare


def _all_slices(fn, n: int = 2, **kw) -> Callable[[Path], Path]:
    def prepare(tmp: Path) -> Path:
        paths = _series(tmp, n, **kw)
        for p in paths:
            fn(p)
        return paths[0]
    return prepare


def _truncate(keep: int):
    def fn(p: Path) -> None:
        p.write_bytes(p.read_bytes()[:keep])
    return fn


def _mixed_sizes(tmp: Path) -> Path:
    _series(tmp, 3)
    write_series(tmp / "s", ramp(2, 6, 10), origin=(0, 0, 20), row_cosine=(1, 0, 0), col_cosine=(0, 1, 0),
                 instance_numbers=[4, 5])
    return tmp / "s"


def _empty_folder(tmp: Path) -> Path:
    (tmp / "s").mkdir()
    (tmp / "s" / ".DS_Store").write_bytes(b"\x00")  # hidden files do not count
    return tmp / "s"


def _config(text: str | None) -> Callable[[Path], tuple[Callable[[], object], Path]]:
    def make(tmp: Path):
        p = tmp / "my config.yaml"
        if text is not None:
            p.write_text(text)
        return (lambda: load_config(p)), p
    return make


def _stacks(n_slices: list[int]) -> Callable[[object], None]:
    def check(result) -> None:
        assert [v.shape[0] for v in result] == n_slices
    return check


def _spacing(value: tuple[float, float]) -> Callable[[object], None]:
    def check(result) -> None:
        assert [v.pixel_spacing for v in result] == [value]
    return check


_HEADER = ",".join(("study_id", *C.LABEL_COLUMNS))
_COORD_HEADER = "study_id,series_id,instance_number,condition,level,x,y\n"

CASES = [
    # -- CSVs (through Dataset.open, as `radspine inspect` reads them, or the public readers)
    Case("train-wrong-header", "label column renamed",
         _csv_edit("train.csv", lambda df: df.rename(columns={C.LABEL_COLUMNS[0]: "spinal_l1_l2"})),
         "column 'spinal_canal_stenosis_l1_l2': missing column", DatasetError),
    Case("train-bad-grade", "grade 'Mild' is not a competition severity",
         _csv_edit("train.csv", _set(C.LABEL_COLUMNS[2], 0, "Mild")),
         "row 1 (line 2), column 'spinal_canal_stenosis_l3_l4': unknown value 'Mild'", DatasetError),
    Case("train-grade-case", "grade written in lower case",
         _csv_edit("train.csv", _set(C.LABEL_COLUMNS[1], 1, "severe")),
         "row 2 (line 3), column 'spinal_canal_stenosis_l2_l3': unknown value 'severe'", DatasetError),
    Case("train-nonint-id", "study_id is not an integer",
         _csv_edit("train.csv", _set("study_id", 1, "10x2")),
         "row 2 (line 3), column 'study_id': expected a non-negative integer id, got '10x2'", DatasetError),
    Case("train-duplicate-row", "one study twice",
         _csv_edit("train.csv", _set("study_id", 1, "101")), "column 'study_id': duplicate row (study_id=101)",
         DatasetError),
    Case("train-empty", "zero-byte file", _csv_text("train.csv", b""), "file is empty (no header)", DatasetError),
    Case("train-missing", "file absent, read directly",
         lambda tmp: ((lambda: read_train_csv(tmp / "train.csv")), tmp / "train.csv"),
         "cannot read file (No such file or directory)", DatasetError),
    Case("train-not-utf8", "Latin-1 bytes in the header",
         _csv_text("train.csv", _HEADER.replace("study_id", "\xe9tude").encode("latin-1") + b"\n"),
         "not a readable CSV", DatasetError),
    Case("train-header-twice", "a column appears twice",
         _csv_text("train.csv", _HEADER + ",study_id\n"), "column 'study_id': column appears twice", DatasetError),
    Case("descriptions-duplicate", "a (study, series) pair twice",
         _csv_edit("train_series_descriptions.csv", _set("series_id", 1, "1")),
         "column 'study_id+series_id': duplicate row (study_id=101, series_id=1)", DatasetError),
    Case("points-missing-column", "no y column",
         _csv_text("train_label_coordinates.csv", "study_id,series_id,instance_number,condition,level,x\n",
                   reader=read_coordinates),
         "column 'y': missing column", DatasetError),
    Case("points-bad-x", "decimal comma in x",
         _csv_text("train_label_coordinates.csv",
                   _COORD_HEADER + '101,2,1,Spinal Canal Stenosis,L1/L2,"12,5",3.0\n', reader=read_coordinates),
         "row 1 (line 2), column 'x': expected a number, got '12,5'", DatasetError),
    Case("points-nan-y", "y left blank",
         _csv_text("train_label_coordinates.csv", _COORD_HEADER + "101,2,1,Spinal Canal Stenosis,L1/L2,1.0,\n",
                   reader=read_coordinates),
         "row 1 (line 2), column 'y': expected a number, got ''", DatasetError),
    Case("points-negative-instance", "instance_number -3",
         _csv_text("train_label_coordinates.csv", _COORD_HEADER + "101,2,-3,Spinal Canal Stenosis,L1/L2,1,2\n",
                   reader=read_coordinates),
         "column 'instance_number': expected a non-negative integer id, got '-3'", DatasetError),
    Case("points-bad-level", "level L6/S1",
         _csv_text("train_label_coordinates.csv", _COORD_HEADER + "101,2,1,Spinal Canal Stenosis,L6/S1,1,2\n",
                   reader=read_coordinates),
         "column 'level': unknown value 'L6/S1'", DatasetError),
    Case("submission-bad-row-id", "row_id without a condition",
         _csv_edit("sample_submission.csv", _set("row_id", 0, "900_l1_l2")),
         "row 1 (line 2), column 'row_id': malformed row_id '900_l1_l2'", DatasetError),
    # -- DICOM series folders
    Case("dicom-truncated", "pydicom's truncated MR file is the only slice",
         _dicom(_copy_testdata("MR_truncated.dcm")), "cannot decode pixel data", DicomError),
    Case("dicom-not-dicom", "a text file named .dcm", _dicom(_all_slices(lambda p: p.write_text("hello"), n=1)),
         "not a DICOM file", DicomError),
    Case("dicom-no-preamble", "pydicom's file without preamble/meta", _dicom(_copy_testdata("no_meta.dcm")),
         "not a DICOM file", DicomError),
    Case("dicom-no-pixels", "a structured report (no pixel data)", _dicom(_copy_testdata("reportsi.dcm")),
         "no pixel data", DicomError),
    Case("dicom-multiframe", "a multi-frame RT dose", _dicom(_copy_testdata("rtdose.dcm")),
         "multi-frame DICOM is not supported", DicomError),
    Case("dicom-colour", "an RGB secondary capture", _dicom(_copy_testdata("SC_rgb_small_odd.dcm")),
         "colour DICOM is not supported", DicomError),
    Case("dicom-all-cut", "every slice cut before its pixel data", _dicom(_all_slices(_truncate(300))),
         "no readable DICOM slice among 2 files (first: ", DicomError),
    Case("dicom-no-spacing", "neither PixelSpacing nor ImagerPixelSpacing on any slice",
         _dicom(_all_slices(lambda p: _edit_dicom(p, _del("PixelSpacing")))),
         "missing PixelSpacing (no ImagerPixelSpacing, and no slice of the series", DicomError),
    Case("dicom-no-ipp", "no ImagePositionPatient on any slice",
         _dicom(_all_slices(lambda p: _edit_dicom(p, _del("ImagePositionPatient")))),
         "missing geometry tag(s) ImagePositionPatient", DicomError),
    Case("dicom-skewed-iop", "row and column cosines not orthogonal",
         _dicom(_all_slices(lambda p: _edit_dicom(
             p, lambda ds: setattr(ds, "ImageOrientationPatient", ["1", "0", "0", "0.5", "0.866", "0"])), n=1)),
         "is not two orthogonal unit vectors", DicomError),
    Case("dicom-empty-folder", "series folder with only a hidden file", _dicom(_empty_folder),
         "empty series folder (no DICOM files)", DicomError),
    Case("dicom-missing-folder", "series folder does not exist",
         lambda tmp: ((lambda: read_series(tmp / "s")), tmp / "s"), "series folder does not exist", DicomError),
    # -- DICOM: logged skips with a safe result (the batch goes on)
    Case("dicom-one-corrupt-slice", "garbage bytes in one slice of three",
         _dicom(_one_slice(lambda p: p.write_bytes(b"garbage" * 50))), "slice dropped: ", None, _stacks([2])),
    Case("dicom-one-cut-slice", "one slice cut inside its pixel data",
         _dicom(_one_slice(lambda p: p.write_bytes(p.read_bytes()[:-40]), index=2)),
         "slice dropped: ", None, _stacks([2])),
    Case("dicom-one-slice-no-iop", "one slice without ImageOrientationPatient",
         _dicom(_one_slice(lambda p: _edit_dicom(p, _del("ImageOrientationPatient")), index=0)),
         "missing geometry tag(s) ImageOrientationPatient", None, _stacks([2])),
    Case("dicom-imager-spacing", "PixelSpacing absent, ImagerPixelSpacing present",
         _dicom(_all_slices(lambda p: _edit_dicom(p, lambda ds: (
             delattr(ds, "PixelSpacing"), setattr(ds, "ImagerPixelSpacing", ["0.4", "0.6"]))))),
         "without PixelSpacing use ImagerPixelSpacing", None, _spacing((0.4, 0.6))),
    Case("dicom-spacing-from-series", "one slice without either spacing tag",
         _dicom(_one_slice(lambda p: _edit_dicom(p, _del("PixelSpacing")))),
         "use PixelSpacing [0.5, 0.5] of the series' slices on the same grid", None, _spacing((0.5, 0.5))),
    Case("dicom-mixed-sizes", "two image sizes in one folder", _dicom(_mixed_sizes),
         "slices have 2 image sizes (10x6: 2, 8x8: 3)", None, _stacks([3, 2])),
    # -- config YAML
    Case("config-unknown-key", "a key no stage knows", _config("features:\n  bogus_option: 3\n"),
         "features.bogus_option: Extra inputs are not permitted", ConfigError),
    Case("config-bad-yaml", "unclosed bracket", _config("features: [1, 2\n"), "invalid YAML", ConfigError),
    Case("config-not-mapping", "a list at the top level", _config("- features\n- localizer\n"),
         "top level must be a mapping", ConfigError),
    Case("config-missing", "file absent", _config(None), "cannot read config (No such file or directory)",
         ConfigError),
]


def test_table_is_broad():
    assert len(CASES) >= 20
    assert len({c.id for c in CASES}) == len(CASES)
    assert sum(c.error is None for c in CASES) >= 5


@pytest.mark.parametrize("case", CASES, ids=[c.id for c in CASES])
def test_bad_input(case: Case, tmp_path: Path, caplog: pytest.LogCaptureFixture):
    action, named = case.make(tmp_path)
    if case.error is not None:
        with pytest.raises(case.error) as exc:
            action()
        msg = str(exc.value)
        assert isinstance(exc.value, RadspineError)
        assert case.expect in msg, msg
        assert "\n" not in msg and "Traceback" not in msg
        assert str(named) in msg, msg
        return
    with caplog.at_level(logging.WARNING):
        result = action()
    hits = [r.getMessage() for r in caplog.records if case.expect in r.getMessage()]
    assert hits, [r.getMessage() for r in caplog.records]
    for line in hits:
        assert "\n" not in line
        # The warning names the folder and, for a slice-level problem, the slice file.
        assert str(named) in line or (named.name in line and str(named.parent) in line), line
    assert case.check is not None
    case.check(result)


TOLERATED = [
    ("bom", lambda text: "\ufeff" + text),
    ("spaces-around-values", lambda text: text.replace(",", " , ")),
    ("crlf-line-ends", lambda text: text.replace("\n", "\r\n")),
]


@pytest.mark.parametrize(("name", "edit"), TOLERATED, ids=[t[0] for t in TOLERATED])
def test_tolerated_csv_quirks_read_identically(tmp_path: Path, name, edit):
    # Spreadsheet-saved CSVs: a BOM, padded cells and CRLF give the same tables, not a schema error.
    root = _dataset(tmp_path)
    clean = Dataset.open(root)
    for csv in ("train.csv", "train_label_coordinates.csv"):
        p = root / csv
        p.write_bytes(edit(p.read_text()).encode("utf-8"))
    ds = Dataset.open(root)
    assert ds.labels is not None and clean.labels is not None
    np.testing.assert_array_equal(ds.labels.to_numpy(dtype=float), clean.labels.to_numpy(dtype=float))
    assert ds.coordinates.equals(clean.coordinates)
    assert [f.kind for f in ds.findings] == [f.kind for f in clean.findings]
