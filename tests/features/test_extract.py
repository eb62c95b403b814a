"""`radspine extract-features` end to end on the shared tiny phantom (6 train studies, 96 px).

Kept cheap: a light radiomics params file (Original image, firstorder + GLCM) everywhere, and a tiny
CNN (8-channel resnet10t at 32 px, 1 epoch) only where the CNN is the point.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from radspine.errors import RadspineError
from radspine.features.config import FeaturesConfig, RadiomicsSettings
from radspine.features.embeddings import EmbeddingConfig
from radspine.features.extract import extract_features
from radspine.patches import PatchConfig

LIGHT_PARAMS = """imageType:
  Original: {}
featureClass:
  firstorder:
  glcm:
setting:
  binWidth: 0.05
  minimumROIDimensions: 2
  minimumROISize: 16
"""
TINY_CNN = EmbeddingConfig(
    backbone="resnet10t",
    backbone_kwargs={"channels": [8, 16, 32, 64], "stem_width": 8},
    image_size=32,
    epochs=1,
    batch_size=32,
    pca_dims=4,
    append_proba=True,
    device="cpu",
    num_threads=1,
)


@pytest.fixture(scope="module")
def light_params(tmp_path_factory: pytest.TempPathFactory) -> Path:
    p = tmp_path_factory.mktemp("params") / "light.yaml"
    p.write_text(LIGHT_PARAMS)
    return p


@pytest.fixture(scope="module")
def fast_cfg(light_params: Path) -> FeaturesConfig:
    """Light radiomics, no CNN: what the parallel / resume / damage tests need."""
    rad = RadiomicsSettings(sagittal=str(light_params), axial=str(light_params))
    # Exactly the labeled points (no training jitter), so train and test rows can be compared.
    return FeaturesConfig(radiomics=rad, cnn_enabled=False, patches=PatchConfig())


@pytest.fixture(scope="module")
def cnn_cfg(fast_cfg: FeaturesConfig) -> FeaturesConfig:
    return fast_cfg.model_copy(update={"cnn_enabled": True, "cnn_folds": 2, "embeddings": TINY_CNN})


@pytest.fixture(scope="module")
def serial_run(phantom_root: Path, fast_cfg: FeaturesConfig, tmp_path_factory: pytest.TempPathFactory):
    out = tmp_path_factory.mktemp("serial")
    meta = extract_features(phantom_root, "train", out, cfg=fast_cfg, workers=1)
    return out, pd.read_parquet(out / "features.parquet"), meta


@pytest.fixture(scope="module")
def cnn_run(phantom_root: Path, cnn_cfg: FeaturesConfig, tmp_path_factory: pytest.TempPathFactory):
    import torch

    torch.set_num_threads(1)
    out = tmp_path_factory.mktemp("cnn")
    meta = extract_features(phantom_root, "train", out, cfg=cnn_cfg, workers=1)
    return out, pd.read_parquet(out / "features.parquet"), meta


def _link_dataset(src: Path, dst: Path, *, test_studies: list[int] = (), copy_train: bool = False) -> Path:
    """A dataset beside ``src``: CSVs copied, train images linked (or copied, to damage them), and
    ``test_studies`` of the train split re-exposed as a test split (so their label points can be used as
    a test points CSV and compared with the train rows)."""
    dst.mkdir(parents=True)
    for f in src.glob("*.csv"):
        shutil.copy2(f, dst / f.name)
    if copy_train:
        shutil.copytree(src / "train_images", dst / "train_images")
    else:
        (dst / "train_images").symlink_to(src / "train_images")
    (dst / "test_images").mkdir()
    sd = pd.read_csv(src / "train_series_descriptions.csv")
    for s in test_studies:
        (dst / "test_images" / str(s)).symlink_to(src / "train_images" / str(s))
    sd[sd["study_id"].isin(test_studies)].to_csv(dst / "test_series_descriptions.csv", index=False)
    return dst


def _train_ids(root: Path) -> list[int]:
    return sorted(pd.read_csv(root / "train_series_descriptions.csv")["study_id"].unique().tolist())


# --------------------------------------------------------------------------------------------- the table
def test_rows_keys_and_series_columns(serial_run, phantom_root: Path) -> None:
    from radspine.constants import CONDITIONS, LEVELS, row_id

    _, table, meta = serial_run
    ids = _train_ids(phantom_root)
    assert len(table) == 25 * len(ids) == meta["n_rows"]
    expected = [row_id(s, c, lv) for s in ids for c in CONDITIONS for lv in LEVELS]
    assert sorted(table["row_id"]) == sorted(expected)
    assert table.groupby("study_id").size().eq(25).all()
    assert set(table["group"]) == {"spinal", "foraminal", "subarticular"}
    rad = {s: [c for c in table.columns if c.startswith(f"rad_{s}_")] for s in ("sagt1", "sagt2", "axt2")}
    assert all(rad.values()), {k: len(v) for k, v in rad.items()}
    assert all("_original_" in c for v in rad.values() for c in v)
    # Structure-mask radiomics for the canal and the recess; none for the foramen (they earned nothing on real CV).
    rois = {c.split("_")[2] for c in table.columns if c.startswith("rad_") and c.split("_")[2] in ("sac", "foramen", "recess")}
    assert rois == {"sac", "recess"}
    g = table.groupby("group")
    has = {grp: {s: bool(sub[rad[s]].notna().any(axis=1).all()) for s in rad} for grp, sub in g}
    # spinal: sagittal T2 + axial T2; foraminal: sagittal T1; subarticular: axial T2 — nothing else.
    assert has["spinal"] == {"sagt1": False, "sagt2": True, "axt2": True}
    assert has["foraminal"] == {"sagt1": True, "sagt2": False, "axt2": False}
    assert has["subarticular"] == {"sagt1": False, "sagt2": False, "axt2": True}
    assert (table["has_point"] == 1).all() and (table["has_axt2"] == 1).all()
    # Points are real world coordinates: each study's levels are stacked cranio-caudally (LPS z falls).
    canal = table[table["condition"] == "spinal_canal_stenosis"].sort_values(["study_id", "geo_level_idx"])
    assert (canal.groupby("study_id")["pt_z"].diff().dropna() < 0).all()
    gaps = canal["geo_gap_next_mm"].dropna()
    assert len(gaps) == 4 * len(ids) and gaps.between(15, 60).all()


def test_meta_json(serial_run, fast_cfg: FeaturesConfig) -> None:
    from radspine.features.config import config_hash

    out, table, meta = serial_run
    on_disk = json.loads((out / "meta.json").read_text())
    assert on_disk == meta
    assert meta["config_hash"] == config_hash(fast_cfg)
    for pkg in ("radspine", "pyradiomics-bhklab", "timm", "torch"):
        assert meta["versions"][pkg] not in ("", "absent")
    assert meta["n_studies"] == 6 and meta["n_rows"] == 150
    assert meta["n_failed_studies"] == 0 and meta["failures"] == {}
    assert meta["n_extracted"] == 6 and meta["n_cached"] == 0
    assert meta["points"] == "labels" and len(meta["points_hash"]) == 12
    from radspine.features.schema import feature_columns

    assert meta["n_features"] == len(feature_columns(table)) > 0
    assert any(c.startswith("mor_") for c in feature_columns(table))
    # Nothing half-written is left behind (outputs go through temp names + rename).
    assert not [p for p in out.rglob("*") if p.name.endswith(".tmp")]
    assert json.loads((out / "features_config.json").read_text()) == fast_cfg.model_dump(mode="json")


# -------------------------------------------------------------------------------------------- parallel
def test_processes_and_dask_match_serial(serial_run, phantom_root: Path, fast_cfg: FeaturesConfig, tmp_path: Path) -> None:
    _, table, _ = serial_run
    extract_features(phantom_root, "train", tmp_path / "proc", cfg=fast_cfg, workers=2)
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "proc" / "features.parquet"), table)
    extract_features(phantom_root, "train", tmp_path / "dask", cfg=fast_cfg, workers=2, scheduler="local")
    pd.testing.assert_frame_equal(pd.read_parquet(tmp_path / "dask" / "features.parquet"), table)


# ----------------------------------------------------------------------------------- resume / overwrite
def test_killed_cli_run_resumes_from_cache(serial_run, phantom_root: Path, light_params: Path, tmp_path: Path) -> None:
    _, table, _ = serial_run
    cfg_yaml = tmp_path / "cfg.yaml"
    cfg_yaml.write_text(
        f"features:\n  cnn_enabled: false\n  patches:\n    jitter_sigma_mm: 0.0\n"
        f"  radiomics:\n    sagittal: {light_params}\n    axial: {light_params}\n"
    )
    out = tmp_path / "work"
    cmd = [sys.executable, "-c", "from radspine.cli import main; main()", "extract-features", "--data", str(phantom_root), "--split",
           "train", "--out", str(out), "--config", str(cfg_yaml), "--workers", "1", "--quiet"]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    proc = subprocess.Popen(cmd, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(out.glob("cache/*/*/*.npz")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.02)
    assert proc.poll() is None, f"run ended before it could be interrupted: {proc.stderr.read()[-500:]}"
    proc.send_signal(signal.SIGKILL)
    proc.wait(30)
    assert not (out / "features.parquet").exists()
    cached = {p: p.stat().st_mtime_ns for p in out.glob("cache/*/*/*.npz")}
    assert 1 <= len(cached) < 6

    from typer.testing import CliRunner

    from radspine.cli import app

    res = CliRunner().invoke(app, cmd[3:])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_cached"] == len(cached) and meta["n_extracted"] == 6 - len(cached)
    assert {p: p.stat().st_mtime_ns for p in cached} == cached  # finished studies were not recomputed
    pd.testing.assert_frame_equal(pd.read_parquet(out / "features.parquet"), table)

    # An existing output is refused without --overwrite (one line, exit 2) and left untouched ...
    before = (out / "features.parquet").stat().st_mtime_ns
    res = CliRunner().invoke(app, cmd[3:])
    assert res.exit_code == 2 and "exists; pass --overwrite" in res.output
    assert (out / "features.parquet").stat().st_mtime_ns == before
    # ... and --overwrite recomputes every study (fresh cache) to the same table.
    res = CliRunner().invoke(app, [*cmd[3:], "--overwrite"])
    assert res.exit_code == 0, res.output
    meta = json.loads((out / "meta.json").read_text())
    assert meta["n_cached"] == 0 and meta["n_extracted"] == 6
    pd.testing.assert_frame_equal(pd.read_parquet(out / "features.parquet"), table)


# --------------------------------------------------------------------------------------- damaged input
def test_missing_axial_and_corrupt_series(
    phantom_root: Path, fast_cfg: FeaturesConfig, serial_run, tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    import radspine.features.study as ex

    _, clean, _ = serial_run
    root = _link_dataset(phantom_root, tmp_path / "data", copy_train=True)
    ids = _train_ids(root)
    no_ax, corrupt = ids[0], ids[1]
    sd = pd.read_csv(root / "train_series_descriptions.csv")
    ax = sd[(sd["study_id"] == no_ax) & (sd["series_description"] == "Axial T2")]
    for sid in ax["series_id"]:
        shutil.rmtree(root / "train_images" / str(no_ax) / str(sid))
    sd.drop(ax.index).to_csv(root / "train_series_descriptions.csv", index=False)
    t1 = sd[(sd["study_id"] == corrupt) & (sd["series_description"] == "Sagittal T1")]["series_id"].iloc[0]
    for f in (root / "train_images" / str(corrupt) / str(t1)).glob("*.dcm"):
        f.write_bytes(b"not a dicom file")

    # A third study crashes outright (an unexpected bug): logged, skipped, 25 fallback rows.
    crash = ids[2]
    real = ex.extract_study

    def flaky(study, *a, **k):
        if study.study_id == crash:
            raise RuntimeError("simulated crash")
        return real(study, *a, **k)

    monkeypatch.setattr(ex, "extract_study", flaky)  # serial mode runs in this process
    meta = extract_features(root, "train", tmp_path / "out", cfg=fast_cfg, workers=1)
    table = pd.read_parquet(tmp_path / "out" / "features.parquet")
    assert len(table) == 150 and meta["n_failed_studies"] == 1
    assert meta["failures"] == {str(crash): "RuntimeError: simulated crash"}
    assert f"skipped {crash}: RuntimeError: simulated crash" in caplog.text
    x = table[table["study_id"] == crash]
    assert len(x) == 25 and (x[["has_point", "has_sagt1", "has_sagt2", "has_axt2"]] == 0).all().all()
    assert x[[c for c in table.columns if c.startswith("rad_")]].isna().all().all()
    axcols = [c for c in table.columns if c.startswith("rad_axt2_")]
    t = table[table["study_id"] == no_ax]
    assert len(t) == 25 and (t["has_axt2"] == 0).all() and t[axcols].isna().all().all()
    sag = [c for c in table.columns if c.startswith("rad_sagt2_")]
    assert t.loc[t["group"] == "spinal", sag].notna().all().all()  # the sagittal side still works
    c = table[table["study_id"] == corrupt]
    t1cols = [c for c in table.columns if c.startswith("rad_sagt1_")]
    assert (c["has_sagt1"] == 0).all() and c[t1cols].isna().all().all()
    assert str(corrupt) in meta["problems"] and str(no_ax) not in meta["failures"]
    # Every other study is untouched by its neighbours' damage.
    others = [s for s in ids if s not in (no_ax, corrupt, crash)]
    cols = [c for c in clean.columns if c.startswith("rad_")]
    a = table[table["study_id"].isin(others)].reset_index(drop=True)[cols]
    b = clean[clean["study_id"].isin(others)].reset_index(drop=True)[cols]
    pd.testing.assert_frame_equal(a, b)


def test_bad_points_csv_is_one_line_error(phantom_root: Path, fast_cfg: FeaturesConfig, tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from radspine.cli import app

    pts = pd.read_csv(phantom_root / "train_label_coordinates.csv")
    pts["x"] = pts["x"].astype(object)
    pts.loc[3, "x"] = "abc"
    bad = tmp_path / "points.csv"
    pts.to_csv(bad, index=False)
    with pytest.raises(RadspineError, match=r"points\.csv, row 4 .*column 'x'.*'abc'"):
        extract_features(phantom_root, "train", tmp_path / "out", points=bad, cfg=fast_cfg, workers=1)
    res = CliRunner().invoke(app, ["extract-features", "--data", str(phantom_root), "--out", str(tmp_path / "o"),
                                   "--points", str(bad), "--quiet"])
    assert res.exit_code == 2
    err = res.output.strip()
    assert "\n" not in err and "points.csv" in err and "'x'" in err
    with pytest.raises(RadspineError, match="points file not found"):
        extract_features(phantom_root, "train", tmp_path / "o2", points=tmp_path / "nope.csv", cfg=fast_cfg)


# ------------------------------------------------------------------------------------------ CNN + test
def test_cnn_columns_and_test_split_uses_train_embedders(cnn_run, serial_run, phantom_root: Path, tmp_path: Path) -> None:
    from radspine.features.config import CNN_FAMILIES, config_hash
    from radspine.features.embeddings import CnnEnsemble, load_embedder

    out, table, meta = cnn_run
    _, plain, _ = serial_run
    cnn = [c for c in table.columns if c.startswith("cnn_")]
    assert cnn == [f"cnn_{i}" for i in range(7)]  # 3 grade probabilities + 4 PCA dims
    assert table[cnn].notna().all().all()
    probs = table[["cnn_0", "cnn_1", "cnn_2"]].to_numpy()
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    assert meta["backbone"] == "resnet10t"
    # The CNN only adds columns: the radiomics part equals the CNN-free run's.
    rad = [c for c in plain.columns if c.startswith("rad_")]
    pd.testing.assert_frame_equal(table[rad], plain[rad])

    cfg = FeaturesConfig.model_validate(json.loads((out / "features_config.json").read_text()))
    assert config_hash(cfg) == meta["config_hash"]
    ids = _train_ids(phantom_root)[:2]
    root = _link_dataset(phantom_root, tmp_path / "data", test_studies=ids)
    pts = pd.read_csv(phantom_root / "train_label_coordinates.csv")
    pts_csv = tmp_path / "test_points.csv"
    pts[pts["study_id"].isin(ids)].to_csv(pts_csv, index=False)

    with pytest.raises(RadspineError, match="no trained CNN embedders"):
        extract_features(root, "test", tmp_path / "t0", points=pts_csv, cfg=cfg, workers=1)
    assert not (tmp_path / "t0" / "features.parquet").exists()

    stamps = {p: p.stat().st_mtime_ns for p in (out / "embedders").rglob("*") if p.is_file()}
    tmeta = extract_features(root, "test", tmp_path / "t", points=pts_csv, cfg=cfg, workers=1,
                             embedders_dir=out / "embedders")
    test = pd.read_parquet(tmp_path / "t" / "features.parquet")
    assert {p: p.stat().st_mtime_ns for p in stamps} == stamps  # read, never retrained
    assert not (tmp_path / "t" / "embedders").exists()
    assert tmeta["config_hash"] == meta["config_hash"] and len(test) == 50
    # cv_fold is the training table's CV bookkeeping (shared with tune); test rows have none.
    assert list(test.columns) == [c for c in table.columns if c != "cv_fold"]
    assert table["cv_fold"].groupby(table["study_id"]).nunique().eq(1).all()
    # Same points, same study: the test rows' base features equal the train rows'.
    tr = table[table["study_id"].isin(ids)].reset_index(drop=True)
    pd.testing.assert_frame_equal(test[rad + ["pt_x", "pt_y", "pt_z"]], tr[rad + ["pt_x", "pt_y", "pt_z"]])
    # Test embeddings come from the all-studies network; train rows were embedded out of fold, so differ.
    assert not np.allclose(test[cnn].to_numpy(), tr[cnn].to_numpy())
    fam = table[table["group"] == "spinal"]
    assert fam["cnn_3"].nunique() > 1
    # Context columns carry the neighbours' CNN values (first context_cnn_dims columns).
    row = table[(table["condition"] == "left_subarticular_stenosis") & (table["level"] == "l3_l4")].iloc[0]
    other = table[(table["study_id"] == row["study_id"]) & (table["condition"] == "right_subarticular_stenosis")
                  & (table["level"] == "l3_l4")].iloc[0]
    assert row["ctx_other_cnn_0"] == other["cnn_0"]
    for f in CNN_FAMILIES:  # the default test network: the fold networks (cnn_folds=2), no all-data network
        assert (out / "embedders" / f / "ensemble.json").is_file()
        assert (out / "embedders" / f / "member_1" / "embedder.json").is_file()
    emb = load_embedder(out / "embedders" / "spinal", device="cpu")
    assert isinstance(emb, CnnEnsemble) and len(emb.members) == 2
    assert emb.n_features_out_ == 7


def _first_study_item(phantom_root: Path, clean: pd.DataFrame) -> tuple[tuple, pd.DataFrame]:
    """The first train study with its label points (a StudyJob item) and its rows of the un-jittered run."""
    from radspine.io.dataset import Dataset
    from radspine.points import read_points_csv

    study = Dataset.open(phantom_root).studies("train")[0]
    pts = read_points_csv(phantom_root / "train_label_coordinates.csv")
    item = (study, pts[pts["study_id"] == study.study_id])
    return item, clean[clean["study_id"] == study.study_id].reset_index(drop=True)


def test_jitter_moves_training_points_only(phantom_root: Path, fast_cfg: FeaturesConfig, serial_run) -> None:
    from radspine.features.study import StudyJob

    upd = {"jitter_sigma_mm": 3.0, "jitter_through_plane": True}
    cfg = fast_cfg.model_copy(update={"patches": fast_cfg.patches.model_copy(update=upd)})
    item, ref = _first_study_item(phantom_root, serial_run[1])
    a = StudyJob(cfg, "train")(item).rows
    xyz = ["pt_x", "pt_y", "pt_z"]
    d = np.linalg.norm(a[xyz].to_numpy() - ref[xyz].to_numpy(), axis=1)
    assert (d > 0).all() and 1.5 < np.median(d) < 8.0  # 3-D Gaussian, sigma 3 mm: median ≈ 4.6 mm
    pd.testing.assert_frame_equal(StudyJob(cfg, "train")(item).rows, a)  # seeded: same points again
    other = StudyJob(cfg.model_copy(update={"seed": 1}), "train")(item).rows
    assert not np.allclose(other[xyz].to_numpy(), a[xyz].to_numpy())
    # Prediction-time rows are never jittered.
    test_rows = StudyJob(cfg, "test")(item).rows
    np.testing.assert_array_equal(test_rows[xyz].to_numpy(), ref[xyz].to_numpy())


def test_in_plane_jitter_moves_patches_not_points(phantom_root: Path, fast_cfg: FeaturesConfig, serial_run) -> None:
    """The default jitter moves each patch within its own slice plane; the graded point itself stays."""
    from radspine.features.study import StudyJob

    cfg = fast_cfg.model_copy(update={"patches": fast_cfg.patches.model_copy(update={"jitter_sigma_mm": 3.0})})
    assert not cfg.patches.jitter_through_plane
    item, ref = _first_study_item(phantom_root, serial_run[1])
    a = StudyJob(cfg, "train")(item).rows
    xyz = ["pt_x", "pt_y", "pt_z"]
    np.testing.assert_array_equal(a[xyz].to_numpy(), ref[xyz].to_numpy())
    # Each patch's distance to its slice is the labelled point's: no patch drifted off its slice.
    plane = [c for c in ref if c.startswith("geo_plane_dist_")]
    np.testing.assert_allclose(a[plane].to_numpy(float), ref[plane].to_numpy(float), atol=1e-9)
    rad = [c for c in ref if c.startswith("rad_") and ref[c].notna().any()]
    assert rad and not np.allclose(a[rad].to_numpy(float), ref[rad].to_numpy(float), equal_nan=True)
    pd.testing.assert_frame_equal(StudyJob(cfg, "train")(item).rows, a)  # seeded: the same patches again
