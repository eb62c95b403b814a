"""Localizer generalisation benchmark: train on one phantom family, test on settings training never saw.

    .venv/bin/python benchmarks/localize_bench.py [--model DIR | --train-studies 24] [--test-studies 4]
                                                  [--epochs 12] [--seed 0] [--out bench.json]

Training family (unless ``--model`` gives a trained bundle, e.g. the shipped one): clean phantom studies
(``QuirkConfig.none()``: centred spine, usual FOV, thick slices, phantom contrasts) plus one domain-randomised
copy each (:mod:`radspine.localize.domain`). Test families, each from its own seed: ``same`` (other seeds of
the training family), ``random_contrast`` (random tissue tables: other contrast orderings), ``large_fov``
(300-450 mm), ``offcentre`` (FOV planned up to ±60 mm off the spine), ``thin`` (30-80 thin slices),
``flipped`` (other in-plane conventions) and ``all`` (everything at once). Reports per family and condition:
median mm, share within 5/10 mm, level accuracy, and the confidence check (within 10 mm among points with
confidence ≥ 0.9), as JSON on stdout and in ``--out``.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time
from pathlib import Path

FAMILIES = {
    "same": {},
    "random_contrast": {"random_contrast": 1.0},
    "large_fov": {"large_fov": 1.0},
    "offcentre": {"spine_offcentre": 1.0},
    "thin": {"thin_slices": 1.0},
    "flipped": {"flipped_orientation": 1.0},
    "all": {"random_contrast": 1.0, "large_fov": 0.5, "spine_offcentre": 1.0, "thin_slices": 0.5,
            "flipped_orientation": 0.5},
}
SIZE = 128


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", type=Path, default=None, help="trained localizer bundle (skip training)")
    ap.add_argument("--train-studies", type=int, default=24)
    ap.add_argument("--test-studies", type=int, default=4)
    ap.add_argument("--epochs", type=int, default=12)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--families", default=",".join(FAMILIES))
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd
    import torch

    from radspine.localize import Localizer, LocalizerConfig
    from radspine.localize.domain import randomised_loaders
    from radspine.localize.train import (
        _train_on,
        _TrainData,
        confidence_check,
        evaluate,
        normalised_coordinates,
        resolve_truth,
    )
    from radspine.synth import QuirkConfig, make_dataset

    torch.set_num_threads(1)
    result: dict = {"seed": args.seed, "size": SIZE, "families": {}}
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        if args.model is None:
            quirks = QuirkConfig.none()
            make_dataset(tmp / "train", args.train_studies, 0, seed=args.seed, size=SIZE, quirks=quirks, workers=1)
            loaders, coords = randomised_loaders(tmp / "train", args.seed, 1, {"size": SIZE, "quirks": quirks})
            cfg = LocalizerConfig(epochs=args.epochs, device="cpu", holdout_frac=0.0)
            data = _TrainData(loaders, coords, cfg, args.seed, source="bench")
            _train_on(data, tmp / "model", cfg, args.seed)
            model_dir = tmp / "model"
            result["trained"] = {"studies": args.train_studies, "epochs": args.epochs, "family": "none+DR",
                                 "seconds": round(time.perf_counter() - t0, 1)}  # fmt: skip
        else:
            model_dir = args.model
            result["trained"] = {"model": str(args.model)}
        loc = Localizer.load(model_dir, device="cpu")
        from radspine.io.dataset import Dataset
        from radspine.io.volumes import load_study_volumes

        for k, (name, over) in enumerate(FAMILIES.items()):
            if name not in args.families.split(","):
                continue
            q = QuirkConfig(**{**QuirkConfig.none().__dict__, **over})
            root = tmp / f"test_{name}"
            make_dataset(root, args.test_studies, 0, seed=args.seed + 1000 + k, size=SIZE, quirks=q, workers=1)
            ds = Dataset.open(root)
            coords = normalised_coordinates(ds.coordinates)
            frames, truths = [], {}
            t1 = time.perf_counter()
            for st in ds.studies("train"):
                vols = load_study_volumes(st)
                truths[st.study_id] = resolve_truth(vols, coords[coords.study_id == st.study_id])
                frames.append(loc.predict_volumes(st.study_id, vols))
            pred = pd.concat(frames, ignore_index=True)
            rep = evaluate(pred, truths)
            rep["confidence_check"] = confidence_check(pred, truths)
            rep["seconds_per_study"] = round((time.perf_counter() - t1) / max(len(frames), 1), 2)
            result["families"][name] = rep
            o = rep["overall"]
            print(f"{name:16s} median {o['median_mm']:.1f} mm  ≤5 {o['within_5mm']:.2f}  ≤10 {o['within_10mm']:.2f}  "
                  f"canal level acc {rep['spinal_canal_stenosis'].get('level_accuracy', float('nan')):.2f}", flush=True)
    result["wall_seconds"] = round(time.perf_counter() - t0, 1)
    text = json.dumps(result, indent=1)
    if args.out:
        from radspine.fsutil import write_text_atomic

        write_text_atomic(args.out, text)
    print(text)


if __name__ == "__main__":
    main()
