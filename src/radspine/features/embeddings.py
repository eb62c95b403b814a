"""CNN embeddings of level patches: a timm backbone fine-tuned on the grade, pooled penultimate features.

One :class:`CnnEmbedder` per patch family (spinal / foraminal / subarticular): input float32 patches
``(N, C, H, W)`` (C neighbouring slices, intensities ~[0, 1], zeros outside the image), labels 0/1/2
(NaN or -1 = unlabeled: embedded, never trained on). Training uses the metric's class weights 1/2/4.

Leakage: :func:`oof_embeddings` embeds each training row with a network that never saw its study
(grouped folds) and returns a network trained on all rows for the test rows.
"""

from __future__ import annotations

import json
import logging
import math
import os
import tempfile
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from radspine.constants import SEVERITY_WEIGHTS
from radspine.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

FORMAT = "radspine-cnn-embedder"
FORMAT_VERSION = 1
# Patches are robust-normalised to ~[0, 1]; a fixed affine map centres them for the network without
# per-batch statistics (which would make an embedding depend on its batch-mates).
_INPUT_CENTER, _INPUT_SCALE = 0.5, 0.25


class AugmentConfig(BaseModel):
    """Training-time augmentation. Flips are off by default because most are not anatomically neutral:
    a left/right flip of an axial patch swaps the patient's sides, and an anterior/posterior flip of a
    sagittal patch puts the canal in front of the disc. ``vflip`` (cranio-caudal) is roughly neutral for
    sagittal disc-level patches; enable it per family if wanted."""

    model_config = ConfigDict(extra="forbid")

    max_shift_px: float = Field(3.0, ge=0.0, description="uniform random translation, +- pixels")
    intensity_jitter: float = Field(0.1, ge=0.0, lt=1.0, description="gain 1+-j and offset +-j/2")
    vflip: bool = False
    hflip: bool = False


class EmbeddingConfig(BaseModel):
    """CNN embedding settings for one patch family (in_chans comes from the data)."""

    model_config = ConfigDict(extra="forbid")

    # Default: resnet10t at quarter width. On 2 CPU cores the stock resnet10t/resnet18 cost ~10-25x more
    # per patch (benchmarks/embed_bench.py); mobilenetv3/lcnet are as cheap but trained from scratch for
    # a few epochs their weighted log loss was far worse than the prior on a toy signal (BN statistics).
    backbone: str = Field("resnet10t", description="timm model name; created with pretrained=False")
    backbone_kwargs: dict[str, Any] = Field(
        default_factory=lambda: {"channels": [16, 32, 64, 128], "stem_width": 16},
        description="extra timm.create_model kwargs ({} = the stock architecture)",
    )
    # 32 px (1.5 mm/px over a 48 mm patch): stock width at 64 px took ~23 s per fit on 80 patches on one
    # core, this ~0.5 s (benchmarks/extract_bench.py, issue 4 report).
    image_size: int | None = Field(32, ge=16, description="resize patches to this square size; None = as given")
    epochs: int = Field(4, ge=1)
    batch_size: int = Field(64, ge=2)
    lr: float = Field(2e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    pca_dims: int | None = Field(
        16, ge=0, description="PCA-reduce the pooled features to this many dims; 0 = drop them (probs only)"
    )
    append_proba: bool = Field(
        True, description="prepend the network's 3 grade probabilities (cnn_0..2) to the (PCA) features"
    )
    align_folds: bool = Field(
        True,
        description="rotate each OOF fold's pooled/PCA features onto the full network's (orthogonal Procrustes "
        "fitted on that fold's training rows), so training and test rows share one feature space",
    )
    weights_path: Path | None = Field(None, description="local timm state dict; nothing is ever downloaded")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = torch default")


def embedding_columns(d: int) -> list[str]:
    """Feature column names ``cnn_0 … cnn_{d-1}`` (one family per row, so no family prefix)."""
    return [f"cnn_{i}" for i in range(int(d))]


def _check_x(x: np.ndarray, name: str = "x") -> np.ndarray:
    x = np.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{name} must be patches (N, C, H, W), got shape {x.shape}")
    x = x.astype(np.float32, copy=False)
    bad = ~np.isfinite(x)
    if bad.any():
        # Patches flag out-of-image parts with zeros; a stray NaN gets the same safe fallback.
        log.warning("%d non-finite patch values replaced by 0", int(bad.sum()))
        x = np.where(bad, np.float32(0.0), x)
    return x


def _check_y(y: np.ndarray | None, n: int) -> np.ndarray:
    """Labels as float with NaN for unlabeled (NaN or -1); other values rejected."""
    if y is None:
        return np.full(n, np.nan)
    y = np.asarray(y, dtype=np.float64).ravel()
    if y.shape[0] != n:
        raise ValueError(f"y has {y.shape[0]} labels for {n} patches")
    y = np.where(y == -1, np.nan, y)
    ok = np.isnan(y) | np.isin(y, (0.0, 1.0, 2.0))
    if not ok.all():
        raise ValueError(f"grades must be 0/1/2, NaN or -1; got {np.unique(y[~ok])[:5].tolist()}")
    return y


def _atomic_write(path: Path, write: Any) -> None:
    """Write via ``write(tmp_path)`` to a temp file in the same folder, then rename over ``path``."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    try:
        write(Path(tmp))
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


class CnnEmbedder:
    """Fine-tune a timm backbone on graded patches, then embed patches with its pooled penultimate layer.

    Learned attributes (set by :meth:`fit` or :meth:`load`): ``model_``, ``in_chans_``, ``input_size_``,
    ``feature_dim_``, ``pca_mean_``/``pca_components_`` (None without PCA), ``device_``, ``history_``
    (mean weighted loss per epoch), ``seed_``.
    """

    def __init__(self, cfg: EmbeddingConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else EmbeddingConfig()

    # ------------------------------------------------------------------ fitting
    def fit(
        self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, seed: int = 0
    ) -> CnnEmbedder:
        """Fine-tune on the labeled rows (class weights 1/2/4 × sample_weight); fit PCA on all rows.

        Args:
            x: float32 patches (N, C, H, W).
            y: grades 0/1/2; NaN or -1 marks unlabeled rows (excluded from training).
            sample_weight: optional per-row weights, multiplied with the class weight.
            seed: seeds initialisation, batch order and augmentation (same seed → identical result on CPU).
        """
        import torch

        from radspine.features.cnn_models import build_backbone, load_local_weights
        from radspine.torchutil import resolve_device, torch_runtime

        cfg = self.cfg
        if cfg.pca_dims == 0 and not cfg.append_proba:
            raise ConfigError("embeddings: pca_dims=0 with append_proba=false leaves no CNN features")
        x = _check_x(x)
        n = x.shape[0]
        y = _check_y(y, n)
        w = np.ones(n) if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
        if w.shape[0] != n or not np.all(np.isfinite(w)) or (w < 0).any():
            raise ValueError("sample_weight must be finite, non-negative and have one value per patch")
        train = np.flatnonzero(~np.isnan(y) & (w > 0))
        if train.size < 2:
            raise ModelError(f"CNN embedder needs at least 2 labeled patches to train, got {train.size}")

        self.device_ = resolve_device(cfg.device)
        self.in_chans_ = int(x.shape[1])
        self.input_size_ = (cfg.image_size, cfg.image_size) if cfg.image_size else (int(x.shape[2]), int(x.shape[3]))
        self.seed_ = int(seed)
        t0 = time.perf_counter()
        with torch_runtime(cfg.num_threads):
            torch.manual_seed(seed)
            model = build_backbone(cfg.backbone, self.in_chans_, kwargs=cfg.backbone_kwargs)
            if cfg.weights_path is not None:
                load_local_weights(model, cfg.weights_path)
            self.model_ = model.to(self.device_)
            self.feature_dim_ = int(self._features_probe())
            self.history_ = self._train(x[train], y[train].astype(np.int64), w[train], seed)
            self.pca_mean_ = self.pca_components_ = None
            if cfg.pca_dims:
                self._fit_pca(self._embed_raw(x)[0], seed)
        log.info(
            "CNN %s fitted on %d/%d labeled patches %s in %.1fs (device %s)",
            cfg.backbone, train.size, n, tuple(x.shape[1:]), time.perf_counter() - t0, self.device_,
        )
        return self

    def _features_probe(self) -> int:
        import torch

        self.model_.eval()
        with torch.no_grad():
            probe = torch.zeros((1, self.in_chans_, *self.input_size_), device=self.device_)
            return self.model_.forward_head(self.model_.forward_features(probe), pre_logits=True).shape[1]

    def _batch(self, x: np.ndarray, idx: np.ndarray) -> Any:
        """Patches idx as a device tensor resized to ``input_size_`` (still in [0, 1] units)."""
        import torch
        import torch.nn.functional as F

        xb = torch.from_numpy(np.ascontiguousarray(x[idx])).to(self.device_)
        if tuple(xb.shape[-2:]) != tuple(self.input_size_):
            xb = F.interpolate(xb, size=self.input_size_, mode="bilinear", align_corners=False, antialias=True)
        return xb

    def _augment(self, xb: Any, gen: Any) -> Any:
        import torch
        import torch.nn.functional as F

        aug = self.cfg.augment
        n, _, h, wd = xb.shape
        # Random numbers come from a seeded CPU generator so CPU and CUDA runs draw the same augmentations.
        if aug.vflip:
            m = (torch.rand(n, generator=gen) < 0.5).to(xb.device)
            xb = torch.where(m[:, None, None, None], xb.flip(-2), xb)
        if aug.hflip:
            m = (torch.rand(n, generator=gen) < 0.5).to(xb.device)
            xb = torch.where(m[:, None, None, None], xb.flip(-1), xb)
        if aug.max_shift_px > 0:
            shift = (torch.rand(n, 2, generator=gen) * 2 - 1) * aug.max_shift_px
            theta = torch.zeros(n, 2, 3)
            theta[:, 0, 0] = theta[:, 1, 1] = 1.0
            theta[:, 0, 2] = shift[:, 0] * 2.0 / wd  # affine_grid works in [-1, 1] units
            theta[:, 1, 2] = shift[:, 1] * 2.0 / h
            grid = F.affine_grid(theta.to(xb.device), list(xb.shape), align_corners=False)
            # zeros padding = the patches' own "outside the image" value
            xb = F.grid_sample(xb, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
        if aug.intensity_jitter > 0:
            j = aug.intensity_jitter
            gain = 1.0 + (torch.rand(n, generator=gen) * 2 - 1) * j
            offset = (torch.rand(n, generator=gen) * 2 - 1) * (j / 2)
            xb = xb * gain.to(xb.device)[:, None, None, None] + offset.to(xb.device)[:, None, None, None]
        return xb

    def _train(self, x: np.ndarray, y: np.ndarray, w: np.ndarray, seed: int) -> list[float]:
        import torch
        import torch.nn.functional as F

        cfg = self.cfg
        model = self.model_
        n = x.shape[0]
        bs = min(cfg.batch_size, n)
        # BatchNorm cannot train on a batch of one: a trailing single-row batch is skipped.
        starts = [s for s in range(0, n, bs) if min(bs, n - s) >= 2]
        opt = torch.optim.AdamW(model.parameters(), lr=cfg.lr, weight_decay=cfg.weight_decay)
        total_steps = cfg.epochs * len(starts)
        warm = max(1, total_steps // 10)

        def lr_factor(step: int) -> float:
            # Linear warm-up then cosine decay; written out because OneCycleLR divides by zero when a
            # tiny run has fewer than ~4 steps.
            if step < warm:
                return (step + 1) / warm
            t = (step - warm) / max(1, total_steps - warm)
            return 0.02 + 0.98 * 0.5 * (1.0 + math.cos(math.pi * min(t, 1.0)))

        sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
        class_w = torch.tensor(SEVERITY_WEIGHTS, dtype=torch.float32, device=self.device_)
        yt = torch.from_numpy(y).to(self.device_)
        wt = torch.from_numpy(w.astype(np.float32)).to(self.device_)
        gen = torch.Generator().manual_seed(int(seed))
        history: list[float] = []
        model.train()
        for _ in range(cfg.epochs):
            perm = torch.randperm(n, generator=gen).numpy()
            total, total_w = 0.0, 0.0
            for s in starts:
                idx = np.sort(perm[s : s + bs])
                xb = self._augment(self._batch(x, idx), gen)
                logits = model((xb - _INPUT_CENTER) / _INPUT_SCALE)
                ti = torch.from_numpy(idx).to(self.device_)
                yb = yt[ti]
                # The metric's weighted log loss: each row weighs class_w[grade] × its sample weight.
                rw = class_w[yb] * wt[ti]
                loss_sum = (F.cross_entropy(logits, yb, reduction="none") * rw).sum()
                denom = rw.sum().clamp_min(1e-12)
                opt.zero_grad(set_to_none=True)
                (loss_sum / denom).backward()
                opt.step()
                sched.step()
                total += float(loss_sum.detach())
                total_w += float(denom.detach())
            history.append(total / max(total_w, 1e-12))
        model.eval()
        return history

    def _fit_pca(self, feats: np.ndarray, seed: int) -> None:
        from sklearn.decomposition import PCA

        k = int(self.cfg.pca_dims or 0)
        if k > min(feats.shape):
            raise ConfigError(
                f"embeddings.pca_dims={k} exceeds min(rows, features)={min(feats.shape)} of this fit; lower it"
            )
        pca = PCA(n_components=k, svd_solver="full", random_state=seed).fit(feats.astype(np.float64))
        # Stored as plain arrays (saved to .npz, no pickle); PCA.transform without whitening is
        # exactly (X - mean_) @ components_.T.
        self.pca_mean_ = pca.mean_.astype(np.float64)
        self.pca_components_ = pca.components_.astype(np.float64)

    # ------------------------------------------------------------------ inference
    def _check_fitted(self) -> None:
        if not hasattr(self, "model_"):
            raise ModelError("CnnEmbedder is not fitted: call fit() or CnnEmbedder.load()")

    def _embed_raw(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Pooled penultimate features (N, feature_dim_) and grade probabilities (N, 3)."""
        import torch

        x = _check_x(x)
        if x.shape[1] != self.in_chans_:
            raise ModelError(f"patches have {x.shape[1]} channels but the CNN was trained on {self.in_chans_}")
        model = self.model_
        model.eval()
        feats, probs = [], []
        bs = max(self.cfg.batch_size, 1) * 2  # no activations kept for backward: larger batches fit
        with torch.no_grad():
            for s in range(0, x.shape[0], bs):
                xb = self._batch(x, np.arange(s, min(s + bs, x.shape[0])))
                fmap = model.forward_features((xb - _INPUT_CENTER) / _INPUT_SCALE)
                feats.append(model.forward_head(fmap, pre_logits=True).float().cpu().numpy())
                probs.append(torch.softmax(model.forward_head(fmap), dim=1).float().cpu().numpy())
        if not feats:
            return np.zeros((0, self.feature_dim_), np.float32), np.zeros((0, 3), np.float32)
        return np.concatenate(feats), np.concatenate(probs)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from radspine.torchutil import torch_runtime

        self._check_fitted()
        with torch_runtime(self.cfg.num_threads):
            return self._embed_raw(x)

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Embeddings (N, n_features_out_) float32: ``[P(grade 0..2) if append_proba] + pooled features``
        (PCA-reduced if ``pca_dims``)."""
        feats, probs = self._run(x)
        if self.cfg.pca_dims == 0:
            feats = feats[:, :0]
        elif self.pca_components_ is not None:
            feats = (feats.astype(np.float64) - self.pca_mean_) @ self.pca_components_.T
        out = [feats.astype(np.float32)]
        if self.cfg.append_proba:
            # Probabilities first: they mean the same thing for every fold's network (pooled features
            # and PCA axes do not), and callers that copy the first k columns get the strongest ones.
            out.insert(0, probs.astype(np.float32))
        return np.concatenate(out, axis=1)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """The fine-tuned network's grade probabilities (N, 3), rows summing to 1."""
        return self._run(x)[1]

    @property
    def n_features_out_(self) -> int:
        """Width D of :meth:`transform`'s output."""
        self._check_fitted()
        if self.cfg.pca_dims == 0:
            d = 0
        else:
            d = self.pca_components_.shape[0] if self.pca_components_ is not None else self.feature_dim_
        return int(d + (3 if self.cfg.append_proba else 0))

    # ------------------------------------------------------------------ persistence
    def save(self, directory: str | Path) -> Path:
        """Write ``model.pt`` (state dict), ``pca.npz`` (if PCA) and ``embedder.json``, each atomically."""
        import timm
        import torch

        self._check_fitted()
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        _atomic_write(d / "model.pt", lambda p: torch.save(state, p))
        if self.pca_components_ is not None:
            def _npz(p: Path) -> None:
                with open(p, "wb") as fh:
                    np.savez(fh, mean=self.pca_mean_, components=self.pca_components_)

            _atomic_write(d / "pca.npz", _npz)
        else:
            (d / "pca.npz").unlink(missing_ok=True)
        meta = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "config": self.cfg.model_dump(mode="json"),
            "in_chans": self.in_chans_,
            "input_size": list(self.input_size_),
            "feature_dim": self.feature_dim_,
            "n_features_out": self.n_features_out_,
            "seed": self.seed_,
            "history": self.history_,
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
        }
        # embedder.json goes last: its presence marks a complete bundle.
        _atomic_write(d / "embedder.json", lambda p: p.write_text(json.dumps(meta, indent=2)))
        return d

    @classmethod
    def load(cls, directory: str | Path, device: Literal["auto", "cpu", "cuda"] | None = None) -> CnnEmbedder:
        """Rebuild a saved embedder (no weights file or network needed); ``device`` overrides the config's.

        Raises:
            ModelError: missing/corrupt bundle or a state dict that does not fit the configured backbone.
        """
        import torch

        from radspine.features.cnn_models import build_backbone
        from radspine.torchutil import resolve_device

        d = Path(directory)
        try:
            meta = json.loads((d / "embedder.json").read_text())
        except (OSError, json.JSONDecodeError) as err:
            raise ModelError(f"{d}: not a CNN embedder bundle ({err})") from None
        if meta.get("format") != FORMAT or meta.get("format_version") != FORMAT_VERSION:
            raise ModelError(f"{d}: unsupported embedder format {meta.get('format')!r} v{meta.get('format_version')}")
        cfg = EmbeddingConfig.model_validate(meta["config"])
        if device is not None:
            cfg = cfg.model_copy(update={"device": device})
        self = cls(cfg)
        self.device_ = resolve_device(cfg.device)
        self.in_chans_ = int(meta["in_chans"])
        self.input_size_ = tuple(int(v) for v in meta["input_size"])
        self.feature_dim_ = int(meta["feature_dim"])
        self.seed_ = int(meta["seed"])
        self.history_ = list(meta.get("history", []))
        model = build_backbone(cfg.backbone, self.in_chans_, kwargs=cfg.backbone_kwargs)
        try:
            state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt/foreign file
            raise ModelError(f"{d / 'model.pt'}: cannot load CNN weights ({str(err).splitlines()[0]})") from None
        self.model_ = model.to(self.device_).eval()
        self.pca_mean_ = self.pca_components_ = None
        if cfg.pca_dims:
            try:
                with np.load(d / "pca.npz") as z:
                    self.pca_mean_, self.pca_components_ = z["mean"], z["components"]
            except (OSError, KeyError, ValueError) as err:
                raise ModelError(f"{d / 'pca.npz'}: cannot load PCA ({err})") from None
        return self


def _procrustes_map(src_train: np.ndarray, dst_train: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Map ``src`` rows from one network's feature space into another's.

    Two independently trained networks (and their PCAs) give unrelated axes, so a model fitted on
    fold-network features would meet a different space on test rows. The rotation is fitted by
    scipy's orthogonal Procrustes on rows both networks trained on (the fold's training rows), so the
    held-out rows' values still come only from the network that never saw them.
    """
    from scipy.linalg import orthogonal_procrustes

    mu_s, mu_d = src_train.mean(0), dst_train.mean(0)
    rot, _ = orthogonal_procrustes(src_train - mu_s, dst_train - mu_d)
    return ((src - mu_s) @ rot + mu_d).astype(np.float32)


def oof_embeddings(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    cfg: EmbeddingConfig | None = None,
    n_folds: int = 3,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    folds: np.ndarray | None = None,
) -> tuple[np.ndarray, CnnEmbedder]:
    """Out-of-fold embeddings for training rows plus an embedder trained on all rows (for test rows).

    Folds are grouped by study (``groups``) and stratified by grade (unlabeled rows as their own
    stratum), so the network that embeds a study never trained on it; each fold's PCA is fitted on that
    fold's training rows only. With ``cfg.align_folds`` the fold's pooled/PCA columns are rotated onto
    the full network's space (see :func:`_procrustes_map`); probability columns need no alignment.
    Fold k's network uses seed ``seed + 1 + k``; the full one uses ``seed``.

    ``folds`` (one fold index per row, constant within a study) replaces the internal split: pass the
    study folds that the graders' CV uses (``cv_fold``) so both stages hold out the same studies. A fold
    whose training rows have fewer than 2 labelled patches leaves its held-out rows NaN.

    Returns:
        ``(oof, full)``: oof (N, D) float32; ``full.oof_folds_`` holds each row's fold index.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    cfg = cfg if cfg is not None else EmbeddingConfig()
    x = _check_x(x)
    n = x.shape[0]
    y = _check_y(y, n)
    groups = np.asarray(groups).ravel()
    if groups.shape[0] != n:
        raise ValueError(f"groups has {groups.shape[0]} values for {n} patches")
    n_groups = np.unique(groups).size
    if folds is None and (n_folds < 2 or n_groups < n_folds):
        raise ConfigError(f"CNN out-of-fold embeddings need n_folds >= 2 and >= n_folds studies; "
                          f"got n_folds={n_folds}, {n_groups} studies")
    if folds is not None:
        given = np.asarray(folds).ravel()
        if given.shape[0] != n:
            raise ValueError(f"folds has {given.shape[0]} values for {n} patches")
        splits = [(np.flatnonzero(given != k), np.flatnonzero(given == k)) for k in np.unique(given)]
    else:
        strata = np.where(np.isnan(y), -1, y).astype(int)
        splitter = StratifiedGroupKFold(n_splits=n_folds, shuffle=True, random_state=seed)
        with warnings.catch_warnings():
            # Rare grades (few Severe rows) trigger "least populated class" warnings; grouping wins.
            warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
            splits = list(splitter.split(np.zeros(n), strata, groups))
    folds = np.full(n, -1, dtype=np.int64)
    oof: np.ndarray | None = None
    full = CnnEmbedder(cfg).fit(x, y, sample_weight, seed=seed)
    n_prob = 3 if cfg.append_proba else 0
    align = cfg.align_folds and full.n_features_out_ > n_prob
    z_full = full.transform(x)[:, n_prob:] if align else None
    for k, (tr, va) in enumerate(splits):
        folds[va] = k
        if np.count_nonzero(~np.isnan(y[tr])) < 2:
            log.warning("CNN OOF fold %d/%d: fewer than 2 labelled training patches; its rows stay NaN", k + 1, len(splits))
            continue
        emb = CnnEmbedder(cfg).fit(x[tr], y[tr], None if sample_weight is None else sample_weight[tr],
                                   seed=seed + 1 + k)
        part = emb.transform(x[va])
        if align:
            part[:, n_prob:] = _procrustes_map(emb.transform(x[tr])[:, n_prob:], z_full[tr], part[:, n_prob:])
        if oof is None:
            oof = np.full((n, part.shape[1]), np.nan, dtype=np.float32)
        oof[va] = part
        log.info("CNN OOF fold %d/%d: trained on %d rows, embedded %d", k + 1, len(splits), tr.size, va.size)
    full.oof_folds_ = folds
    if oof is None:
        oof = np.full((n, full.n_features_out_), np.nan, dtype=np.float32)
    return oof, full


__all__ = [
    "AugmentConfig",
    "CnnEmbedder",
    "EmbeddingConfig",
    "embedding_columns",
    "oof_embeddings",
]
