"""CNN embedding throughput: training / inference patches per second on CPU (and CUDA when present).

Prints one JSON object. Example (what the closing note reports)::

    python benchmarks/embed_bench.py --threads 2 --oof-patches 1500

Patches are synthetic (noisy blobs, default 5 slices × 64 × 64), so the figures measure speed only.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import time

import numpy as np


def _patches(n: int, chans: int, size: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Random patches with a blob whose radius encodes the grade, 5 patches per fake study."""
    rng = np.random.default_rng(seed)
    y = rng.choice(3, size=n, p=[0.7, 0.2, 0.1])
    yy, xx = np.mgrid[:size, :size] - size / 2
    r = np.hypot(yy, xx)[None]
    radius = (size / 10) * (1 + y)[:, None, None]
    x = (r < radius).astype(np.float32)[:, None].repeat(chans, 1) * 0.7
    x += rng.normal(0, 0.1, x.shape).astype(np.float32)
    return x.astype(np.float32), y.astype(float), np.arange(n) // 5


def _throughput(label: str, device: str, x: np.ndarray, y: np.ndarray, threads: int) -> dict:
    """One epoch of training and one embedding pass; ``label`` is "default" or a timm model name."""
    from radspine.features.embeddings import CnnEmbedder, EmbeddingConfig

    base = EmbeddingConfig(epochs=1, device=device, num_threads=threads)
    cfg = base if label == "default" else base.model_copy(update={"backbone": label, "backbone_kwargs": {}})
    emb = CnnEmbedder(cfg)
    emb.fit(x[:64], y[:64])  # warm-up (allocator, kernels)
    t0, c0 = time.perf_counter(), time.process_time()
    emb.fit(x, y)
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
    t0, c0 = time.perf_counter(), time.process_time()
    z = emb.transform(x)
    t_inf, c_inf = time.perf_counter() - t0, time.process_time() - c0
    n_params = sum(p.numel() for p in emb.model_.parameters())
    n = x.shape[0]
    return {
        "model": label,
        "backbone": cfg.backbone,
        "backbone_kwargs": cfg.backbone_kwargs,
        "device": device,
        "params_M": round(n_params / 1e6, 3),
        "embed_dim": int(z.shape[1]),
        "train_patches_per_s": round(n / t_train, 1),
        "infer_patches_per_s": round(n / t_inf, 1),
        # CPU-seconds per patch: on a shared machine wall time depends on neighbours, this does not.
        "train_cpu_ms_per_patch": round(1000 * c_train / n, 2),
        "infer_cpu_ms_per_patch": round(1000 * c_inf / n, 2),
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="default,resnet10t,resnet18,mobilenetv3_small_100")
    ap.add_argument("--patches", type=int, default=384, help="patches per throughput run")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--chans", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--oof-patches", type=int, default=1500, help="0 skips the whole-OOF timing")
    args = ap.parse_args()

    import timm
    import torch

    from radspine.features.embeddings import EmbeddingConfig, oof_embeddings

    x, y, _ = _patches(args.patches, args.chans, args.size)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = [
        _throughput(b, d, x, y, args.threads) for d in devices for b in args.backbones.split(",") if b
    ]
    out: dict = {
        "patch_shape": [args.chans, args.size, args.size],
        "threads": args.threads,
        "cpu": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch": torch.__version__,
        "timm": timm.__version__,
        "throughput": rows,
    }
    if args.oof_patches:
        default = EmbeddingConfig(num_threads=args.threads, device="cpu")
        xo, yo, go = _patches(args.oof_patches, args.chans, args.size, seed=1)
        t0, c0 = time.perf_counter(), time.process_time()
        oof, full = oof_embeddings(xo, yo, go, default, n_folds=3, seed=0)
        cpu = time.process_time() - c0
        out["oof_default_cpu"] = {
            "backbone": default.backbone,
            "backbone_kwargs": default.backbone_kwargs,
            "image_size": args.size,
            "epochs": default.epochs,
            "patches": args.oof_patches,
            "n_folds": 3,
            "wall_seconds": round(time.perf_counter() - t0, 1),
            "cpu_seconds": round(cpu, 1),
            # what the run takes on an otherwise idle machine with `threads` cores
            "idle_estimate_seconds": round(cpu / args.threads, 1),
            "embed_dim": int(oof.shape[1]),
        }
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
