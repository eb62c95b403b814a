"""Severity drives measurable anatomy; quirks appear when asked; files are byte-identical per seed; CLI."""

from __future__ import annotations

import dataclasses
import hashlib
import json
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy.stats import spearmanr

from radspine.constants import AX_T2, SAG_T1
from radspine.errors import ConfigError, DatasetError
from radspine.io.dataset import Dataset
from radspine.io.dicom import read_series, read_volume
from radspine.synth import QuirkConfig, make_dataset


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file()}


def test_same_seed_gives_byte_identical_files(tmp_path: Path):
    a = make_dataset(tmp_path / "a", 2, 1, seed=7, size=40)
    b = make_dataset(tmp_path / "b", 2, 1, seed=7, size=40)
    c = make_dataset(tmp_path / "c", 2, 1, seed=8, size=40)
    da, db = _digest(tmp_path / "a"), _digest(tmp_path / "b")
    assert len(da) == a["files"] + 10 and da == db
    assert a["train_study_ids"] == b["train_study_ids"] != c["train_study_ids"]
    assert set(_digest(tmp_path / "c").values()).isdisjoint(da.values())  # another seed shares no file


def test_variations_deterministic_and_reader_noise_leaves_images_alone(tmp_path: Path):
    on = QuirkConfig.all_on()
    make_dataset(tmp_path / "a", 3, 0, seed=21, size=32, quirks=on)
    make_dataset(tmp_path / "b", 3, 0, seed=21, size=32, quirks=on)
    da = _digest(tmp_path / "a")
    assert da == _digest(tmp_path / "b")
    # Same seed without reader noise: byte-identical images, only the labels move.
    quiet = dataclasses.replace(on, click_noise_mm=0.0, label_noise=0.0)
    make_dataset(tmp_path / "c", 3, 0, seed=21, size=32, quirks=quiet)
    dc = _digest(tmp_path / "c")
    images = [k for k in da if k.endswith(".dcm")]
    assert images and all(da[k] == dc[k] for k in images)
    assert da["train_label_coordinates.csv"] != dc["train_label_coordinates.csv"]


def test_click_noise_matches_configured_sd(tmp_path: Path):
    """Reader clicks miss by 1-3 mm (per-study sd 0.5-1.5 x click_noise_mm), measured against exact clicks."""
    exact = dataclasses.replace(QuirkConfig.none(), click_noise_mm=0.0)
    noisy = dataclasses.replace(QuirkConfig.none(), click_noise_mm=2.0)
    make_dataset(tmp_path / "exact", 6, 0, seed=4, size=32, quirks=exact)
    make_dataset(tmp_path / "noisy", 6, 0, seed=4, size=32, quirks=noisy)
    key = ["study_id", "condition", "level"]
    a = pd.read_csv(tmp_path / "exact" / "train_label_coordinates.csv").set_index(key).sort_index()
    b = pd.read_csv(tmp_path / "noisy" / "train_label_coordinates.csv").set_index(key).sort_index()
    assert (a.series_id == b.series_id).all() and (a.instance_number == b.instance_number).all()
    ds = Dataset.open(tmp_path / "exact")
    spacing = {}
    for st in ds.studies("train"):
        for s in st.series:
            spacing[s.series_id] = read_series(s.path)[0].pixel_spacing
    col_mm = np.array([spacing[i][1] for i in a.series_id])
    row_mm = np.array([spacing[i][0] for i in a.series_id])
    dx, dy = (b.x - a.x).to_numpy() * col_mm, (b.y - a.y).to_numpy() * row_mm
    rms = float(np.sqrt(np.mean(np.concatenate([dx, dy]) ** 2)))
    # E[sd^2] = 4 * E[U(0.5, 1.5)^2] = 4.33 mm^2 -> RMS ~2.1 mm; 6 studies x 50 draws.
    assert 1.5 < rms < 2.8
    per_study = pd.Series(np.hypot(dx, dy) / np.sqrt(2), index=a.index).groupby(level=0).apply(
        lambda v: float(np.sqrt(np.mean(v**2))))
    assert per_study.between(0.7, 3.6).all() and per_study.max() - per_study.min() > 0.3


def test_worker_processes_write_the_same_bytes(tmp_path: Path):
    make_dataset(tmp_path / "serial", 2, 0, seed=13, size=32, workers=1)
    make_dataset(tmp_path / "procs", 2, 0, seed=13, size=32, workers=2)
    assert _digest(tmp_path / "serial") == _digest(tmp_path / "procs")


def _canal_run_mm(img: np.ndarray, x: float, y: float, col_mm: float) -> float:
    """Length (mm) of the bright (CSF) run along the image row through a canal label point."""
    row = img[int(round(y))]
    thr = 0.6 * np.percentile(img, 99.5)
    x = int(round(x))
    if row[x] <= thr:
        return 0.0
    a = b = x
    while a > 0 and row[a - 1] > thr:
        a -= 1
    while b < len(row) - 1 and row[b + 1] > thr:
        b += 1
    return (b - a + 1) * col_mm


@pytest.mark.parametrize("varied", [False, True], ids=["clean", "varied"])
def test_measured_canal_ap_falls_with_latent_canal_severity(tmp_path: Path, varied: bool):
    root = tmp_path / "canal"
    # Varied: every anatomical/acquisition variation on, thick slices (partial volume), exact clicks.
    q = dataclasses.replace(QuirkConfig.all_on(), thin_slices=0.0, click_noise_mm=0.0, label_noise=0.0) \
        if varied else QuirkConfig.none()
    make_dataset(root, 12, 0, seed=5, size=128, quirks=q)
    ds = Dataset.open(root)
    truth = pd.read_csv(root / "synth_truth.csv").set_index(["study_id", "condition", "level"])
    coords = ds.coordinates[ds.coordinates.condition == "spinal_canal_stenosis"]
    vols, sev, measured = {}, [], []
    for r in coords.itertuples():
        if r.series_id not in vols:
            vols[r.series_id] = read_volume(ds.study(r.study_id, "train").path / str(r.series_id))
        v = vols[r.series_id]
        measured.append(_canal_run_mm(v.pixels[v.slice_index(r.instance_number)], r.x, r.y, v.pixel_spacing[1]))
        sev.append(truth.loc[(r.study_id, "spinal_canal_stenosis", r.level), "severity"])
    sev, measured = np.array(sev), np.array(measured)
    assert spearmanr(sev, measured).statistic < -0.5
    means = [measured[(sev >= lo) & (sev < hi)].mean() for lo, hi in ((0, 1 / 3), (1 / 3, 2 / 3), (2 / 3, 1.01))]
    assert means[0] > means[1] + 2.0 > means[2] + 2.0  # mm: normal > moderate > severe
    # Not trivially readable: true canal size varies a lot between patients at the same grade.
    lm = pd.read_csv(root / "synth_landmarks.csv")
    normal = lm.merge(truth.reset_index().query("condition == 'spinal_canal_stenosis' and grade == 0"),
                      on=["study_id", "level"])
    assert normal.canal_ap_mm.max() - normal.canal_ap_mm.min() > 4.0


def test_quirks_missing_axial_second_t1_reversed_tags_blanks(tmp_path: Path):
    import pydicom

    q = QuirkConfig(blank_labels=20.0, missing_coords=1.0, no_axial=1.0, second_sag_t1=1.0,
                    reversed_instances=1.0, missing_tag=1.0)
    root = tmp_path / "q"
    make_dataset(root, 4, 0, seed=2, size=32, quirks=q)
    ds = Dataset.open(root)
    kinds = {f.kind for f in ds.findings}
    assert {"missing_series_type", "few_coordinates"} <= kinds
    assert pd.read_csv(root / "train.csv").isna().any().any()
    for st in ds.studies("train"):
        assert not st.series_of_type(AX_T2) and len(st.series_of_type(SAG_T1)) == 2
        for s in st.series:
            v = read_series(s.path)[0]
            assert np.all(np.diff(v.instance_numbers) < 0)  # InstanceNumber runs against position
            f = pydicom.dcmread(next(s.path.glob("*.dcm")))
            assert sum(t in f for t in ("SpacingBetweenSlices", "SliceThickness", "Manufacturer",
                                        "MagneticFieldStrength", "PatientPosition")) == 4
    assert len(ds.coordinates) < 4 * 15


def test_quirks_split_and_repeated_axial_series(tmp_path: Path):
    root = tmp_path / "ax"
    make_dataset(root, 3, 0, seed=4, size=32, quirks=QuirkConfig.none().__class__(
        **{**QuirkConfig.none().__dict__, "axial_split": 1.0, "two_axial": 1.0}))
    ds = Dataset.open(root)
    c = ds.coordinates
    for st in ds.studies("train"):
        axial = st.series_of_type(AX_T2)
        assert 3 <= len(axial) <= 4
        sub = c[(c.study_id == st.study_id) & c.condition.str.contains("subarticular")]
        assert len(sub) == 10 and sub.series_id.nunique() >= 2
        # Each level's left/right points come from one series.
        assert (sub.groupby("level").series_id.nunique() == 1).all()


def test_bad_arguments_raise_radspine_errors(tmp_path: Path):
    with pytest.raises(ConfigError, match="size"):
        make_dataset(tmp_path / "x", 1, size=4)
    with pytest.raises(ConfigError, match="at least one study"):
        make_dataset(tmp_path / "x", 0, 0)
    (tmp_path / "full").mkdir()
    (tmp_path / "full" / "keep.txt").write_text("x")
    with pytest.raises(DatasetError, match="not empty"):
        make_dataset(tmp_path / "full", 1, size=32)


def test_cli_writes_dataset_and_reports_bad_quirk(tmp_path: Path):
    from typer.testing import CliRunner

    from radspine.cli import app

    runner = CliRunner()
    out = tmp_path / "cli"
    res = runner.invoke(app, ["synth", "--out", str(out), "--train-studies", "1", "--test-studies", "1",
                              "--size", "32", "--seed", "3", "--no-quirks"])
    assert res.exit_code == 0, res.output
    summary = json.loads(res.stdout.strip().splitlines()[-1])
    assert summary["coordinate_rows"] == 25 and (out / "test_solution.csv").is_file()
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "s"), "--train-studies", "1", "--size", "32",
                              "--no-quirks", "--quirk", "scoliosis=1", "--quirk", "click_noise_mm=3"])
    assert res.exit_code == 0, res.output
    assert pd.read_csv(tmp_path / "s" / "synth_variations.csv").scoliosis_mm.abs().min() >= 5.0
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "z"), "--train-studies", "1",
                              "--quirk", "click_noise_mm=11"])
    assert res.exit_code != 0 and "click_noise_mm" in res.output
    res = runner.invoke(app, ["synth", "--out", str(tmp_path / "y"), "--train-studies", "1", "--quirk", "nope=1"])
    assert res.exit_code == 2 and "--quirk 'nope=1'" in res.output
