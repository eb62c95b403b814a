"""Prediction latency: seconds per study end to end (localize → features → graders) on this machine.

Uses a demo folder (``radspine demo --out DIR``; built here if missing, which takes minutes) and prints
JSON: model load time, per-study seconds after loading (serial, one process), the stage split, and peak
memory of this process and its children.

    python benchmarks/predict_bench.py --demo runs/demo [--studies N]
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="output folder of `radspine demo`")
    ap.add_argument("--workers", type=int, default=1)
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from radspine.demo import DemoOptions, run_demo

    if not (args.demo / "model" / "bundle.json").is_file():
        run_demo(args.demo, DemoOptions())
    model = args.demo / "model"

    from radspine.features.embeddings import CnnEmbedder
    from radspine.localize.infer import Localizer
    from radspine.models.bundle import Bundle
    from radspine.predict import predict

    t0 = time.perf_counter()
    Bundle.load(model)
    Localizer.load(model / "localizer")
    for fam in (model / "features" / "embedders").iterdir():
        CnnEmbedder.load(fam)
    load_s = time.perf_counter() - t0

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = predict(args.demo / "data", model, Path(tmp) / "submission.csv", workers=args.workers)
        total = time.perf_counter() - t0
    n = s["studies"]
    per_study = (total - load_s) / n
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    print(json.dumps({
        "studies": n,
        "workers": args.workers,
        "model_load_s": round(load_s, 2),
        "total_s": round(total, 2),
        "seconds_per_study_after_load": round(per_study, 3),
        "seconds_localize_per_study": round(s["seconds_localize"] / n, 3),
        "seconds_features_per_study": round(s["seconds_features"] / n, 3),
        "target_s_per_study": 2.0,
        "peak_rss_mb": round(max(peak_self, peak_children), 1),
        "rows_from_priors": s["rows_from_priors"],
    }, indent=2))


if __name__ == "__main__":
    main()
