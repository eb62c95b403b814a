"""Localizer benchmark: phantom → train_localizer → held-out accuracy, train time and per-study latency (JSON).

Usage: python benchmarks/localize_bench.py [--train 40] [--size 128] [--epochs 20] [--seed 0] [--out DIR]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--train", type=int, default=40)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--epochs", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()

    from radspine.localize import Localizer, LocalizerConfig, train_localizer
    from radspine.synth import make_dataset

    out = args.out or Path(tempfile.mkdtemp(prefix="radspine_locbench_"))
    t0 = time.perf_counter()
    make_dataset(out / "data", args.train, 2, seed=args.seed, size=args.size, overwrite=True)
    t_synth = time.perf_counter() - t0
    rep = train_localizer(out / "data", out / "model", LocalizerConfig(epochs=args.epochs), seed=args.seed)
    from radspine.io.dataset import Dataset

    loc = Localizer.load(out / "model")
    studies = Dataset.open(out / "data").studies("test")
    t1 = time.perf_counter()
    for st in studies:
        loc.predict_study(st)
    latency = (time.perf_counter() - t1) / max(len(studies), 1)
    per = rep.pop("per_condition", {})
    print(json.dumps({
        "synth_seconds": round(t_synth, 1), **rep, "predict_seconds_per_test_study": round(latency, 3),
        "per_condition": {c: {k: round(v, 3) if isinstance(v, float) else v for k, v in m.items()} for c, m in per.items()},
    }, indent=1))  # fmt: skip


if __name__ == "__main__":
    main()
