"""Torch plumbing shared by the localizer and the CNN embedder: device choice, threads, determinism.

One copy for every stage (it used to live twice, in ``localize.net`` and ``features.cnn_models``).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

import torch

from radspine.errors import ConfigError


def resolve_device(spec: str) -> torch.device:
    """``"auto"`` → CUDA when available else CPU; ``"cpu"``/``"cuda"`` explicit.

    Raises:
        ConfigError: ``"cuda"`` requested but no CUDA device is available, or an unknown spec.
    """
    if spec == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if spec == "cpu":
        return torch.device("cpu")
    if spec == "cuda" or str(spec).startswith("cuda:"):
        if not torch.cuda.is_available():
            raise ConfigError(f"device={spec!r} but torch sees no CUDA device")
        return torch.device(spec)
    raise ConfigError(f"device must be auto, cpu or cuda, not {spec!r}")


@contextlib.contextmanager
def torch_runtime(num_threads: int | None, deterministic: bool = True) -> Iterator[None]:
    """Set intra-op threads (None/0 = unchanged) and, optionally, deterministic algorithms for a block.

    These are process-global torch switches, so the caller's settings are restored afterwards and other
    stages are unaffected. ``deterministic=False`` turns on ``cudnn.benchmark`` (faster on a GPU when
    bit-exact repeats are not requested).
    """
    old_threads = torch.get_num_threads()
    old_det = torch.are_deterministic_algorithms_enabled()
    old_warn = torch.is_deterministic_algorithms_warn_only_enabled()
    old_cudnn = (torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        if num_threads:
            torch.set_num_threads(int(num_threads))
        if deterministic:
            # warn_only: a few CUDA kernels have no deterministic variant; CPU results stay bit-exact.
            torch.use_deterministic_algorithms(True, warn_only=True)
            torch.backends.cudnn.deterministic = True
            torch.backends.cudnn.benchmark = False
        else:
            torch.backends.cudnn.benchmark = True
        yield
    finally:
        torch.set_num_threads(old_threads)
        torch.use_deterministic_algorithms(old_det, warn_only=old_warn)
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = old_cudnn


@contextlib.contextmanager
def torch_threads(n: int | None) -> Iterator[None]:
    """Run with ``n`` torch CPU threads (0/None = unchanged), restoring the caller's setting afterwards."""
    before = torch.get_num_threads()
    if n:
        torch.set_num_threads(int(n))
    try:
        yield
    finally:
        torch.set_num_threads(before)
