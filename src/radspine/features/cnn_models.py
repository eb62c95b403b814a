"""timm backbones for patch embeddings: construction, local weights, device and thread control.

Nothing here downloads: models are always created with ``pretrained=False`` and optional weights come
from a local file only.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import torch
from torch import nn

from radspine.errors import ConfigError, ModelError

log = logging.getLogger(__name__)

N_GRADES = 3


def build_backbone(
    name: str, in_chans: int, num_classes: int = N_GRADES, kwargs: Mapping[str, Any] | None = None
) -> nn.Module:
    """A randomly initialised timm model (``pretrained=False`` always) with ``in_chans`` input channels.

    Raises:
        ConfigError: unknown backbone name or keyword arguments timm rejects.
    """
    import timm

    if not timm.is_model(name):
        raise ConfigError(f"embeddings.backbone: unknown timm model {name!r}")
    try:
        return timm.create_model(
            name, pretrained=False, in_chans=int(in_chans), num_classes=num_classes, **dict(kwargs or {})
        )
    except TypeError as err:
        raise ConfigError(f"embeddings.backbone_kwargs rejected by timm model {name!r}: {err}") from None


def _prefixed(keys: str | list[str] | tuple[str, ...] | None) -> tuple[str, ...]:
    if keys is None:
        return ()
    if isinstance(keys, str):
        keys = (keys,)
    return tuple(k + "." for k in keys)


def load_local_weights(model: nn.Module, path: str | Path) -> dict[str, list[str]]:
    """Load a local timm state dict into ``model``: classifier dropped, first conv adapted to in_chans.

    The first-conv weights are adapted with timm's own ``adapt_input_conv`` (the rule timm uses for its
    pretrained weights: repeat/average RGB filters); tensors whose shapes still differ (e.g. a narrower
    variant) are skipped with a warning and the rest is loaded with ``strict=False``.

    Returns:
        ``{"loaded": [...], "skipped": [...], "missing": [...]}`` parameter names.

    Raises:
        ModelError: the file is missing, unreadable, or matches none of the model's parameters.
    """
    from timm.models import adapt_input_conv, load_state_dict

    path = Path(path)
    if not path.is_file():
        raise ModelError(f"{path}: pretrained weights file not found")
    try:
        # timm's loader unwraps {"state_dict"/"model": ...} checkpoints and strips "module." prefixes;
        # weights_only=True so a weights file can never execute code.
        state = load_state_dict(str(path), use_ema=False, device="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise ModelError(f"{path}: cannot read weights file ({type(err).__name__}: {err})") from None

    cfg = getattr(model, "pretrained_cfg", {}) or {}
    classifier = _prefixed(cfg.get("classifier"))
    first_conv = tuple(p + "weight" for p in _prefixed(cfg.get("first_conv")))
    own = model.state_dict()
    keep: dict[str, torch.Tensor] = {}
    skipped: list[str] = []
    for key, value in state.items():
        if classifier and key.startswith(classifier):
            continue
        if key not in own:
            skipped.append(key)
            continue
        if key in first_conv and value.ndim == 4 and value.shape[1] != own[key].shape[1]:
            value = adapt_input_conv(int(own[key].shape[1]), value.float())
        if tuple(value.shape) != tuple(own[key].shape):
            skipped.append(key)
            continue
        keep[key] = value
    # Buffers such as bn*.num_batches_tracked (shape ()) match across any two nets: require a weight.
    params = {name for name, _ in model.named_parameters()}
    if not params.intersection(keep):
        raise ModelError(f"{path}: no tensor matches the model's parameters (wrong backbone?)")
    result = model.load_state_dict(keep, strict=False)
    missing = [k for k in result.missing_keys if not (classifier and k.startswith(classifier))]
    if skipped or missing:
        log.warning(
            "%s: loaded %d tensors, skipped %d (shape/name mismatch), %d left at random init",
            path.name, len(keep), len(skipped), len(missing),
        )
    return {"loaded": sorted(keep), "skipped": skipped, "missing": missing}

