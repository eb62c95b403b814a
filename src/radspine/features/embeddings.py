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
import time
import warnings
from pathlib import Path
from typing import Any, Literal

import numpy as np
from pydantic import BaseModel, ConfigDict, Field

from radspine.constants import SEVERITY_WEIGHTS
from radspine.errors import ConfigError, ModelError
from radspine.fsutil import atomic_path

log = logging.getLogger(__name__)

FORMAT = "radspine-cnn-embedder"
FORMAT_VERSION = 2
FORMAT_VERSION_READ = (1, 2)
ENSEMBLE_FORMAT = "radspine-cnn-fold-ensemble"
# Rows (at most) that a fold network's Procrustes map to the reference network, and a network's PCA, are fitted
# on. A rotation or 16 principal axes of 1,280 pooled features need few rows; embedding more (each with the
# test-time shifts) cost as much as a training epoch on the real development set.
ALIGN_ROWS = 1000
PCA_ROWS = 4000
# Patches are robust-normalised to ~[0, 1]; a fixed affine map centres them for the network without
# per-batch statistics (which would make an embedding depend on its batch-mates). Pretrained nets get
# ImageNet's statistics in timm's single-channel form (mean/std of the RGB values), the input that
# adapt_input_conv's repeated RGB filters expect on every channel.
_INPUT_CENTER, _INPUT_SCALE = 0.5, 0.25
_IMAGENET_CENTER, _IMAGENET_SCALE = 0.449, 0.226


class AugmentConfig(BaseModel):
    """Training-time augmentation, drawn per patch by ``torchvision.transforms.v2`` in the DataLoader.

    Flips are off by default because most are not anatomically neutral: a left/right flip of an axial
    patch swaps the patient's sides, and an anterior/posterior flip of a sagittal patch puts the canal in
    front of the disc. ``vflip`` (cranio-caudal) is roughly neutral for sagittal disc-level patches.
    Intensity: additive Gaussian noise without clipping (patches are not bounded by 1: bright CSF sits
    above the volume's 99th percentile); gain jitter is left out because v2's brightness clamps to [0, 1].
    """

    model_config = ConfigDict(extra="forbid")

    max_shift_px: float = Field(3.0, ge=0.0, description="uniform random translation, +- pixels (at image_size)")
    rotate_deg: float = Field(0.0, ge=0.0, le=45.0, description="uniform random in-plane rotation, +- degrees")
    scale: float = Field(0.0, ge=0.0, lt=0.5, description="uniform random zoom 1 +- scale (with rotate: RandomAffine)")
    noise_sigma: float = Field(0.02, ge=0.0, description="additive Gaussian noise (patch units, ~[0, 1])")
    gamma: float = Field(0.3, ge=0.0, lt=1.0, description="random intensity gamma exp(U(-g, g)) per patch "
                         "(other scanners' contrast; the patch's own [0, 1] scale is kept)")
    vflip: bool = False
    hflip: bool = False


class EmbeddingConfig(BaseModel):
    """CNN embedding settings for one patch family (in_chans comes from the data)."""

    model_config = ConfigDict(extra="forbid")

    # Default: ImageNet-pretrained EfficientNet-Lite0 (packaged file, never downloaded), fine-tuned with its stem and
    # first 2 stages frozen, with augmentation (shift, noise, gamma), stopped early on 10 % of the training studies,
    # with test-time shifts, at 0.75 mm pixels (foraminal 48 px). Chosen on real CV
    # (benchmarks/real_nfn_cv.py; RSNA foraminal dev set, Sagittal T1, 36 mm patches, 3 study folds): the previous
    # default (last stage only, on cached un-augmented activations) gave OOF probabilities worse than the
    # per-level prior (1.04x); the whole network CNN 0.605, merged 0.524 in 37 min of extract-features; stem + 2
    # stages frozen CNN 0.582, merged 0.529 in 33 min; at 48 px (36 mm, 0.75 mm) CNN 0.587, merged 0.529 (64 px on
    # the same machine: 0.535) with a CNN stage 0.70x as long. The real slices hold ~1.2 mm pixels, so 36
    # mm is ~30 source pixels either way; 6 epochs instead of 4 then gave CNN 0.575, merged 0.524 (all three networks'
    # best epoch was 5 or 6), and freezing 3 stages instead of 2 lost it again (0.588 / 0.535).
    # The 2 px test-time shifts took 0.648 to 0.636 on a fold.
    # On CUDA it runs with AMP (bf16) and DataLoader workers. Patience 2, not 1: on the 3 real folds one network's
    # validation loss jumped at epoch 2 (0.749 -> 0.948) while the learning rate was still high; patience 1 kept
    # epoch 1, and that fold's out-of-fold loss was 0.741 against 0.606 and 0.592.
    backbone: str = Field("efficientnet_lite0", description="timm model name; created with pretrained=False")
    backbone_kwargs: dict[str, Any] = Field(
        default_factory=dict, description="extra timm.create_model kwargs ({} = the stock architecture)"
    )
    pretrained: Literal["auto", "none", "efficientnet_lite0"] = Field(
        "auto",
        description="auto = the packaged ImageNet weights when installed and the backbone matches, else random "
        "init (one logged warning); weights_path, when set, wins",
    )
    weights_path: Path | None = Field(None, description="local timm state dict; nothing is ever downloaded")
    freeze_stages: int = Field(
        2, ge=0, description="stem + this many leading backbone stages frozen (BN in eval mode) when pretrained "
        "weights are loaded; 0 = fine-tune all (a randomly initialised network always trains whole)"
    )
    cache_frozen: bool = Field(
        False,
        description="compute the frozen prefix's activations once per patch and share them across the OOF "
        "networks (pretrained prefix only); training then sees un-augmented patches. false = augmented patches run "
        "through the frozen prefix each step (it needs no weight gradients, so it still costs less than training it)",
    )
    image_size: int | None = Field(
        None, ge=16, description="resize patches to this square size; wins over image_spacing_mm. None = the size "
        "image_spacing_mm gives each patch family in extract-features (a patch as given where no family is known)"
    )
    image_spacing_mm: float | None = Field(
        0.75, gt=0.0, description="CNN input pixel size in mm: extract-features resizes each family's patch to "
        "round(patch size_mm / this) px (foraminal 36 mm -> 48 px, spinal and subarticular 48 mm -> 64 px); "
        "None = image_size"
    )
    epochs: int = Field(
        6, ge=1, description="at most this many epochs (cosine schedule over all of them; early stopping keeps the "
        "best). Real CV at 48 px: 4 -> 6 took the CNN alone 0.587 -> 0.575; its stage took 627 s, 64 px with 4: 686 s"
    )
    batch_size: int = Field(64, ge=2, description="training batch size")
    infer_batch_size: int | None = Field(
        None, ge=1, description="embedding batch size; None = 2x batch_size on CPU, 8x on CUDA"
    )
    lr: float = Field(1e-3, gt=0.0)
    weight_decay: float = Field(1e-4, ge=0.0)
    optimizer: str = Field("adamw", description="timm.optim.create_optimizer_v2 name")
    scheduler: str = Field("cosine", description="timm.scheduler.create_scheduler_v2 name (stepped per batch)")
    warmup_epochs: int = Field(0, ge=0)
    val_frac: float = Field(
        0.1, ge=0.0, lt=0.5, description="share of the training studies held out (grouped by study) to stop early "
        "on their weighted log loss; the weights of the best epoch are kept. 0 = train all ``epochs``"
    )
    patience: int = Field(2, ge=1, description="epochs without a better validation loss before stopping")
    tta_shift_px: int = Field(
        2, ge=0, description="test-time augmentation: also embed the patch shifted by this many pixels up, down, "
        "left and right (at image_size) and average probabilities and features over the 5 views; 0 = off"
    )
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    pca_dims: int | None = Field(
        16, ge=0, description="PCA-reduce the pooled features to this many dims; 0 = drop them (probs only)"
    )
    append_proba: bool = Field(
        True, description="prepend the network's 3 grade probabilities (cnn_0..2) to the (PCA) features"
    )
    test_network: Literal["fold_ensemble", "all_data"] = Field(
        "fold_ensemble",
        description="what embeds rows no fold network held out (test rows, predict): fold_ensemble = the "
        "out-of-fold networks averaged (no extra training: the all-data network was a third of the CNN stage's "
        "CPU time); all_data = one more network fitted on every row",
    )
    align_folds: bool = Field(
        True,
        description="rotate each OOF fold's pooled/PCA features onto the full network's (orthogonal Procrustes "
        "fitted on that fold's training rows), so training and test rows share one feature space",
    )
    device: Literal["auto", "cpu", "cuda"] = "auto"
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="autocast: auto = bf16 (fp16 without bf16 support) on CUDA, off on CPU"
    )
    channels_last: bool = Field(True, description="channels_last memory format (faster depthwise convs on CPU)")
    num_workers: int | None = Field(
        None, ge=0, description="DataLoader worker processes (augmentation); None = 0 on the CPU (workers would take "
        "cores from the network) and up to 4 on CUDA (the GPU waits on augmentation otherwise)"
    )
    deterministic: bool = Field(True, description="deterministic torch algorithms; false enables cudnn.benchmark")
    num_threads: int | None = Field(None, ge=1, description="torch intra-op threads; None = torch default")

    def for_patch(self, size_mm: tuple[float, float]) -> EmbeddingConfig:
        """This config with ``image_size`` fixed for a patch family of ``size_mm`` (see ``image_spacing_mm``)."""
        if self.image_size is not None or self.image_spacing_mm is None:
            return self
        px = max(16, int(round(max(size_mm) / self.image_spacing_mm)))
        return self.model_copy(update={"image_size": px})


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


class _Patches:
    """A torch ``Dataset`` of (patch, label, weight) whose ``transform`` runs per item (in the workers)."""

    def __init__(self, x: Any, y: Any, w: Any, transform: Any = None) -> None:
        self.x, self.y, self.w, self.transform = x, y, w, transform

    def __len__(self) -> int:
        return int(self.x.shape[0])

    def __getitem__(self, i: int) -> tuple[Any, Any, Any]:
        xi = self.x[i]
        if self.transform is not None:
            xi = self.transform(xi)
        return xi, self.y[i], self.w[i]


def augmentation(aug: AugmentConfig, size: tuple[int, int]) -> Any:
    """The torchvision v2 pipeline for one (C, H, W) float patch; None when everything is off."""
    from torchvision.transforms import v2

    steps: list[Any] = []
    if aug.rotate_deg > 0 or aug.scale > 0:
        steps.append(v2.RandomAffine(
            degrees=aug.rotate_deg,
            translate=(aug.max_shift_px / size[1], aug.max_shift_px / size[0]) if aug.max_shift_px > 0 else None,
            scale=(1.0 - aug.scale, 1.0 + aug.scale) if aug.scale > 0 else None,
            interpolation=v2.InterpolationMode.BILINEAR,
            fill=0.0,  # the patches' own "outside the image" value
        ))
    elif aug.max_shift_px >= 1:
        # Shift only: zero-pad + random crop is an integer-pixel translation at ~1/50 of RandomAffine's
        # CPU cost (16 ms per 5x64x64 patch on 2 cores, more than a training step of the frozen net).
        p = int(round(aug.max_shift_px))
        steps.append(v2.RandomCrop(size, padding=p, fill=0.0))
    if aug.vflip:
        steps.append(v2.RandomVerticalFlip(0.5))
    if aug.hflip:
        steps.append(v2.RandomHorizontalFlip(0.5))
    if aug.gamma > 0:
        steps.append(_RandomGamma(aug.gamma))
    if aug.noise_sigma > 0:
        steps.append(v2.GaussianNoise(sigma=aug.noise_sigma, clip=False))
    return v2.Compose(steps) if steps else None


class _RandomGamma:
    """Random intensity gamma for a float patch in ~[0, 1] (values above 1, bright CSF, follow the same curve).

    Hand-written (six lines): torchvision's adjust_gamma clamps float images to [0, 1], which would flatten CSF.
    Draws from torch's global generator, which the DataLoader seeds per worker, so a seed repeats it.
    """

    def __init__(self, g: float) -> None:
        self.g = float(g)

    def __call__(self, x: Any) -> Any:
        import torch

        gamma = float(torch.empty(()).uniform_(-self.g, self.g).exp())
        return x.clamp_min(0.0).pow(gamma)


def _amp_dtype(spec: str, device: Any) -> Any:
    """Autocast dtype for ``spec`` on ``device``; None = full precision."""
    import torch

    if spec == "off" or (spec == "auto" and device.type != "cuda"):
        return None
    if spec == "fp16" or (spec == "auto" and not torch.cuda.is_bf16_supported()):
        return torch.float16
    return torch.bfloat16


class CnnEmbedder:
    """Fine-tune a timm backbone on graded patches, then embed patches with its pooled penultimate layer.

    Learned attributes (set by :meth:`fit` or :meth:`load`): ``model_``, ``in_chans_``, ``input_size_``,
    ``feature_dim_``, ``pca_mean_``/``pca_components_`` (None without PCA), ``device_``, ``history_``
    (mean weighted train loss per epoch), ``val_history_`` / ``best_epoch_`` (early stopping: validation loss per
    epoch and the epoch kept; empty / the last epoch without it), ``seed_``, ``weights_`` (the initial weights:
    name, path, sha256).
    """

    def __init__(self, cfg: EmbeddingConfig | None = None) -> None:
        self.cfg = cfg if cfg is not None else EmbeddingConfig()

    # ------------------------------------------------------------------ fitting
    def fit(
        self, x: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None, seed: int = 0,
        groups: np.ndarray | None = None,
    ) -> CnnEmbedder:
        """Fine-tune on the labeled rows (class weights 1/2/4 × sample_weight); fit PCA on all rows.

        Args:
            x: float32 patches (N, C, H, W).
            y: grades 0/1/2; NaN or -1 marks unlabeled rows (excluded from training).
            sample_weight: optional per-row weights, multiplied with the class weight.
            seed: seeds initialisation, batch order and augmentation (same seed → identical result on CPU).
            groups: study of each row; with ``val_frac`` a share of the studies is held out to stop early
                (without groups, rows are held out one by one).
        """
        import torch

        from radspine.features.cnn_models import build_backbone, init_weights
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
        with torch_runtime(cfg.num_threads, deterministic=cfg.deterministic):
            torch.manual_seed(seed)
            model = build_backbone(cfg.backbone, self.in_chans_, kwargs=cfg.backbone_kwargs)
            self.weights_ = init_weights(model, cfg.backbone, cfg.pretrained, cfg.weights_path)
            self._set_model(model)
            self.feature_dim_ = int(self._features_probe())
            xr = self._resized(x)
            fit_rows, val_rows = _early_stop_split(train, y, groups, cfg.val_frac, seed)
            self.history_, self.val_history_, self.best_epoch_ = self._train(
                xr[fit_rows], y[fit_rows].astype(np.int64), w[fit_rows], seed,
                val=(xr[val_rows], y[val_rows].astype(np.int64), w[val_rows]) if val_rows.size else None)
            self.pca_mean_ = self.pca_components_ = None
            if cfg.pca_dims:
                rows = np.arange(n)
                if n > PCA_ROWS:
                    rows = np.sort(np.random.default_rng(seed).choice(n, PCA_ROWS, replace=False))
                self._fit_pca(self._embed_resized(xr[torch.from_numpy(rows)])[0], seed)
        log.info(
            "CNN %s (%s init) fitted on %d/%d labeled patches %s in %.1fs (device %s)",
            cfg.backbone, self.weights_["name"], train.size, n, tuple(x.shape[1:]), time.perf_counter() - t0,
            self.device_,
        )
        return self

    def _set_model(self, model: Any) -> None:
        import torch

        model = model.to(self.device_)
        if self.cfg.channels_last:
            model = model.to(memory_format=torch.channels_last)
        self.model_ = model
        pre = self.weights_.get("name", "none") != "none"
        self._norm = (_IMAGENET_CENTER, _IMAGENET_SCALE) if pre else (_INPUT_CENTER, _INPUT_SCALE)

    def _features_probe(self) -> int:
        import torch

        self.model_.eval()
        with torch.no_grad():
            probe = torch.zeros((1, self.in_chans_, *self.input_size_), device=self.device_)
            return self.model_.forward_head(self.model_.forward_features(probe), pre_logits=True).shape[1]

    def _resized(self, x: np.ndarray) -> Any:
        """All patches as one CPU tensor at ``input_size_`` (resized once, not per epoch)."""
        import torch
        import torch.nn.functional as F

        xt = torch.from_numpy(np.ascontiguousarray(x))
        if tuple(xt.shape[-2:]) == tuple(self.input_size_):
            return xt
        parts = [F.interpolate(xt[s : s + 512], size=self.input_size_, mode="bilinear", align_corners=False,
                               antialias=True) for s in range(0, xt.shape[0], 512)]
        return torch.cat(parts) if parts else xt.new_zeros((0, xt.shape[1], *self.input_size_))

    def _to_device(self, xb: Any) -> Any:
        """A CPU batch → normalised network input on the device (channels_last if configured)."""
        import torch

        xb = xb.to(self.device_, non_blocking=True)
        c, s = self._norm
        xb = (xb - c) / s
        return xb.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else xb

    def _to_device_raw(self, hb: Any) -> Any:
        import torch

        hb = hb.to(self.device_, non_blocking=True)
        return hb.contiguous(memory_format=torch.channels_last) if self.cfg.channels_last else hb

    def _prefix_split(self) -> Any:
        """``(prefix, rest)`` when the frozen prefix's activations are cached, else None."""
        from radspine.features.cnn_models import split_frozen

        cfg = self.cfg
        if not (cfg.cache_frozen and cfg.freeze_stages > 0 and self.weights_.get("sha256")):
            return None
        if not hasattr(self, "_split"):
            self._split = split_frozen(self.model_, cfg.freeze_stages)
        return self._split

    def _prefix_acts(self, xr: Any) -> Any:
        """Frozen-prefix activations (CPU) of resized patches, from the shared per-patch cache."""
        from radspine.features.cnn_models import PREFIX_CACHE

        cfg = self.cfg
        key = (cfg.backbone, json.dumps(cfg.backbone_kwargs, sort_keys=True), self.weights_["sha256"],
               self.in_chans_, cfg.freeze_stages, tuple(self.input_size_), tuple(self._norm), cfg.channels_last,
               str(self.device_), cfg.amp)
        bs = cfg.infer_batch_size or cfg.batch_size * (8 if self.device_.type == "cuda" else 2)
        return PREFIX_CACHE.get(key, self._prefix_split()[0], xr, self._to_device, bs)

    def _workers(self) -> int:
        import os

        if self.cfg.num_workers is not None:
            return int(self.cfg.num_workers)
        return min(4, os.cpu_count() or 1) if self.device_.type == "cuda" else 0

    def _loader(self, ds: Any, batch_size: int, shuffle: bool, seed: int, drop_last: bool = False) -> Any:
        import torch

        return torch.utils.data.DataLoader(
            ds, batch_size=batch_size, shuffle=shuffle, drop_last=drop_last,
            num_workers=self._workers(), pin_memory=self.device_.type == "cuda",
            persistent_workers=False,
            # The loader's generator fixes batch order and each worker's augmentation seed.
            generator=torch.Generator().manual_seed(int(seed)),
        )

    def _train(self, x: Any, y: np.ndarray, w: np.ndarray, seed: int,
               val: tuple[Any, np.ndarray, np.ndarray] | None = None) -> tuple[list[float], list[float], int]:  # fmt: skip
        """Train for ``cfg.epochs``; with ``val`` (patches, grades, weights) stop after ``cfg.patience`` epochs
        without a better weighted validation loss and keep the best epoch's weights. Returns (train loss per
        epoch, validation loss per epoch, best epoch (1-based; the last one without ``val``))."""
        import torch
        import torch.nn.functional as F
        from timm.optim import create_optimizer_v2
        from timm.scheduler import create_scheduler_v2

        from radspine.features.cnn_models import freeze_stages

        cfg = self.cfg
        model = self.model_
        n = x.shape[0]
        bs = min(cfg.batch_size, n)
        # Freezing only makes sense for pretrained filters: a randomly initialised network trains whole.
        frozen = freeze_stages(model, cfg.freeze_stages if self.weights_.get("sha256") else 0)
        yt, wt = torch.from_numpy(y), torch.from_numpy(w.astype(np.float32))
        cached = self._prefix_split()
        if cached is not None:
            # Frozen pretrained prefix: train the rest on its cached activations (no input augmentation).
            h = self._prefix_acts(x)
            ds, to_dev = _Patches(h, yt, wt), self._to_device_raw

            def forward(xb: Any) -> Any:
                return model.forward_head(cached[1](xb))
        else:
            ds, to_dev, forward = _Patches(x, yt, wt, augmentation(cfg.augment, self.input_size_)), self._to_device, model
        # BatchNorm cannot train on a batch of one: drop a trailing single-row batch.
        loader = self._loader(ds, bs, shuffle=True, seed=seed, drop_last=n % bs == 1)
        opt = create_optimizer_v2(model, opt=cfg.optimizer, lr=cfg.lr, weight_decay=cfg.weight_decay)
        sched, _ = create_scheduler_v2(
            opt, sched=cfg.scheduler, num_epochs=cfg.epochs, warmup_epochs=cfg.warmup_epochs,
            min_lr=cfg.lr * 0.02, step_on_epochs=False, updates_per_epoch=len(loader),
        )
        amp = _amp_dtype(cfg.amp, self.device_)
        # fp16 gradients underflow without loss scaling; bf16 has fp32's range and needs none.
        scaler = torch.amp.GradScaler(self.device_.type, enabled=amp == torch.float16)
        class_w = torch.tensor(SEVERITY_WEIGHTS, dtype=torch.float32, device=self.device_)
        history: list[float] = []
        val_hist: list[float] = []
        best = (np.inf, 0, None)  # (loss, epoch, state)
        step = 0
        for epoch in range(cfg.epochs):
            model.train()
            for mod in frozen:
                mod.eval()  # frozen stages keep their (ImageNet) BN statistics
            total, total_w = 0.0, 0.0
            for xb, yb, wb in loader:
                xb = to_dev(xb)
                yb, wb = yb.to(self.device_, non_blocking=True), wb.to(self.device_, non_blocking=True)
                with torch.autocast(self.device_.type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits = forward(xb)
                # The metric's weighted log loss: each row weighs class_w[grade] × its sample weight.
                rw = class_w[yb] * wb
                loss_sum = (F.cross_entropy(logits.float(), yb, reduction="none") * rw).sum()
                denom = rw.sum().clamp_min(1e-12)
                opt.zero_grad(set_to_none=True)
                scaler.scale(loss_sum / denom).backward()
                scaler.step(opt)
                scaler.update()
                step += 1
                sched.step_update(num_updates=step)
                total += float(loss_sum.detach())
                total_w += float(denom.detach())
            history.append(total / max(total_w, 1e-12))
            if val is not None:
                val_hist.append(self._val_loss(val, cached, forward, to_dev, class_w, amp))
                if val_hist[-1] < best[0] - 1e-6:
                    best = (val_hist[-1], epoch + 1, {k: v.detach().clone() for k, v in model.state_dict().items()})
                elif epoch + 1 - best[1] >= cfg.patience:
                    log.info("CNN early stop after epoch %d (best %d: val loss %.4f)", epoch + 1, best[1], best[0])
                    break
        if best[2] is not None:
            model.load_state_dict(best[2])
        for p in model.parameters():
            p.requires_grad_(True)
        model.eval()
        return history, val_hist, best[1] if best[2] is not None else len(history)

    def _val_loss(self, val: tuple[Any, np.ndarray, np.ndarray], cached: Any, forward: Any, to_dev: Any,
                  class_w: Any, amp: Any) -> float:  # fmt: skip
        """The metric's weighted log loss (1/2/4 × sample weight) of the model on held-out patches."""
        import torch
        import torch.nn.functional as F

        xv, yv, wv = val
        self.model_.eval()
        src = self._prefix_acts(xv) if cached is not None else xv
        bs = self.cfg.infer_batch_size or self.cfg.batch_size * (8 if self.device_.type == "cuda" else 2)
        total, total_w = 0.0, 0.0
        with torch.no_grad():
            for i in range(0, len(yv), bs):
                with torch.autocast(self.device_.type, dtype=amp or torch.float32, enabled=amp is not None):
                    logits = forward(to_dev(src[i : i + bs]))
                yb = torch.from_numpy(yv[i : i + bs]).to(self.device_)
                rw = class_w[yb] * torch.from_numpy(wv[i : i + bs].astype(np.float32)).to(self.device_)
                total += float((F.cross_entropy(logits.float(), yb, reduction="none") * rw).sum())
                total_w += float(rw.sum())
        return total / max(total_w, 1e-12)

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
        x = _check_x(x)
        if x.shape[1] != self.in_chans_:
            raise ModelError(f"patches have {x.shape[1]} channels but the CNN was trained on {self.in_chans_}")
        return self._embed_resized(self._resized(x))

    def _embed_resized(self, xr: Any) -> tuple[np.ndarray, np.ndarray]:
        """Pooled features and probabilities of resized patches; with ``tta_shift_px`` the mean over the patch
        and its four shifted copies (zeros fill what a shift uncovers: the patches' own "outside" value)."""
        import torch.nn.functional as F

        feats, probs = self._embed_view(xr, use_cache=True)
        t = int(getattr(self.cfg, "tta_shift_px", 0) or 0)
        if t <= 0 or xr.shape[0] == 0:
            return feats, probs
        padded = F.pad(xr, (t, t, t, t))
        h, w = xr.shape[-2:]
        for dr, dc in ((-t, 0), (t, 0), (0, -t), (0, t)):
            view = padded[..., t + dr : t + dr + h, t + dc : t + dc + w]
            f, p = self._embed_view(view.contiguous(), use_cache=False)
            feats, probs = feats + f, probs + p
        return feats / 5.0, probs / 5.0

    def _embed_view(self, xr: Any, use_cache: bool) -> tuple[np.ndarray, np.ndarray]:
        import torch

        model = self.model_
        model.eval()
        bs = self.cfg.infer_batch_size or self.cfg.batch_size * (8 if self.device_.type == "cuda" else 2)
        zeros = torch.zeros(xr.shape[0])
        cached = self._prefix_split()
        if cached is not None and use_cache:
            src, to_dev, features = self._prefix_acts(xr), self._to_device_raw, cached[1]
        else:  # a shifted view is not in the per-patch prefix cache: run the whole network on it
            src, to_dev, features = xr, self._to_device, model.forward_features
        loader = self._loader(_Patches(src, zeros, zeros), bs, shuffle=False, seed=0)
        amp = _amp_dtype(self.cfg.amp, self.device_)
        feats, probs = [], []
        with torch.no_grad():
            for xb, _, _ in loader:
                with torch.autocast(self.device_.type, dtype=amp or torch.float32, enabled=amp is not None):
                    fmap = features(to_dev(xb))
                    pooled = model.forward_head(fmap, pre_logits=True)
                    logits = model.forward_head(fmap)
                feats.append(pooled.float().cpu().numpy())
                probs.append(torch.softmax(logits.float(), dim=1).cpu().numpy())
        if not feats:
            return np.zeros((0, self.feature_dim_), np.float32), np.zeros((0, 3), np.float32)
        return np.concatenate(feats), np.concatenate(probs)

    def _run(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        from radspine.torchutil import torch_runtime

        self._check_fitted()
        with torch_runtime(self.cfg.num_threads, deterministic=self.cfg.deterministic):
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
        # A fold ensemble saved here before: load_embedder would take its marker over this bundle.
        for stale in ("ensemble.json", "maps.npz"):
            (d / stale).unlink(missing_ok=True)
        state = {k: v.detach().cpu() for k, v in self.model_.state_dict().items()}
        with atomic_path(d / "model.pt") as tmp:
            torch.save(state, tmp)
        if self.pca_components_ is not None:
            with atomic_path(d / "pca.npz") as tmp, open(tmp, "wb") as fh:
                np.savez(fh, mean=self.pca_mean_, components=self.pca_components_)
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
            "val_history": getattr(self, "val_history_", []),
            "best_epoch": getattr(self, "best_epoch_", len(self.history_)),
            "weights": self.weights_,
            "input_norm": list(self._norm),
            "versions": {"torch": torch.__version__, "timm": timm.__version__},
        }
        # embedder.json goes last: its presence marks a complete bundle.
        with atomic_path(d / "embedder.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
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
        if meta.get("format") != FORMAT or meta.get("format_version") not in FORMAT_VERSION_READ:
            raise ModelError(f"{d}: unsupported embedder format {meta.get('format')!r} v{meta.get('format_version')}")
        conf = dict(meta["config"])
        if meta["format_version"] == 1:
            # v1 bundles predate the pretrained default: they were random-init unless weights_path was set,
            # and their augmentation keys differ (augmentation only matters for training).
            conf.setdefault("pretrained", "none")
            conf.setdefault("freeze_stages", 0)
            conf.setdefault("channels_last", False)  # bit-identical to how v1 embedded
            conf.pop("augment", None)
        try:
            cfg = EmbeddingConfig.model_validate(conf)
        except ValueError as err:
            raise ModelError(f"{d / 'embedder.json'}: invalid embedder config ({str(err).splitlines()[0]})") from None
        if device is not None:
            cfg = cfg.model_copy(update={"device": device})
        self = cls(cfg)
        self.device_ = resolve_device(cfg.device)
        self.in_chans_ = int(meta["in_chans"])
        self.input_size_ = tuple(int(v) for v in meta["input_size"])
        self.feature_dim_ = int(meta["feature_dim"])
        self.seed_ = int(meta["seed"])
        self.history_ = list(meta.get("history", []))
        self.val_history_ = list(meta.get("val_history", []))
        self.best_epoch_ = int(meta.get("best_epoch", len(self.history_)))
        self.weights_ = dict(meta.get("weights") or {"name": "local" if cfg.weights_path else "none"})
        model = build_backbone(cfg.backbone, self.in_chans_, kwargs=cfg.backbone_kwargs)
        try:
            state = torch.load(d / "model.pt", map_location="cpu", weights_only=True)
            model.load_state_dict(state, strict=True)
        except Exception as err:  # noqa: BLE001 - torch raises many types for a corrupt/foreign file
            raise ModelError(f"{d / 'model.pt'}: cannot load CNN weights ({str(err).splitlines()[0]})") from None
        self._set_model(model)
        # v1 bundles always used the fixed (0.5, 0.25) map.
        self._norm = tuple(float(v) for v in meta.get("input_norm", (_INPUT_CENTER, _INPUT_SCALE)))
        self.model_.eval()
        self.pca_mean_ = self.pca_components_ = None
        if cfg.pca_dims:
            try:
                with np.load(d / "pca.npz") as z:
                    self.pca_mean_, self.pca_components_ = z["mean"], z["components"]
            except (OSError, KeyError, ValueError) as err:
                raise ModelError(f"{d / 'pca.npz'}: cannot load PCA ({err})") from None
        return self


def _early_stop_split(rows: np.ndarray, y: np.ndarray, groups: np.ndarray | None, frac: float,
                      seed: int) -> tuple[np.ndarray, np.ndarray]:
    """(rows to fit on, rows to stop early on): about ``frac`` of the labelled ``rows``, whole studies at a time
    when ``groups`` is given (a study's rows are correlated, so holding out single rows would flatter the
    validation loss), drawn with ``seed``. ``frac`` 0 or too few studies: no validation rows."""
    if frac <= 0 or rows.size < 10:
        return rows, rows[:0]
    rng = np.random.default_rng(seed)
    g = np.asarray(groups)[rows] if groups is not None else rows
    studies = rng.permutation(np.unique(g))
    if studies.size < 4:
        return rows, rows[:0]
    n_val = max(1, int(round(frac * studies.size)))
    held = np.isin(g, studies[:n_val])
    return rows[~held], rows[held]


def _procrustes_map(src_train: np.ndarray, dst_train: np.ndarray, src: np.ndarray) -> np.ndarray:
    """Map ``src`` rows from one network's feature space into another's.

    Two independently trained networks (and their PCAs) give unrelated axes, so a model fitted on
    fold-network features would meet a different space on test rows. The rotation is fitted by
    scipy's orthogonal Procrustes on rows both networks trained on (the fold's training rows), so the
    held-out rows' values still come only from the network that never saw them.
    """
    return _apply_map(_procrustes_fit(src_train, dst_train), src)


def _procrustes_fit(src_train: np.ndarray, dst_train: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(source mean, rotation, target mean) of the orthogonal Procrustes map from one feature space to another."""
    from scipy.linalg import orthogonal_procrustes

    mu_s, mu_d = src_train.mean(0), dst_train.mean(0)
    rot, _ = orthogonal_procrustes(src_train - mu_s, dst_train - mu_d)
    return mu_s.astype(np.float64), rot.astype(np.float64), mu_d.astype(np.float64)


def _apply_map(m: tuple[np.ndarray, np.ndarray, np.ndarray], z: np.ndarray) -> np.ndarray:
    mu_s, rot, mu_d = m
    return ((z - mu_s) @ rot + mu_d).astype(np.float32)


class CnnEnsemble:
    """The out-of-fold networks as one embedder for rows none of them held out (``test_network: fold_ensemble``).

    ``transform`` averages the members' outputs: probabilities as they are, pooled/PCA columns after each member's
    map (orthogonal Procrustes) into the first member's space, the space its out-of-fold rows were aligned to.
    Same interface as :class:`CnnEmbedder` for the callers (``transform``, ``predict_proba``, ``save``,
    ``weights_``, ``n_features_out_``, ``cfg``); :func:`load_embedder` reads either.
    """

    def __init__(self, members: list[CnnEmbedder], maps: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None]):
        if not members or len(members) != len(maps):
            raise ModelError("a CNN fold ensemble needs one map (or None) per member network")
        self.members, self.maps = members, maps
        self.cfg = members[0].cfg
        self.weights_ = members[0].weights_

    @property
    def n_features_out_(self) -> int:
        return self.members[0].n_features_out_

    def transform(self, x: np.ndarray) -> np.ndarray:
        """Mean of the members' embeddings (N, n_features_out_) float32, each in the first member's space."""
        n_prob = 3 if self.cfg.append_proba else 0
        total = None
        for emb, m in zip(self.members, self.maps, strict=True):
            z = emb.transform(x).astype(np.float64)
            if m is not None:
                z[:, n_prob:] = _apply_map(m, z[:, n_prob:])
            total = z if total is None else total + z
        return (total / len(self.members)).astype(np.float32)

    def predict_proba(self, x: np.ndarray) -> np.ndarray:
        """Mean of the members' grade probabilities (N, 3)."""
        return np.mean([emb.predict_proba(x) for emb in self.members], axis=0)

    def save(self, directory: str | Path) -> Path:
        """Each member in ``member_<k>/``, the maps in ``maps.npz``, then ``ensemble.json`` (marks a complete bundle)."""
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        for stale in ("embedder.json", "model.pt", "pca.npz"):  # an all-data bundle saved here before
            (d / stale).unlink(missing_ok=True)
        arrays = {}
        for k, (emb, m) in enumerate(zip(self.members, self.maps, strict=True)):
            emb.save(d / f"member_{k}")
            if m is not None:
                arrays.update({f"mu_s_{k}": m[0], f"rot_{k}": m[1], f"mu_d_{k}": m[2]})
        with atomic_path(d / "maps.npz") as tmp, open(tmp, "wb") as fh:
            np.savez(fh, **arrays)
        meta = {"format": ENSEMBLE_FORMAT, "format_version": 1, "members": len(self.members),
                "mapped": [m is not None for m in self.maps]}
        with atomic_path(d / "ensemble.json") as tmp:
            tmp.write_text(json.dumps(meta, indent=2))
        return d

    @classmethod
    def load(cls, directory: str | Path, device: Literal["auto", "cpu", "cuda"] | None = None) -> CnnEnsemble:
        d = Path(directory)
        try:
            meta = json.loads((d / "ensemble.json").read_text())
            mapped = [bool(v) for v in meta["mapped"]]
            with np.load(d / "maps.npz") as z:
                maps = [(z[f"mu_s_{k}"], z[f"rot_{k}"], z[f"mu_d_{k}"]) if on else None for k, on in enumerate(mapped)]
        except (OSError, KeyError, TypeError, ValueError) as err:
            raise ModelError(f"{d}: not a complete CNN fold-ensemble bundle ({err})") from None
        if meta.get("format") != ENSEMBLE_FORMAT or len(mapped) != int(meta.get("members", -1)):
            raise ModelError(f"{d}: unsupported CNN ensemble format {meta.get('format')!r}")
        return cls([CnnEmbedder.load(d / f"member_{k}", device=device) for k in range(len(mapped))], maps)


def load_embedder(directory: str | Path, device: Literal["auto", "cpu", "cuda"] | None = None) -> CnnEmbedder | CnnEnsemble:
    """A saved :class:`CnnEnsemble` (``ensemble.json``) or :class:`CnnEmbedder` (``embedder.json``)."""
    d = Path(directory)
    if (d / "ensemble.json").is_file():
        return CnnEnsemble.load(d, device=device)
    return CnnEmbedder.load(d, device=device)


def oof_embeddings(
    x: np.ndarray,
    y: np.ndarray,
    groups: np.ndarray,
    cfg: EmbeddingConfig | None = None,
    n_folds: int = 3,
    seed: int = 0,
    sample_weight: np.ndarray | None = None,
    folds: np.ndarray | None = None,
) -> tuple[np.ndarray, CnnEmbedder | CnnEnsemble]:
    """Out-of-fold embeddings for training rows plus an embedder for test rows (fold ensemble or all-data network).

    Folds are grouped by study (``groups``) and stratified by grade (unlabeled rows as their own
    stratum), so the network that embeds a study never trained on it; each fold's PCA is fitted on that
    fold's training rows only. With ``cfg.align_folds`` the fold's pooled/PCA columns are rotated onto
    the full network's space (see :func:`_procrustes_map`); probability columns need no alignment.
    Fold k's network uses seed ``seed + 1 + k``; the full one uses ``seed``.

    ``folds`` (one fold index per row, constant within a study) replaces the internal split: pass the
    study folds that the graders' CV uses (``cv_fold``) so both stages hold out the same studies. A fold
    whose training rows have fewer than 2 labelled patches leaves its held-out rows NaN.

    With ``cfg.test_network == "fold_ensemble"`` (default) no all-data network is trained: ``full`` is the
    :class:`CnnEnsemble` of the fold networks, and the folds' pooled/PCA columns are rotated onto the first
    fold network's space (fitted on up to ``ALIGN_ROWS`` rows both networks trained on).

    Returns:
        ``(oof, full)``: oof (N, D) float32; ``full`` embeds new rows; ``full.oof_folds_`` holds each row's fold.
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
    # PCA cannot have more axes than a fold has rows: a small (partial) dataset gets fewer CNN dims, the
    # same for every fold and the saved network, instead of an error.
    smallest = min([n, *(tr.size for tr, _ in splits)])
    if cfg.pca_dims and cfg.pca_dims > smallest - 1:
        k = max(1, smallest - 1)
        log.warning("CNN: %d patches in the smallest fold; pca_dims %d -> %d", smallest, cfg.pca_dims, k)
        cfg = cfg.model_copy(update={"pca_dims": k})
    ensemble = cfg.test_network == "fold_ensemble"
    n_prob = 3 if cfg.append_proba else 0
    full: CnnEmbedder | CnnEnsemble | None = None
    z_full = None
    if not ensemble:
        full = CnnEmbedder(cfg).fit(x, y, sample_weight, seed=seed, groups=groups)
        if cfg.align_folds and full.n_features_out_ > n_prob:
            z_full = full.transform(x)[:, n_prob:]
    members: list[CnnEmbedder] = []
    maps: list[tuple[np.ndarray, np.ndarray, np.ndarray] | None] = []
    ref: tuple[CnnEmbedder, np.ndarray] | None = None  # the fold network whose space the others are mapped to
    rng = np.random.default_rng(seed)
    for k, (tr, va) in enumerate(splits):
        folds[va] = k
        if np.count_nonzero(~np.isnan(y[tr])) < 2:
            log.warning("CNN OOF fold %d/%d: fewer than 2 labelled training patches; its rows stay NaN", k + 1, len(splits))
            continue
        emb = CnnEmbedder(cfg).fit(x[tr], y[tr], None if sample_weight is None else sample_weight[tr],
                                   seed=seed + 1 + k, groups=groups[tr])
        part = emb.transform(x[va])
        align = cfg.align_folds and emb.n_features_out_ > n_prob
        m = None
        if align and z_full is not None:
            part[:, n_prob:] = _procrustes_map(emb.transform(x[tr])[:, n_prob:], z_full[tr], part[:, n_prob:])
        elif align and ref is not None:
            # Fitted on rows both networks trained on (a sample: a rotation of pca_dims axes needs few rows). With
            # 2 folds there are none (each trained on the other's held-out rows): then on all rows, an unsupervised
            # rotation of a few axes, as the all-data variant's map is fitted on rows its network trained on.
            both = np.setdiff1d(tr, ref[1])
            if both.size < 2 * (emb.n_features_out_ - n_prob) + 2:
                both = np.arange(n)
            if both.size > ALIGN_ROWS:
                both = np.sort(rng.choice(both, ALIGN_ROWS, replace=False))
            m = _procrustes_fit(emb.transform(x[both])[:, n_prob:], ref[0].transform(x[both])[:, n_prob:])
            part[:, n_prob:] = _apply_map(m, part[:, n_prob:])
        if ensemble:
            if ref is None:
                ref = (emb, va)
            members.append(emb)
            maps.append(m)
        if oof is None:
            oof = np.full((n, part.shape[1]), np.nan, dtype=np.float32)
        oof[va] = part
        log.info("CNN OOF fold %d/%d: trained on %d rows, embedded %d", k + 1, len(splits), tr.size, va.size)
    if ensemble:
        # No fold could train (too few labels in every fold): one network on all rows embeds everything.
        full = CnnEnsemble(members, maps) if members else CnnEmbedder(cfg).fit(x, y, sample_weight, seed=seed,
                                                                                groups=groups)
    full.oof_folds_ = folds
    if oof is None:
        oof = np.full((n, full.n_features_out_), np.nan, dtype=np.float32)
    return oof, full


__all__ = [
    "AugmentConfig",
    "CnnEmbedder",
    "CnnEnsemble",
    "EmbeddingConfig",
    "embedding_columns",
    "load_embedder",
    "oof_embeddings",
]
