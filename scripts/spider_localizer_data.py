"""SPIDER sagittal slices with masks → localizer training data in the Kaggle layout (canal points per level).

    .venv/bin/python scripts/spider_localizer_data.py --src SPIDER_T2SPACE_DIR --out $TMPDIR/spider_loc [--holdout 8]

``--src`` is the ``Data/t2_SPACE`` folder of github:istiak769/Lumbar-Spine-MRI-Segementation (853 real sagittal
T2 SPACE slices of 41 SPIDER patients, 8-bit PNG, with masks 29 = disc, 76 = vertebra, 150 = canal; SPIDER is
CC BY 4.0: van der Graaf et al., "Lumbar spine segmentation in MR images: a dataset and a public benchmark",
Scientific Data 2024), or a bare git copy of that repository (read with ``git archive``).

Per patient: the slices (consecutive sagittal slices around the midline) become one "Sagittal T2/STIR" DICOM
series; :func:`radspine.localize.seglabels.mask_levels` names the discs from the sacrum up and puts a canal
point behind each; the PNGs carry no spacing, so the in-plane pixel size comes from the anatomy
(``MaskLevels.pixel_mm``) and the slice spacing is ``--slice-mm`` (SPIDER's T2 SPACE is near-isotropic,
~0.9 mm). ``--holdout`` patients (drawn with ``--seed``) go to ``OUT/holdout`` (never trained on: the real
validation set of the shipped localizer), the rest to ``OUT/train``; both are Kaggle-layout roots with
``train_label_coordinates.csv`` (canal rows only) that ``radspine train-localizer`` / ``localize --split train``
read. ``OUT/manifest.json`` lists each patient's split, pixel size and what was estimated.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import tarfile
import tempfile
from collections import defaultdict
from pathlib import Path

import numpy as np

DISC, VERTEBRA, CANAL = 29, 76, 150
STUDY_BASE = 7_000_000  # pseudo study ids: STUDY_BASE + SPIDER patient number
SOURCE = ("SPIDER lumbar spine MRI (CC BY 4.0; van der Graaf et al., Sci Data 2024), T2 SPACE sagittal slices "
          "and masks as published in github:istiak769/Lumbar-Spine-MRI-Segementation")


def read_pngs(src: Path) -> dict[int, list[tuple[int, Path, Path]]]:
    """Patient number → [(slice number, image path, mask path)] sorted by slice number."""
    by: dict[int, list[tuple[int, Path, Path]]] = defaultdict(list)
    for img in sorted((src / "images").glob("*.png")):
        m = re.match(r"(\d+)_t2_SPACE_slice(\d+)\.png$", img.name)
        mask = src / "masks" / img.name
        if m and mask.is_file():
            by[int(m.group(1))].append((int(m.group(2)), img, mask))
    return {p: sorted(v) for p, v in sorted(by.items())}


def write_series(folder: Path, pixels: np.ndarray, pixel_mm: float, slice_mm: float, study_id: int,
                 series_id: int) -> None:  # fmt: skip
    """One sagittal series: columns run posterior (+y), rows to the feet (−z), slice k at x = (k − mid)·slice_mm."""
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, MRImageStorage, generate_uid

    folder.mkdir(parents=True, exist_ok=True)
    uid = lambda *p: str(generate_uid(entropy_srcs=["radspine-spider", *map(str, p)]))  # noqa: E731
    n = len(pixels)
    for k in range(n):
        meta = FileMetaDataset()
        meta.MediaStorageSOPClassUID = MRImageStorage
        meta.MediaStorageSOPInstanceUID = uid(study_id, series_id, k)
        meta.TransferSyntaxUID = ExplicitVRLittleEndian
        ds = Dataset()
        ds.file_meta = meta
        ds.SOPClassUID, ds.SOPInstanceUID = MRImageStorage, meta.MediaStorageSOPInstanceUID
        ds.Modality, ds.PatientID = "MR", str(study_id)
        ds.StudyInstanceUID, ds.SeriesInstanceUID = uid(study_id), uid(study_id, series_id)
        ds.FrameOfReferenceUID = uid(study_id, "frame")
        ds.SeriesDescription = "T2 SPACE SAG (SPIDER)"
        ds.InstanceNumber = k + 1
        ds.ImagePositionPatient = [f"{(k - (n - 1) / 2) * slice_mm:.4f}", "0", "0"]
        ds.ImageOrientationPatient = ["0", "1", "0", "0", "0", "-1"]
        ds.PixelSpacing = [f"{pixel_mm:.5f}", f"{pixel_mm:.5f}"]
        ds.SliceThickness = f"{slice_mm:.3f}"
        ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
        ds.Rows, ds.Columns = pixels.shape[1:]
        ds.BitsAllocated, ds.BitsStored, ds.HighBit, ds.PixelRepresentation = 16, 12, 11, 0
        ds.PixelData = (pixels[k].astype(np.uint16) * 16).astype("<u2").tobytes()
        ds.save_as(folder / f"{k + 1}.dcm", enforce_file_format=True)


def convert(src: Path, out: Path, holdout: int, seed: int, slice_mm: float) -> dict:
    """Write ``out/train`` and ``out/holdout`` (Kaggle layout) and ``out/manifest.json``; returns the manifest."""
    import pandas as pd
    from PIL import Image

    from radspine.constants import CONDITION_NAMES, LEVEL_NAMES
    from radspine.localize.seglabels import mask_levels

    patients = read_pngs(src)
    if not patients:
        sys.exit(f"error: {src}: no <patient>_t2_SPACE_slice<k>.png images with masks under images/ and masks/")
    ids = sorted(patients)
    held = set(int(p) for p in np.random.default_rng(seed).permutation(ids)[:holdout])
    rows: dict[str, list] = {"train": [], "holdout": []}
    series_rows: dict[str, list] = {"train": [], "holdout": []}
    manifest = {"source": SOURCE, "licence": "CC BY 4.0", "slice_mm": slice_mm, "seed": seed, "patients": {}}
    for pid in ids:
        sl = patients[pid]
        imgs = np.stack([np.asarray(Image.open(i).convert("L")) for _, i, _ in sl])
        masks = np.stack([np.asarray(Image.open(m)) for _, _, m in sl])
        if len({a.shape for a in imgs}) != 1:
            print(f"patient {pid}: slices of different sizes, skipped", file=sys.stderr)
            continue
        ml = mask_levels(masks, DISC, CANAL)
        split = "holdout" if pid in held else "train"
        study_id, series_id = STUDY_BASE + pid, (STUDY_BASE + pid) * 10 + 2
        px = ml.pixel_mm()
        write_series(out / split / "train_images" / str(study_id) / str(series_id), imgs, px, slice_mm, study_id,
                     series_id)  # fmt: skip
        series_rows[split].append((study_id, series_id, "Sagittal T2/STIR"))
        for lv, (r, c) in ml.canal.items():
            rows[split].append((study_id, series_id, ml.mid + 1, CONDITION_NAMES["spinal_canal_stenosis"],
                                LEVEL_NAMES[lv], round(c, 2), round(r, 2)))  # fmt: skip
        manifest["patients"][str(pid)] = {"study_id": study_id, "split": split, "slices": len(sl),
                                          "first_slice": sl[0][0], "midline_instance": ml.mid + 1,
                                          "pixel_mm": round(px, 4), "gap_px": round(ml.gap_px, 1),
                                          "disc_width_px": round(ml.width_px, 1), "discs_near_midline": ml.n_discs,
                                          "levels": sorted(ml.canal), "problems": ml.problems}  # fmt: skip
    for split in ("train", "holdout"):
        root = out / split
        root.mkdir(parents=True, exist_ok=True)
        pd.DataFrame(series_rows[split], columns=["study_id", "series_id", "series_description"]).to_csv(
            root / "train_series_descriptions.csv", index=False)
        pd.DataFrame(rows[split], columns=["study_id", "series_id", "instance_number", "condition", "level", "x",
                                           "y"]).to_csv(root / "train_label_coordinates.csv", index=False)  # fmt: skip
    manifest["counts"] = {s: {"studies": len(series_rows[s]), "points": len(rows[s])} for s in rows}
    (out / "manifest.json").write_text(json.dumps(manifest, indent=1))
    return manifest


def source_dir(src: Path, tmp: Path) -> Path:
    """``src`` itself when it holds images/ and masks/, else its Data/t2_SPACE extracted from a bare git copy."""
    if (src / "images").is_dir():
        return src
    if (src / "Data" / "t2_SPACE" / "images").is_dir():
        return src / "Data" / "t2_SPACE"
    if (src / "HEAD").is_file():
        tar = subprocess.run(["git", f"--git-dir={src}", "archive", "HEAD", "Data/t2_SPACE"], check=True,
                             capture_output=True).stdout  # fmt: skip
        import io

        tarfile.open(fileobj=io.BytesIO(tar)).extractall(tmp, filter="data")
        return tmp / "Data" / "t2_SPACE"
    sys.exit(f"error: {src}: neither a t2_SPACE folder (images/, masks/) nor a git copy of the SPIDER PNG repository")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--src", type=Path, required=True)
    ap.add_argument("--out", type=Path, required=True)
    ap.add_argument("--holdout", type=int, default=8)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--slice-mm", type=float, default=0.9)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        man = convert(source_dir(args.src, Path(tmp)), args.out, args.holdout, args.seed, args.slice_mm)
    print(json.dumps(man["counts"]))


if __name__ == "__main__":
    main()
