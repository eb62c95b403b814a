"""The extract-features CNN stage: study folds from ``cv_fold``, no fold leakage, weights recorded."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from helpers.spies import record_fit_sizes

import radspine.features.cnn_stage as stage
import radspine.features.embeddings as E
from radspine.features.config import FeaturesConfig
from radspine.features.embeddings import CnnEmbedder, EmbeddingConfig

N_STUDIES, PER_STUDY = 6, 6


def _cfg(test_network: str = "all_data") -> FeaturesConfig:
    emb = EmbeddingConfig(backbone="resnet10t", backbone_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16},
                          pretrained="none", freeze_stages=0, image_size=16, epochs=1, batch_size=8,
                          num_threads=1, device="cpu", pca_dims=3, test_network=test_network)
    return FeaturesConfig(embeddings=emb, cnn_folds=3)


def _table():
    rng = np.random.default_rng(0)
    ids = [f"{100 + s}_foraminal_{i}" for s in range(N_STUDIES) for i in range(PER_STUDY)]
    n = len(ids)
    x = rng.random((n, 2, 16, 16), dtype=np.float32)
    x[:, 0, 0, 0] = np.arange(n) / 64.0  # row index hidden in a pixel (exact in float32)
    folds = {100 + s: f for s, f in zip(range(N_STUDIES), [2, 0, 1, 1, 2, 0], strict=True)}
    base = pd.DataFrame({"row_id": ids, "study_id": [int(r.split("_")[0]) for r in ids]})
    base["cv_fold"] = base["study_id"].map(folds)
    grades = {r: float(i % 3) for i, r in enumerate(ids)}
    return x, ids, base, grades


def _patch_source(monkeypatch, x, ids) -> None:
    def fake(results, cache_dir, fam):
        return (x, list(ids)) if fam == "foraminal" else (None, [])

    monkeypatch.setattr(stage, "_family_patches", fake)


def test_fold_networks_never_saw_a_study_of_their_held_out_fold(monkeypatch, tmp_path) -> None:
    x, ids, base, grades = _table()
    _patch_source(monkeypatch, x, ids)
    fold = base["cv_fold"].to_numpy()
    row_of = lambda a: np.rint(np.asarray(a)[:, 0, 0, 0] * 64.0).astype(int)  # noqa: E731
    fitted: dict[int, np.ndarray] = {}
    embedded: list[tuple[int, np.ndarray]] = []
    procrustes: list[tuple[int, int]] = []
    alive: list[CnnEmbedder] = []
    real_fit, real_transform, real_map = CnnEmbedder.fit, CnnEmbedder.transform, E._procrustes_map

    def spy_fit(self, xs, *a, **k):
        alive.append(self)
        fitted[id(self)] = row_of(xs)
        return real_fit(self, xs, *a, **k)

    def spy_transform(self, xs):
        embedded.append((id(self), row_of(xs)))
        return real_transform(self, xs)

    def spy_map(src_train, dst_train, src):
        procrustes.append((src_train.shape[0], dst_train.shape[0]))
        return real_map(src_train, dst_train, src)

    monkeypatch.setattr(CnnEmbedder, "fit", spy_fit)
    monkeypatch.setattr(CnnEmbedder, "transform", spy_transform)
    monkeypatch.setattr(E, "_procrustes_map", spy_map)
    out = tmp_path / "train"
    table, info = stage.add_cnn_columns(base, {}, tmp_path, _cfg(), "train", grades, out, out / "embedders")

    full_id = id(alive[0])  # the all-data network is fitted first
    assert np.array_equal(np.sort(fitted[full_id]), np.arange(len(ids)))
    fold_nets = [k for k in fitted if k != full_id]
    assert len(fold_nets) == 3
    held_out_rows = []
    for k in fold_nets:
        train_folds = set(fold[fitted[k]])
        assert len(train_folds) == 2  # trained on exactly two of the table's cv_folds
        for emb_id, rows in embedded:
            if emb_id != k:
                continue
            if np.array_equal(np.sort(rows), np.sort(fitted[k])):
                continue  # its own training rows: the Procrustes source
            assert not set(fold[rows]) & train_folds  # embeds only studies of the fold it never saw
            held_out_rows.append(rows)
    assert np.array_equal(np.sort(np.concatenate(held_out_rows)), np.arange(len(ids)))
    # Procrustes rotation fitted on the fold's training rows only (12 of 18 per fold here)
    n_train = [int((fold != f).sum()) for f in range(3)]
    assert sorted(p[0] for p in procrustes) == sorted(n_train) and all(a == b for a, b in procrustes)

    assert info["trained"] == ["foraminal"] and info["weights"]["foraminal"] == {"name": "none"}
    assert set(info["skipped"]) == {"spinal", "subarticular"}
    manifest = json.loads((out / "embedders" / "embedders.json").read_text())
    assert manifest["trained"] == ["foraminal"]
    assert list(table.filter(like="cnn_").columns) == [f"cnn_{i}" for i in range(6)]  # 3 probs + 3 PCA
    assert (table["has_cnn"] == 1.0).all()
    assert np.isfinite(table[[f"cnn_{i}" for i in range(6)]].to_numpy()).all()

    # test split: the saved all-data network embeds every row
    test_table, test_info = stage.add_cnn_columns(base.drop(columns="cv_fold"), {}, tmp_path, _cfg(), "test",
                                                  None, tmp_path / "test", out / "embedders")
    want = alive[0].transform(x)
    assert np.allclose(test_table[[f"cnn_{i}" for i in range(6)]].to_numpy(), want, atol=1e-6)
    assert test_info["weights"]["foraminal"] == {"name": "none"}


def test_fold_ensemble_stage_trains_three_networks_and_embeds_test_rows_with_their_mean(monkeypatch, tmp_path) -> None:
    x, ids, base, grades = _table()
    _patch_source(monkeypatch, x, ids)
    fitted = record_fit_sizes(monkeypatch)
    out = tmp_path / "train"
    table, info = stage.add_cnn_columns(base, {}, tmp_path, _cfg("fold_ensemble"), "train", grades, out,
                                        out / "embedders")
    assert fitted == [24, 24, 24]  # the three fold networks (two of the three cv_folds each), no all-data one
    assert info["trained"] == ["foraminal"] and (out / "embedders" / "foraminal" / "ensemble.json").is_file()
    cols = [f"cnn_{i}" for i in range(6)]
    assert np.isfinite(table[cols].to_numpy()).all()
    test_table, _ = stage.add_cnn_columns(base.drop(columns="cv_fold"), {}, tmp_path, _cfg("fold_ensemble"), "test",
                                          None, tmp_path / "test", out / "embedders")
    ens = E.load_embedder(out / "embedders" / "foraminal")
    probs = np.mean([m.predict_proba(x) for m in ens.members], axis=0)
    assert np.allclose(test_table[cols[:3]].to_numpy(), probs, atol=1e-6)
    assert np.allclose(test_table[cols].to_numpy(), ens.transform(x), atol=1e-6)


def test_each_family_network_gets_its_patch_size_in_millimetres(monkeypatch, tmp_path) -> None:
    """image_size unset: the foraminal network's input is its 36 mm patch at image_spacing_mm (here 2 mm: 18 px)."""
    x, ids, base, grades = _table()
    _patch_source(monkeypatch, x, ids)
    cfg = _cfg("fold_ensemble")
    cfg = cfg.model_copy(update={"embeddings": cfg.embeddings.model_copy(update={"image_size": None,
                                                                                 "image_spacing_mm": 2.0})})
    assert cfg.patches.foraminal.size_mm == (36.0, 36.0)
    out = tmp_path / "train"
    stage.add_cnn_columns(base, {}, tmp_path, cfg, "train", grades, out, out / "embedders")
    ens = E.load_embedder(out / "embedders" / "foraminal")
    assert [m.input_size_ for m in ens.members] == [(18, 18)] * 3
    assert all(m.cfg.image_size == 18 for m in ens.members)
    test_table, _ = stage.add_cnn_columns(base.drop(columns="cv_fold"), {}, tmp_path, cfg, "test", None,
                                          tmp_path / "test", out / "embedders")
    assert np.allclose(test_table[[f"cnn_{i}" for i in range(6)]].to_numpy(), ens.transform(x), atol=1e-6)


def test_oof_folds_argument_is_checked() -> None:
    x, ids, base, grades = _table()
    y = np.array([grades[r] for r in ids])
    with pytest.raises(ValueError, match="folds has 3 values for 36 patches"):
        E.oof_embeddings(x, y, base["study_id"].to_numpy(), _cfg().embeddings, folds=np.zeros(3))


def test_small_dataset_gets_fewer_pca_dims_not_an_error() -> None:
    """A partial dataset with few patches per fold: the CNN keeps going with fewer PCA axes (same for all)."""
    from radspine.features.embeddings import EmbeddingConfig, oof_embeddings

    rng = np.random.default_rng(0)
    x = rng.random((9, 1, 16, 16)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1, 2, 0, 1, 2], dtype=float)
    groups = np.arange(9) // 3
    cfg = EmbeddingConfig(backbone="resnet10t", backbone_kwargs={"channels": [8, 8, 8, 8], "stem_width": 8},
                          pretrained="none", freeze_stages=0, image_size=16, epochs=1, batch_size=4,
                          num_threads=1, device="cpu", pca_dims=16)
    oof, full = oof_embeddings(x, y, groups, cfg, folds=groups)
    assert full.cfg.pca_dims == 5 and oof.shape == (9, 3 + 5)
    assert np.isfinite(oof).all()
