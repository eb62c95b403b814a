"""One prepared GPU check of the CNN embedder: train + embed on CPU and (when present) CUDA; prints JSON.

    python benchmarks/gpu_check.py [--patches 768] [--threads 2] [--epochs 1]

Uses the default EmbeddingConfig (pretrained EfficientNet-Lite0 when the weights package is installed) on
blob patches shaped like the foraminal family (5 slices × 64 × 64). Reports patches/s for training and
embedding per device, the AMP dtype, and checks: identical output shapes across devices, finite outputs,
same-seed repeat on CPU identical. With no CUDA device the JSON says so and carries the CPU figures only.
Exit status 1 when a check fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import time

import numpy as np


def _blobs(n: int, chans: int = 5, size: int = 64, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Bright discs whose radius encodes the grade (a learnable, cheap signal)."""
    rng = np.random.default_rng(seed)
    y = np.arange(n) % 3
    yy, xx = np.mgrid[:size, :size] - size / 2 + 0.5
    r = np.hypot(yy, xx)[None]
    x = 0.2 + 0.6 * (r < (size / 12) * (1 + y)[:, None, None]) + rng.normal(0, 0.1, (n, size, size))
    return np.repeat(x[:, None], chans, 1).astype(np.float32), y.astype(float)


def _run(device: str, x: np.ndarray, y: np.ndarray, args: argparse.Namespace) -> tuple[dict, np.ndarray]:
    import torch

    from radspine.features.embeddings import CnnEmbedder, EmbeddingConfig, _amp_dtype

    cuda = device == "cuda"
    cfg = EmbeddingConfig(
        device=device, epochs=args.epochs, num_threads=args.threads, pca_dims=8,
        # GPU: bigger batches, loader workers, cudnn.benchmark (no bit-exact repeat requested)
        batch_size=256 if cuda else 64, num_workers=4 if cuda else 0, deterministic=not cuda,
    )
    emb = CnnEmbedder(cfg).fit(x[:64], y[:64])  # warm-up: kernels, allocator, cudnn autotune
    t0 = time.perf_counter()
    emb = CnnEmbedder(cfg).fit(x, y, seed=0)
    if cuda:
        torch.cuda.synchronize()
    t_fit = time.perf_counter() - t0
    t0 = time.perf_counter()
    z = emb.transform(x)
    if cuda:
        torch.cuda.synchronize()
    t_emb = time.perf_counter() - t0
    amp = _amp_dtype(cfg.amp, emb.device_)
    row = {
        "device": str(emb.device_),
        "amp": str(amp).replace("torch.", "") if amp is not None else "off",
        "weights": emb.weights_["name"],
        "batch_size": cfg.batch_size,
        "num_workers": cfg.num_workers,
        # fit = epochs × training + one embedding pass for PCA
        "fit_patches_per_s": round(x.shape[0] * cfg.epochs / t_fit, 1),
        "embed_patches_per_s": round(x.shape[0] / t_emb, 1),
        "shape": list(z.shape),
        "finite": bool(np.isfinite(z).all()),
        "history": [round(h, 4) for h in emb.history_],
    }
    if cuda:
        row["gpu"] = torch.cuda.get_device_name(0)
        row["max_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
    return row, z


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--patches", type=int, default=768)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=1)
    args = ap.parse_args()

    import torch

    x, y = _blobs(args.patches)
    out: dict = {"torch": torch.__version__, "cuda_available": torch.cuda.is_available(), "patches": args.patches,
                 "patch_shape": list(x.shape[1:]), "runs": []}
    cpu, z_cpu = _run("cpu", x, y, args)
    out["runs"].append(cpu)
    checks = {"cpu_finite": cpu["finite"]}
    # same seed, same device → identical (the tested CPU default)
    small = x[:96], y[:96]
    from radspine.features.embeddings import CnnEmbedder, EmbeddingConfig

    cfg = EmbeddingConfig(device="cpu", epochs=1, num_threads=args.threads, pca_dims=4)
    a = CnnEmbedder(cfg).fit(*small, seed=1).transform(small[0])
    b = CnnEmbedder(cfg).fit(*small, seed=1).transform(small[0])
    checks["cpu_repeat_identical"] = bool(np.array_equal(a, b))
    if torch.cuda.is_available():
        gpu, z_gpu = _run("cuda", x, y, args)
        out["runs"].append(gpu)
        checks["cuda_finite"] = gpu["finite"]
        checks["same_shape"] = list(z_gpu.shape) == list(z_cpu.shape)
        out["speedup_fit"] = round(gpu["fit_patches_per_s"] / cpu["fit_patches_per_s"], 1)
        out["speedup_embed"] = round(gpu["embed_patches_per_s"] / cpu["embed_patches_per_s"], 1)
    else:
        out["note"] = "no CUDA device: CPU figures only"
    out["checks"] = checks
    out["ok"] = all(checks.values())
    print(json.dumps(out, indent=2))
    return 0 if out["ok"] else 1


if __name__ == "__main__":
    sys.exit(main())
