"""The RSNA 2024 LSDC dataset layout: validated CSVs, studies, labels, coordinates and findings.

Layout under a root folder (either split may be absent)::

    train_images/<study_id>/<series_id>/<instance>.dcm    test_images/<study_id>/<series_id>/...
    train.csv  train_label_coordinates.csv  train_series_descriptions.csv
    test_series_descriptions.csv  [sample_submission.csv]

A CSV that breaks its schema is a :class:`DatasetError` naming file, row and column. Problems real data
has (missing images, extra series, few coordinates...) become :class:`Finding` records instead.

A series folder that is empty or holds no DICOM file (real downloads are often partial) counts as no
images: it is left out of :attr:`Study.series`, and a study left with no series is a study without images.
"""

from __future__ import annotations

import logging
import os
from collections import Counter, defaultdict
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from radspine import constants as C
from radspine.errors import DatasetError, DicomError
from radspine.io.dicom import probe_series_folder
from radspine.types import SeriesInfo, Study, Volume

log = logging.getLogger(__name__)

SPLITS: tuple[str, ...] = ("train", "test")

# Finding kinds, each one a problem real competition data has; none stops the pipeline.
FINDING_KINDS: dict[str, str] = {
    "study_without_images": "study listed in a CSV has no image folder, or all its series folders are empty",
    "series_without_images": "series listed in *_series_descriptions.csv has no image folder",
    "empty_series_folder": "series folder is empty or holds no DICOM file (left out of the study)",
    "series_without_description": "image folder has no *_series_descriptions.csv row",
    "unknown_description": "series description is not one of the three known types",
    "duplicate_series_type": "study has more than one series of a type",
    "missing_series_type": "study has no series of a type",
    "study_without_labels": "train study has no train.csv row",
    "coordinate_unknown_series": "coordinate row names a series without description row",
    "coordinate_unexpected_series": "coordinate row lies on a series type not expected for its condition",
    "duplicate_coordinate": "more than one coordinate row for a study × condition × level",
    "few_coordinates": "study has fewer than 25 coordinate rows",
    "blank_label_with_coordinates": "train.csv cell is blank but train_label_coordinates.csv has a point for it",
    "graded_without_coordinates": "train.csv cell is graded but train_label_coordinates.csv has no point for it",
    "stray_entry": "unexpected file or folder inside an images folder",
    "missing_file": "an expected CSV is absent",
    "unreadable_series": "a series could not be read as DICOM",
    "dropped_slice": "a slice could not be read and was left out of its series",
}


@dataclass(frozen=True)
class Finding:
    """One data problem that does not stop the pipeline (see :data:`FINDING_KINDS`)."""

    kind: str
    message: str
    split: str | None = None
    study_id: int | None = None
    series_id: int | None = None
    file: str | None = None
    condition: str | None = None  # snake key, for label/coordinate findings
    level: str | None = None

    def to_dict(self) -> dict[str, Any]:
        """Plain dict (for JSON)."""
        return asdict(self)


# ---------------------------------------------------------------- CSV schemas

_GRADES = ("", *C.SEVERITIES)


def _err(file: Path, row: int | None, column: str | None, what: str) -> DatasetError:
    where = str(file)
    if row is not None:
        # row counts data rows from 1; line is the file line with the header as line 1.
        where += f", row {row} (line {row + 1})"
    if column is not None:
        where += f", column {column!r}"
    return DatasetError(f"{where}: {what}")


def _read_csv(path: Path, columns: tuple[str, ...], *, exact: bool = True) -> pd.DataFrame:
    """Read a CSV as strings and check its header (all ``columns`` present; no others if ``exact``)."""
    try:
        # utf-8-sig: a spreadsheet-saved CSV starts with a BOM that would otherwise glue onto "study_id".
        # header=None: pandas would rename a repeated column to "name.1" and hide the duplicate.
        df = pd.read_csv(path, dtype=str, keep_default_na=False, na_filter=False, skipinitialspace=True,
                         encoding="utf-8-sig", header=None)
    except pd.errors.EmptyDataError:
        raise _err(path, None, None, "file is empty (no header)") from None
    except OSError as err:
        raise _err(path, None, None, f"cannot read file ({err.strerror or type(err).__name__})") from None
    except (pd.errors.ParserError, UnicodeDecodeError) as err:
        raise _err(path, None, None, f"not a readable CSV ({' '.join(str(err).split())[:160]})") from None
    header = [str(c).strip() for c in df.iloc[0]]
    df = df.iloc[1:].reset_index(drop=True)
    df.columns = header
    dup = [c for c, n in Counter(header).items() if n > 1]
    if dup:
        raise _err(path, None, dup[0], "column appears twice in the header")
    missing = [c for c in columns if c not in header]
    if missing:
        raise _err(path, None, missing[0], f"missing column (header is {', '.join(header)})")
    extra = [c for c in header if c not in columns]
    if exact and extra:
        raise _err(path, None, extra[0], f"unexpected column (expected {', '.join(columns)})")
    return df[list(columns)].apply(lambda s: s.str.strip())


def _ints(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    values = df[column].to_numpy()
    out = np.empty(len(values), dtype=np.int64)
    for i, v in enumerate(values):
        if not v.isdigit():
            raise _err(path, i + 1, column, f"expected a non-negative integer id, got {v!r}")
        out[i] = int(v)
    return out


def _floats(df: pd.DataFrame, column: str, path: Path) -> np.ndarray:
    parsed = pd.to_numeric(df[column], errors="coerce").to_numpy(dtype=np.float64)
    bad = np.flatnonzero(~np.isfinite(parsed))
    if bad.size:
        i = int(bad[0])
        raise _err(path, i + 1, column, f"expected a number, got {df[column].iloc[i]!r}")
    return parsed


def _allowed(df: pd.DataFrame, column: str, allowed: Iterable[str], path: Path) -> None:
    allowed = tuple(allowed)
    ok = df[column].isin(allowed).to_numpy()
    if not ok.all():
        i = int(np.flatnonzero(~ok)[0])
        shown = ", ".join(repr(a) for a in allowed if a) + (" or blank" if "" in allowed else "")
        raise _err(path, i + 1, column, f"unknown value {df[column].iloc[i]!r} (allowed: {shown})")


def _no_duplicates(df: pd.DataFrame, keys: list[str], path: Path) -> None:
    dup = df.duplicated(subset=keys, keep="first").to_numpy()
    if dup.any():
        i = int(np.flatnonzero(dup)[0])
        value = ", ".join(f"{k}={df[k].iloc[i]}" for k in keys)
        raise _err(path, i + 1, keys[-1] if len(keys) == 1 else "+".join(keys), f"duplicate row ({value})")


def read_train_csv(path: Path) -> pd.DataFrame:
    """train.csv → DataFrame[study_id, <25 label columns>] with grades as float 0/1/2, NaN when blank."""
    df = _read_csv(path, ("study_id", *C.LABEL_COLUMNS))
    out = pd.DataFrame({"study_id": _ints(df, "study_id", path)})
    _no_duplicates(out.astype(str), ["study_id"], path)
    grade_of = {"": np.nan, **{g: float(i) for i, g in enumerate(C.SEVERITIES)}}
    for col in C.LABEL_COLUMNS:
        _allowed(df, col, _GRADES, path)
        out[col] = df[col].map(grade_of).astype(np.float64).to_numpy()
    return out


def read_series_descriptions(path: Path) -> pd.DataFrame:
    """*_series_descriptions.csv → DataFrame[study_id, series_id, series_description].

    Unknown descriptions are kept (they become findings); duplicate (study_id, series_id) is an error.
    """
    df = _read_csv(path, ("study_id", "series_id", "series_description"))
    out = pd.DataFrame(
        {
            "study_id": _ints(df, "study_id", path),
            "series_id": _ints(df, "series_id", path),
            "series_description": df["series_description"].to_numpy(dtype=object),
        }
    )
    _no_duplicates(out, ["study_id", "series_id"], path)
    return out


def read_coordinates(path: Path) -> pd.DataFrame:
    """train_label_coordinates.csv → DataFrame[study_id, series_id, instance_number, condition, level, x, y].

    Condition and level are converted to snake keys (``constants.CONDITION_KEYS``/``LEVEL_KEYS``).
    """
    df = _read_csv(path, ("study_id", "series_id", "instance_number", "condition", "level", "x", "y"))
    _allowed(df, "condition", C.CONDITION_NAMES.values(), path)
    _allowed(df, "level", C.LEVEL_NAMES.values(), path)
    return pd.DataFrame(
        {
            "study_id": _ints(df, "study_id", path),
            "series_id": _ints(df, "series_id", path),
            "instance_number": _ints(df, "instance_number", path),
            "condition": df["condition"].map(C.CONDITION_KEYS).to_numpy(dtype=object),
            "level": df["level"].map(C.LEVEL_KEYS).to_numpy(dtype=object),
            "x": _floats(df, "x", path),
            "y": _floats(df, "y", path),
        }
    )


def read_sample_submission(path: Path) -> pd.DataFrame:
    """sample_submission.csv → DataFrame[row_id, study_id, condition, level, normal_mild, moderate, severe]."""
    df = _read_csv(path, ("row_id", *C.SEVERITY_COLUMNS))
    parsed = []
    for i, rid in enumerate(df["row_id"]):
        try:
            parsed.append(C.parse_row_id(rid))
        except ValueError:
            raise _err(path, i + 1, "row_id", f"malformed row_id {rid!r} (expected <study_id>_<condition>_<level>)") from None
    _no_duplicates(df, ["row_id"], path)
    out = pd.DataFrame(parsed, columns=["study_id", "condition", "level"])
    out.insert(0, "row_id", df["row_id"].to_numpy(dtype=object))
    for col in C.SEVERITY_COLUMNS:
        out[col] = _floats(df, col, path)
    return out


# ---------------------------------------------------------------- the dataset


def _numeric_dirs(folder: Path, split: str, findings: list[Finding], study_id: int | None = None) -> dict[int, Path]:
    """Sub-folders named by an integer id; anything else is a stray_entry finding."""
    out: dict[int, Path] = {}
    with os.scandir(folder) as it:
        for e in it:
            if e.name.startswith("."):
                continue
            if e.is_dir() and e.name.isdigit():
                out[int(e.name)] = Path(e.path)
            else:
                findings.append(Finding("stray_entry", f"{e.path}: not a <numeric id> folder; ignored",
                                        split=split, study_id=study_id, file=e.path))
    return dict(sorted(out.items()))


class Dataset:
    """A validated dataset root in the competition layout; build with :meth:`open`."""

    def __init__(
        self,
        root: Path,
        *,
        labels: pd.DataFrame | None,
        coordinates: pd.DataFrame,
        descriptions: dict[str, pd.DataFrame],
        sample_submission: pd.DataFrame | None,
        studies: dict[str, dict[int, Study]],
        findings: list[Finding],
    ) -> None:
        self.root = root
        self.labels = labels  # wide train.csv (float grades) or None
        self.coordinates = coordinates
        self.descriptions = descriptions
        self.sample_submission = sample_submission
        self._studies = studies
        self.findings = findings

    # -- construction -------------------------------------------------

    @classmethod
    def open(cls, root: str | Path) -> Dataset:
        """Validate every CSV under ``root``, scan the image folders and collect findings.

        Raises DatasetError if the root is missing, holds neither split, or a CSV breaks its schema.
        """
        root = Path(root)
        if not root.is_dir():
            raise DatasetError(f"{root}: dataset folder does not exist")
        findings: list[Finding] = []

        def csv(name: str) -> Path | None:
            p = root / name
            return p if p.is_file() else None

        present = [
            s for s in SPLITS
            if (root / f"{s}_images").is_dir() or csv(f"{s}_series_descriptions.csv") is not None
        ]
        if not present:
            raise DatasetError(
                f"{root}: no train or test split (expected train_images/ or test_images/ with "
                "*_series_descriptions.csv)"
            )

        labels = None
        if "train" in present:
            p = csv("train.csv")
            if p is not None:
                labels = read_train_csv(p)
            else:
                findings.append(Finding("missing_file", f"{root / 'train.csv'}: absent; train split has no labels",
                                        split="train", file=str(root / "train.csv")))
        p = csv("train_label_coordinates.csv")
        coords = read_coordinates(p) if p is not None else pd.DataFrame(
            {c: pd.Series(dtype=t) for c, t in (("study_id", "int64"), ("series_id", "int64"),
                                                ("instance_number", "int64"), ("condition", object),
                                                ("level", object), ("x", "float64"), ("y", "float64"))}
        )
        if p is None and labels is not None:
            findings.append(Finding("missing_file", f"{root / 'train_label_coordinates.csv'}: absent",
                                    split="train", file=str(root / "train_label_coordinates.csv")))
        p = csv("sample_submission.csv")
        sample = read_sample_submission(p) if p is not None else None

        descriptions: dict[str, pd.DataFrame] = {}
        studies: dict[str, dict[int, Study]] = {}
        for split in present:
            name = f"{split}_series_descriptions.csv"
            p = csv(name)
            if p is not None:
                desc = read_series_descriptions(p)
            else:
                findings.append(Finding("missing_file", f"{root / name}: absent", split=split, file=str(root / name)))
                desc = read_series_descriptions_empty()
            descriptions[split] = desc
            extra_ids: set[int] = set()
            if split == "train" and labels is not None:
                extra_ids = set(labels["study_id"].tolist())
            studies[split] = _scan_split(root, split, desc, extra_ids, findings)

        if labels is not None and "train" in studies:
            for sid in sorted(set(studies["train"]) - set(labels["study_id"].tolist())):
                findings.append(Finding("study_without_labels", f"train study {sid} has no train.csv row",
                                        split="train", study_id=sid))

        desc_train = descriptions.get("train", read_series_descriptions_empty())
        coords = _join_coordinates(coords, desc_train, findings)
        if labels is not None:
            for sid in sorted(set(labels["study_id"].tolist()) - set(coords["study_id"].tolist())):
                findings.append(Finding("few_coordinates", f"study {sid} has 0 coordinate rows "
                                        f"(< {len(C.LABEL_COLUMNS)})", split="train", study_id=sid))
            _cross_check_labels(labels, coords, findings)
        return cls(root, labels=labels, coordinates=coords, descriptions=descriptions,
                   sample_submission=sample, studies=studies, findings=findings)

    # -- queries ------------------------------------------------------

    def has_split(self, split: str) -> bool:
        """Whether the dataset holds this split ("train" / "test")."""
        return split in self._studies

    @property
    def splits(self) -> tuple[str, ...]:
        """The splits present, in ("train", "test") order."""
        return tuple(s for s in SPLITS if s in self._studies)

    def studies(self, split: str) -> list[Study]:
        """All studies of a split, by study_id: those with images and those only listed in a CSV.

        A study without images has an empty ``series`` tuple (downstream stages fall back to priors).
        """
        self._check_split(split)
        return list(self._studies[split].values())

    def study(self, study_id: int, split: str) -> Study:
        """One study; DatasetError if the split does not hold it."""
        self._check_split(split)
        try:
            return self._studies[split][int(study_id)]
        except KeyError:
            raise DatasetError(f"{self.root}: study {study_id} is not in the {split} split") from None

    def labels_long(self) -> pd.DataFrame:
        """Grades in long form: DataFrame[study_id, condition, level, grade] (25 rows per train.csv study).

        ``grade`` is float 0/1/2 (Normal/Mild, Moderate, Severe) and NaN when blank; rows are in
        study_id, then competition (condition-major, level-minor) order.
        """
        cols = ["study_id", "condition", "level", "grade"]
        if self.labels is None:
            return pd.DataFrame({c: pd.Series(dtype=t) for c, t in zip(cols, ("int64", object, object, "float64"), strict=True)})
        wide = self.labels.sort_values("study_id")
        n = len(wide)
        grades = wide[list(C.LABEL_COLUMNS)].to_numpy(dtype=np.float64)  # (n, 25) condition-major
        conds = np.repeat(np.array(C.CONDITIONS, dtype=object), len(C.LEVELS))
        levels = np.tile(np.array(C.LEVELS, dtype=object), len(C.CONDITIONS))
        return pd.DataFrame(
            {
                "study_id": np.repeat(wide["study_id"].to_numpy(), len(C.LABEL_COLUMNS)),
                "condition": np.tile(conds, n),
                "level": np.tile(levels, n),
                "grade": grades.reshape(-1),
            }
        )

    def findings_by_kind(self) -> dict[str, list[Finding]]:
        """Findings grouped by kind (kinds in :data:`FINDING_KINDS` order)."""
        groups: dict[str, list[Finding]] = defaultdict(list)
        for f in self.findings:
            groups[f.kind].append(f)
        order = list(FINDING_KINDS)
        return dict(sorted(groups.items(), key=lambda kv: order.index(kv[0]) if kv[0] in order else len(order)))

    def summary(self) -> dict[str, Any]:
        """Counts for ``radspine inspect``: studies per split, series per type, labels, findings."""
        out: dict[str, Any] = {"root": str(self.root), "splits": {}}
        for split in self.splits:
            studies = self.studies(split)
            types = Counter(s.description or "(no description)" for st in studies for s in st.series)
            out["splits"][split] = {
                "studies": len(studies),
                "studies_with_images": sum(1 for st in studies if st.series),
                "series": sum(len(st.series) for st in studies),
                "empty_series_folders": sum(1 for f in self.findings
                                            if f.kind == "empty_series_folder" and f.split == split),
                "series_per_type": dict(sorted(types.items())),
            }
        labels: dict[str, dict[str, int]] = {}
        long = self.labels_long()
        for cond in C.CONDITIONS:
            g = long.loc[long["condition"] == cond, "grade"]
            counts = {name: int((g == i).sum()) for i, name in enumerate(C.SEVERITIES)}
            counts["missing"] = int(g.isna().sum())
            labels[cond] = counts
        out["labels"] = labels
        out["coordinate_rows"] = int(len(self.coordinates))
        groups = self.findings_by_kind()
        out["findings"] = {k: len(v) for k, v in groups.items()}
        # Label/coordinate mismatches per condition: which labels a localizer trained on points lacks.
        out["label_coordinate_mismatches"] = {
            kind: dict(sorted(Counter(f.condition for f in groups.get(kind, [])).items()))
            for kind in ("blank_label_with_coordinates", "graded_without_coordinates")
        }
        out["usable"] = self.usable
        return out

    @property
    def usable(self) -> bool:
        """True when at least one split holds a study with images (a non-empty DICOM series folder)."""
        return any(st.series for split in self.splits for st in self.studies(split))

    def _check_split(self, split: str) -> None:
        if split not in SPLITS:
            raise DatasetError(f"unknown split {split!r} (expected 'train' or 'test')")
        if split not in self._studies:
            raise DatasetError(f"{self.root}: dataset has no {split} split")

    def __repr__(self) -> str:
        counts = ", ".join(f"{s}={len(self._studies[s])}" for s in self.splits)
        return f"Dataset({str(self.root)!r}, {counts}, findings={len(self.findings)})"


def read_series_descriptions_empty() -> pd.DataFrame:
    """An empty series-descriptions table with the right dtypes."""
    return pd.DataFrame({"study_id": pd.Series(dtype="int64"), "series_id": pd.Series(dtype="int64"),
                         "series_description": pd.Series(dtype=object)})


def _scan_split(root: Path, split: str, desc: pd.DataFrame, extra_ids: set[int],
                findings: list[Finding]) -> dict[int, Study]:
    """Studies of one split from its image folders and CSV rows (findings for every mismatch)."""
    images = root / f"{split}_images"
    study_dirs = _numeric_dirs(images, split, findings) if images.is_dir() else {}
    listed: dict[int, dict[int, str]] = defaultdict(dict)
    for sid, ser, d in desc.itertuples(index=False):
        listed[int(sid)][int(ser)] = str(d)
    ids = sorted(set(study_dirs) | set(listed) | set(extra_ids))
    known = set(C.SERIES_TYPES)
    studies: dict[int, Study] = {}
    for sid in ids:
        sdir = study_dirs.get(sid)
        if sdir is None:
            findings.append(Finding("study_without_images", f"{split} study {sid} is listed in a CSV but "
                                    f"{images / str(sid)} does not exist", split=split, study_id=sid))
            studies[sid] = Study(study_id=sid, split=split, path=images / str(sid), series=())
            continue
        series_dirs = _numeric_dirs(sdir, split, findings, study_id=sid)
        rows = listed.get(sid, {})
        series: list[SeriesInfo] = []
        n_empty = 0
        for ser in sorted(set(series_dirs) | set(rows)):
            if ser not in series_dirs:
                findings.append(Finding("series_without_images", f"{split} study {sid} series {ser} "
                                        f"({rows[ser]}) has no folder {sdir / str(ser)}",
                                        split=split, study_id=sid, series_id=ser))
                continue
            n_files, has_dicom = probe_series_folder(series_dirs[ser])
            if not has_dicom:
                n_empty += 1
                what = "is empty" if n_files == 0 else f"holds {n_files} file(s), none of them DICOM"
                findings.append(Finding("empty_series_folder", f"{series_dirs[ser]}: series folder {what}; "
                                        "treated as no images", split=split, study_id=sid, series_id=ser,
                                        file=str(series_dirs[ser])))
                continue
            description = rows.get(ser, "")
            if ser not in rows:
                findings.append(Finding("series_without_description", f"{series_dirs[ser]}: no row in "
                                        f"{split}_series_descriptions.csv", split=split, study_id=sid,
                                        series_id=ser))
            elif description not in known:
                findings.append(Finding("unknown_description", f"{split} study {sid} series {ser}: unknown "
                                        f"description {description!r}", split=split, study_id=sid,
                                        series_id=ser))
            series.append(SeriesInfo(study_id=sid, series_id=ser, description=description,
                                     path=series_dirs[ser]))
        if not series:
            # Like a study without a folder: no per-type findings, downstream falls back to priors.
            what = (f"all {n_empty} series folder(s) of {sdir} are empty or hold no DICOM file" if n_empty
                    else f"{sdir} holds no series folder")
            findings.append(Finding("study_without_images", f"{split} study {sid}: {what}", split=split,
                                    study_id=sid, file=str(sdir)))
            studies[sid] = Study(study_id=sid, split=split, path=sdir, series=())
            continue
        types = Counter(s.description for s in series)
        for t in C.SERIES_TYPES:
            if types[t] > 1:
                ids_t = [s.series_id for s in series if s.description == t]
                findings.append(Finding("duplicate_series_type", f"{split} study {sid} has {types[t]} {t} "
                                        f"series {ids_t}", split=split, study_id=sid))
            elif types[t] == 0:
                findings.append(Finding("missing_series_type", f"{split} study {sid} has no {t} series",
                                        split=split, study_id=sid))
        studies[sid] = Study(study_id=sid, split=split, path=sdir, series=tuple(series))
    return studies


def _join_coordinates(coords: pd.DataFrame, desc: pd.DataFrame, findings: list[Finding]) -> pd.DataFrame:
    """Add ``series_description`` to coordinate rows and report rows that do not fit the layout."""
    out = coords.merge(desc, on=["study_id", "series_id"], how="left", validate="many_to_one")
    out["series_description"] = out["series_description"].fillna("").astype(object)
    for r in out.itertuples(index=False):
        expected = C.CONDITION_SERIES[r.condition]
        if r.series_description == "":
            findings.append(Finding("coordinate_unknown_series", f"coordinate {r.condition} {r.level} of study "
                                    f"{r.study_id} is on series {r.series_id}, which has no description row",
                                    split="train", study_id=int(r.study_id), series_id=int(r.series_id)))
        elif r.series_description != expected:
            findings.append(Finding("coordinate_unexpected_series", f"coordinate {r.condition} {r.level} of "
                                    f"study {r.study_id} is on {r.series_description!r} series {r.series_id} "
                                    f"(expected {expected!r})", split="train", study_id=int(r.study_id),
                                    series_id=int(r.series_id)))
    dup = out.duplicated(subset=["study_id", "condition", "level"], keep="first")
    for r in out[dup].itertuples(index=False):
        findings.append(Finding("duplicate_coordinate", f"study {r.study_id} has more than one coordinate row "
                                f"for {r.condition} {r.level}", split="train", study_id=int(r.study_id),
                                series_id=int(r.series_id)))
    counts = out.groupby("study_id").size()
    for sid, n in counts.items():
        if n < len(C.LABEL_COLUMNS):
            findings.append(Finding("few_coordinates", f"study {sid} has {n} coordinate rows "
                                    f"(< {len(C.LABEL_COLUMNS)})", split="train", study_id=int(sid)))
    return out[["study_id", "series_id", "instance_number", "condition", "level", "x", "y",
                "series_description"]].reset_index(drop=True)


def _cross_check_labels(labels: pd.DataFrame, coords: pd.DataFrame, findings: list[Finding]) -> None:
    """One finding per study × condition × level whose grade and coordinate disagree on being present.

    Only studies with a train.csv row are checked (studies without any are already findings).
    """
    wide = labels.sort_values("study_id", kind="stable")
    n = len(wide)
    long = pd.DataFrame({
        "study_id": np.repeat(wide["study_id"].to_numpy(), len(C.LABEL_COLUMNS)),
        "column": np.tile(np.array(C.LABEL_COLUMNS, dtype=object), n),
        "condition": np.tile(np.repeat(np.array(C.CONDITIONS, dtype=object), len(C.LEVELS)), n),
        "level": np.tile(np.tile(np.array(C.LEVELS, dtype=object), len(C.CONDITIONS)), n),
        "grade": wide[list(C.LABEL_COLUMNS)].to_numpy(dtype=np.float64).reshape(-1),
    })
    first = coords.drop_duplicates(subset=["study_id", "condition", "level"], keep="first")
    # A left merge keeps the left order: study_id, then competition column order.
    merged = long.merge(first[["study_id", "condition", "level", "series_id"]],
                        on=["study_id", "condition", "level"], how="left")
    has_point = merged["series_id"].notna().to_numpy()
    blank = merged["grade"].isna().to_numpy()
    for r, point, is_blank in zip(merged.itertuples(index=False), has_point, blank, strict=True):
        if is_blank and point:
            findings.append(Finding("blank_label_with_coordinates", f"study {r.study_id} {r.condition} {r.level}: "
                                    f"train.csv cell {r.column} is blank but series {int(r.series_id)} has a "
                                    "coordinate for it", split="train", study_id=int(r.study_id),
                                    series_id=int(r.series_id), condition=r.condition, level=r.level))
        elif not is_blank and not point:
            findings.append(Finding("graded_without_coordinates", f"study {r.study_id} {r.condition} {r.level}: "
                                    f"graded {C.SEVERITIES[int(r.grade)]!r} in train.csv but has no row in "
                                    "train_label_coordinates.csv", split="train", study_id=int(r.study_id),
                                    condition=r.condition, level=r.level))


# ---------------------------------------------------------------- reading volumes in a batch


def read_study(
    study: Study,
    *,
    skip_errors: bool = True,
    reader: Callable[..., list[Volume]] | None = None,
) -> tuple[dict[int, list[Volume]], list[Finding]]:
    """All stacks of every series of a study: ``{series_id: [Volume, ...]}`` plus findings.

    With ``skip_errors`` a series that raises DicomError is logged, reported as an
    ``unreadable_series`` finding and left out, so a batch goes on; otherwise the error propagates.
    Slices the reader dropped (``Volume.meta["dropped_files"]``) become ``dropped_slice`` findings
    either way: the series itself was read.
    """
    if reader is None:
        from radspine.io.dicom import read_series as reader
    volumes: dict[int, list[Volume]] = {}
    findings: list[Finding] = []
    for s in study.series:
        try:
            vols = reader(s.path, study_id=study.study_id, series_id=s.series_id, description=s.description)
        except DicomError as err:
            if not skip_errors:
                raise
            log.warning("study %d series %d skipped: %s", study.study_id, s.series_id, err)
            findings.append(Finding("unreadable_series", str(err), split=study.split,
                                    study_id=study.study_id, series_id=s.series_id, file=str(s.path)))
            continue
        volumes[s.series_id] = vols
        # Every stack of a series carries the same list; report it once.
        kept = sum(v.shape[0] for v in vols)
        for d in (vols[0].meta.get("dropped_files", []) if vols else []):
            findings.append(Finding("dropped_slice", f"{d['file']}: {d['error']} (slice left out; study "
                                    f"{study.study_id} series {s.series_id} keeps {kept} slice(s))",
                                    split=study.split, study_id=study.study_id, series_id=s.series_id,
                                    file=d["file"]))
    return volumes, findings


def iter_studies(
    studies: Iterable[Study], *, skip_errors: bool = True
) -> Iterator[tuple[Study, dict[int, list[Volume]], list[Finding]]]:
    """:func:`read_study` over many studies, in order; bad series are reported, the rest go on."""
    for st in studies:
        volumes, found = read_study(st, skip_errors=skip_errors)
        yield st, volumes, found
