"""CNN embedding throughput and the CNN-only ablation, on CPU (and CUDA when present).

Prints one JSON object. Examples::

    python benchmarks/embed_bench.py --threads 2 --oof-patches 1500
    # issue 12: throughput of the default and the previous default, plus the phantom ablation
    python benchmarks/embed_bench.py --threads 2 --backbones default,previous --oof-patches 0 \
        --ablation-studies 40 --ablation-size 96 --trials 4
    # the full target (>= 100 studies)
    python benchmarks/embed_bench.py --ablation-studies 120 --ablation-size 128 --trials 20

Throughput patches are synthetic (noisy blobs, default 5 slices × 64 × 64): speed only. The ablation
writes a phantom (``radspine.synth.make_dataset``), runs ``extract_features`` once per CNN config
(``default`` = EmbeddingConfig(), ``previous`` = the issue-4 quarter-width resnet10t from scratch) and
``tune`` on each table; it reports priors-only, merged, radiomics-only and CNN-only CV scores and the
extract-features seconds per study (whole stage and CNN part).
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


def previous_default() -> dict:
    """The embedding settings before issue 12 (quarter-width resnet10t from scratch, 32 px, 4 epochs)."""
    return dict(backbone="resnet10t", backbone_kwargs={"channels": [16, 32, 64, 128], "stem_width": 16},
                pretrained="none", freeze_stages=0, image_size=32, epochs=4, lr=2e-3, channels_last=False)


def named_config(label: str, **kw):
    """``default`` (EmbeddingConfig()), ``previous`` (:func:`previous_default`) or a timm model name."""
    from radspine.features.embeddings import EmbeddingConfig

    if label == "default":
        return EmbeddingConfig(**kw)
    if label == "previous":
        return EmbeddingConfig(**{**previous_default(), **kw})
    return EmbeddingConfig(**{"backbone": label, "backbone_kwargs": {}, "pretrained": "none",
                              "freeze_stages": 0, **kw})


def _throughput(label: str, device: str, x: np.ndarray, y: np.ndarray, threads: int) -> dict:
    """One epoch of training and one embedding pass; ``label`` as in :func:`named_config`."""
    from radspine.features.embeddings import CnnEmbedder

    cfg = named_config(label, epochs=1, device=device, num_threads=threads)
    from radspine.features.cnn_models import PREFIX_CACHE

    emb = CnnEmbedder(cfg)
    emb.fit(x[:64], y[:64])  # warm-up (allocator, kernels)
    # Cold figures: the frozen-prefix cache starts empty (a fit computes each patch's prefix once).
    PREFIX_CACHE.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    emb.fit(x, y)
    if device == "cuda":
        import torch

        torch.cuda.synchronize()
    t_train, c_train = time.perf_counter() - t0, time.process_time() - c0
    PREFIX_CACHE.clear()
    t0, c0 = time.perf_counter(), time.process_time()
    z = emb.transform(x)
    t_inf, c_inf = time.perf_counter() - t0, time.process_time() - c0
    # Warm: what the OOF fold networks pay once the prefix of every patch is cached.
    t0 = time.perf_counter()
    emb.transform(x)
    t_warm = time.perf_counter() - t0
    n_params = sum(p.numel() for p in emb.model_.parameters())
    n = x.shape[0]
    return {
        "model": label,
        "backbone": cfg.backbone,
        "weights": emb.weights_["name"],
        "image_size": cfg.image_size,
        "freeze_stages": cfg.freeze_stages,
        "backbone_kwargs": cfg.backbone_kwargs,
        "device": device,
        "params_M": round(n_params / 1e6, 3),
        "embed_dim": int(z.shape[1]),
        "train_patches_per_s": round(n / t_train, 1),
        "infer_patches_per_s": round(n / t_inf, 1),
        "infer_patches_per_s_prefix_cached": round(n / t_warm, 1),
        # CPU-seconds per patch: on a shared machine wall time depends on neighbours, this does not.
        "train_cpu_ms_per_patch": round(1000 * c_train / n, 2),
        "infer_cpu_ms_per_patch": round(1000 * c_inf / n, 2),
    }


def cnn_proba_score(table, grades: np.ndarray) -> dict:
    """Weighted log loss (1/2/4) of the OOF CNN grade probabilities (cnn_0..2) vs fold priors, per group.

    A tuning-free CNN-only figure: every row's probabilities come from the network that did not train on
    its cv_fold; the prior of a row is the grade frequency of the other folds in its group.
    """
    w = np.array([1.0, 2.0, 4.0])
    out: dict = {}

    def ll(q: np.ndarray, yi: np.ndarray, ww: np.ndarray) -> float:
        return float(-(ww * np.log(q[np.arange(len(yi)), yi])).sum())

    lab = ~np.isnan(grades) & (table["has_cnn"].to_numpy() == 1.0)
    probs = table[["cnn_0", "cnn_1", "cnn_2"]].to_numpy(dtype=float)
    folds = table["cv_fold"].to_numpy()
    tot = {"cnn": 0.0, "prior": 0.0, "w": 0.0}
    for g in sorted(table["group"].unique()):
        m = lab & (table["group"].to_numpy() == g)
        if not m.any():
            continue
        yi = grades[m].astype(int)
        p = np.clip(probs[m], 1e-15, 1.0)
        p /= p.sum(1, keepdims=True)
        prior = np.empty_like(p)
        for f in np.unique(folds[m]):
            other = m & (folds != f)
            freq = np.bincount(grades[other].astype(int), minlength=3) + 1.0
            prior[folds[m] == f] = freq / freq.sum()
        ww = w[yi]
        out[g] = {"cnn": round(ll(p, yi, ww) / ww.sum(), 4), "prior": round(ll(prior, yi, ww) / ww.sum(), 4),
                  "rows": int(m.sum())}
        out[g]["ratio"] = round(out[g]["cnn"] / out[g]["prior"], 3)
        tot["cnn"] += ll(p, yi, ww)
        tot["prior"] += ll(prior, yi, ww)
        tot["w"] += ww.sum()
    out["all"] = {"cnn": round(tot["cnn"] / tot["w"], 4), "prior": round(tot["prior"] / tot["w"], 4),
                  "ratio": round(tot["cnn"] / tot["prior"], 3)}
    return out


def ablation(studies: int, size: int, trials: int, threads: int, labels_: list[str], seed: int = 0) -> dict:
    """Phantom → extract-features per CNN config → tune: CV scores and extract seconds per study."""
    import tempfile
    from pathlib import Path

    import optuna

    from radspine.commands.tune import load_labels
    from radspine.features.config import FeaturesConfig
    from radspine.features.extract import extract_features
    from radspine.models.tune import TuneConfig, align_grades, load_features, tune
    from radspine.synth import make_dataset

    optuna.logging.set_verbosity(optuna.logging.WARNING)
    out: dict = {"studies": studies, "size": size, "trials": trials, "folds": 3, "runs": {}}
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "data"
        t0 = time.perf_counter()
        make_dataset(data, train_studies=studies, size=size, seed=seed)
        out["phantom_seconds"] = round(time.perf_counter() - t0, 1)
        labels = load_labels(data)
        for label in labels_:
            cfg = FeaturesConfig(embeddings=named_config(label, device="cpu", num_threads=threads), seed=seed)
            feat = Path(tmp) / f"features_{label}"
            t0, c0 = time.perf_counter(), time.process_time()
            extract_features(data, "train", feat, cfg=cfg, workers=1)
            wall = time.perf_counter() - t0
            table, meta = load_features(feat)
            direct = cnn_proba_score(table, align_grades(table, labels))
            t1 = time.perf_counter()
            rep = tune(table, labels, Path(tmp) / f"model_{label}", meta,
                       TuneConfig(trials=trials, folds=3, seed=seed, n_jobs=1, ablations=True))
            abl = rep["ablations"]
            prior = rep["priors_only_score"]
            scores = {k: round(v["after"]["score"], 4) for k, v in abl.items()}
            out["runs"][label] = {
                "weights": (meta.get("cnn") or {}).get("weights"),
                "extract_seconds": round(wall, 1),
                "extract_seconds_per_study": round(wall / studies, 2),
                "cnn_seconds_per_study": round(float(meta.get("seconds_cnn", np.nan)) / studies, 2),
                "extract_cpu_seconds_main_process": round(time.process_time() - c0, 1),
                "tune_seconds": round(time.perf_counter() - t1, 1),
                "priors_only": round(prior, 4),
                "cv_score": round(rep["score"], 4),
                "ablations_after": scores,
                "cnn_only_vs_priors": round(scores.get("cnn_only", np.nan) / prior, 3),
                # tuning-free: OOF network probabilities vs fold priors (weighted log loss)
                "cnn_proba_vs_priors": direct,
                "merged_vs_radiomics_only": round(scores.get("merged", np.nan) / scores.get("radiomics_only", np.nan), 3),
            }
            print(json.dumps({label: out["runs"][label]}), flush=True)  # partial results survive a timeout
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--backbones", default="default,resnet10t,resnet18,mobilenetv3_small_100")
    ap.add_argument("--patches", type=int, default=384, help="patches per throughput run")
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--chans", type=int, default=5)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--oof-patches", type=int, default=1500, help="0 skips the whole-OOF timing")
    ap.add_argument("--ablation-studies", type=int, default=0, help="phantom studies for the ablation; 0 = skip")
    ap.add_argument("--ablation-size", type=int, default=96, help="phantom image size")
    ap.add_argument("--ablation-configs", default="default,previous")
    ap.add_argument("--trials", type=int, default=4, help="tuning trials per backend in the ablation")
    args = ap.parse_args()

    import timm
    import torch

    from radspine.features.embeddings import EmbeddingConfig, oof_embeddings

    x, y, _ = _patches(args.patches, args.chans, args.size)
    devices = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])
    rows = []
    for d in devices:
        for b in filter(None, args.backbones.split(",")):
            rows.append(_throughput(b, d, x, y, args.threads))
            print(json.dumps(rows[-1]), flush=True)
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
    if args.ablation_studies:
        out["ablation"] = ablation(args.ablation_studies, args.ablation_size, args.trials, args.threads,
                                   [c for c in args.ablation_configs.split(",") if c])
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
