"""Test helper: a tiny competition-layout dataset folder with hand-made CSVs (no radspine code)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
from dicom_writer import ramp, write_series

from radspine import constants as C

SERIES = {  # study → {series_id: description}
    101: {1: "Sagittal T1", 2: "Sagittal T2/STIR", 3: "Axial T2"},
    102: {11: "Sagittal T1", 12: "Sagittal T2/STIR", 13: "Axial T2", 14: "Axial T2"},
}


def write_dataset(root: Path, *, with_dicom: bool = True, seed: int = 0) -> Path:
    """Two clean train studies (102 with two axial series) and one test study; returns root.

    Each series folder holds two tiny slices; ``with_dicom=False`` leaves every series folder empty
    (a partial download: no study has images). Study 101's spinal_canal_stenosis_l5_s1 cell is blank
    while its coordinate row is kept (as 35 real cells are).
    """
    rng = np.random.default_rng(seed)
    root.mkdir(parents=True, exist_ok=True)
    grades = list(C.SEVERITIES)
    rows = []
    for sid in SERIES:
        row = {"study_id": sid}
        for col in C.LABEL_COLUMNS:
            row[col] = grades[int(rng.integers(0, 3))]
        rows.append(row)
    rows[0][C.LABEL_COLUMNS[4]] = ""  # one blank grade
    pd.DataFrame(rows).to_csv(root / "train.csv", index=False)

    desc = [(sid, ser, d) for sid, series in SERIES.items() for ser, d in series.items()]
    pd.DataFrame(desc, columns=["study_id", "series_id", "series_description"]).to_csv(
        root / "train_series_descriptions.csv", index=False)
    coords = []
    for sid, series in SERIES.items():
        by_type = {d: ser for ser, d in series.items()}  # last axial wins for 102
        for cond in C.CONDITIONS:
            for lv in C.LEVELS:
                ser = by_type[C.CONDITION_SERIES[cond]]
                coords.append((sid, ser, 1 + C.LEVELS.index(lv), C.CONDITION_NAMES[cond], C.LEVEL_NAMES[lv],
                               float(rng.uniform(0, 8)), float(rng.uniform(0, 8))))
    pd.DataFrame(coords, columns=["study_id", "series_id", "instance_number", "condition", "level", "x", "y"]).to_csv(
        root / "train_label_coordinates.csv", index=False)
    pd.DataFrame([(900, 91, "Sagittal T1"), (900, 92, "Sagittal T2/STIR"), (900, 93, "Axial T2")],
                 columns=["study_id", "series_id", "series_description"]).to_csv(
        root / "test_series_descriptions.csv", index=False)
    sub = [(rid, 1 / 3, 1 / 3, 1 / 3) for rid in C.study_row_ids(900)]
    pd.DataFrame(sub, columns=["row_id", *C.SEVERITY_COLUMNS]).to_csv(root / "sample_submission.csv", index=False)

    for split, studies in (("train", SERIES), ("test", {900: {91: "", 92: "", 93: ""}})):
        for sid, series in studies.items():
            for ser in series:
                folder = root / f"{split}_images" / str(sid) / str(ser)
                folder.mkdir(parents=True, exist_ok=True)
                if with_dicom:
                    write_series(folder, ramp(2, 8, 8, seed=ser), origin=(0, 0, 0), row_cosine=(1, 0, 0),
                                 col_cosine=(0, 1, 0))
    return root


def edit_csv(path: Path, fn) -> None:
    """Rewrite a CSV through ``fn(DataFrame) -> DataFrame`` (strings, blanks kept)."""
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    fn(df).to_csv(path, index=False)
