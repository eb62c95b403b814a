"""Test helper: a messy "hospital export" of DICOM files re-written from a tiny synth phantom.

Two studies, six diagnostic series plus a 3-plane scout, random file names (no extension) in nested
folders with series mixed, vendor-style descriptions, one series with no description at all (typed by
TR/TE), and two non-DICOM files. ``truth`` maps each series to the type radspine should guess.
"""

from __future__ import annotations

import copy
from pathlib import Path

import numpy as np
import pandas as pd
import pydicom
from pydicom.uid import generate_uid

from radspine import constants as C

# (study index, Kaggle type) → (SeriesDescription, ProtocolName, extra tags)
DESCRIPTIONS: dict[tuple[int, str], tuple[str, str, dict]] = {
    (0, C.SAG_T1): ("t1_tse_sag", "t1_tse_sag", {}),
    (0, C.SAG_T2): ("", "", {"RepetitionTime": "3500", "EchoTime": "95"}),  # empty description: TR/TE say T2
    (0, C.AX_T2): ("AX T2 FSE", "", {}),
    (1, C.SAG_T1): ("T1 FSE SAG", "", {}),
    (1, C.SAG_T2): ("SAG T2 TIRM", "t2_tirm_sag", {"InversionTime": "150"}),
    (1, C.AX_T2): ("T2_TRA", "", {}),
}
SCOUT_NUMBER = 99


def build_export(root: Path, *, integer_folders: bool = False, seed: int = 3) -> dict:
    """Write the export under ``root``; return {'root', 'truth': DataFrame, 'study_uids': [...], 'folders': [...]}.

    ``truth`` has one row per series: study index, study_uid, series_uid, series_number, expected type
    ('' for the scout). Study folders are ``PATIENT_A``/``PATIENT_B``, or ``4242``/``777`` if ``integer_folders``.
    """
    from radspine.synth import QuirkConfig, make_dataset

    src = root.parent / f"{root.name}_synth"
    make_dataset(src, 0, 2, seed=seed, size=64, quirks=QuirkConfig.none())
    desc = pd.read_csv(src / "test_series_descriptions.csv")
    rng = np.random.default_rng(seed)
    folders = ["4242", "777"] if integer_folders else ["PATIENT_A", "PATIENT_B"]
    rows, study_uids = [], []
    for i, sid in enumerate(sorted(desc["study_id"].unique())):
        study_dir = root / folders[i] / "DICOM"
        subdirs = [study_dir / f"{rng.integers(10**7):08d}" / f"{rng.integers(10**7):08d}" for _ in range(2)]
        one_of_each: list[pydicom.Dataset] = []
        for ser, kind in desc[desc.study_id == sid][["series_id", "series_description"]].itertuples(index=False):
            text, protocol, extra = DESCRIPTIONS[(i, kind)]
            files = sorted((src / "test_images" / str(sid) / str(ser)).glob("*.dcm"))
            for f in files:
                ds = pydicom.dcmread(f)
                ds.SeriesDescription = text
                ds.ProtocolName = protocol
                for k, v in extra.items():
                    setattr(ds, k, v)
                # Series mixed across folders; names are random, no extension (PACS style).
                out = subdirs[int(rng.integers(2))] / f"IM{rng.integers(10**9):09d}"
                out.parent.mkdir(parents=True, exist_ok=True)
                ds.save_as(out, enforce_file_format=True)
            ds0 = pydicom.dcmread(files[len(files) // 2])
            one_of_each.append(ds0)
            rows.append({"study": i, "study_uid": str(ds0.StudyInstanceUID), "series_uid": str(ds0.SeriesInstanceUID),
                         "series_number": int(ds0.SeriesNumber), "expected": kind, "files": len(files)})
        study_uids.append(str(one_of_each[0].StudyInstanceUID))
        # A 3-plane scout: sagittal, axial and coronal slices in one series with an uninformative name.
        scout_uid = generate_uid(entropy_srcs=["scout", str(sid)])
        sag = next(d for d in one_of_each if abs(float(d.ImageOrientationPatient[1])) > 0.9)
        ax = next(d for d in one_of_each if abs(float(d.ImageOrientationPatient[0])) > 0.9)
        cor = copy.deepcopy(ax)
        cor.ImageOrientationPatient = ["1", "0", "0", "0", "0", "-1"]
        for k, d in enumerate((sag, ax, cor)):
            d = copy.deepcopy(d)
            d.SeriesInstanceUID = scout_uid
            d.SOPInstanceUID = generate_uid(entropy_srcs=["scout", str(sid), str(k)])
            d.file_meta.MediaStorageSOPInstanceUID = d.SOPInstanceUID
            d.SeriesNumber = SCOUT_NUMBER
            d.InstanceNumber = k + 1
            d.SeriesDescription = "MSK scan"
            d.ProtocolName = ""
            d.save_as(study_dir / f"scout_{k}", enforce_file_format=True)
        rows.append({"study": i, "study_uid": study_uids[-1], "series_uid": scout_uid,
                     "series_number": SCOUT_NUMBER, "expected": "", "files": 3})
    (root / "README.txt").write_text("Exported by PACS viewer 3.1\n")
    (root / folders[0] / "DICOM" / "thumb.jpg").write_bytes(b"\xff\xd8\xff\xe0 not really a jpeg")
    return {"root": root, "truth": pd.DataFrame(rows), "study_uids": study_uids, "folders": folders}
