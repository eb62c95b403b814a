"""Prediction latency: seconds per study end to end (localize → features → graders) on this machine.

Uses a trained demo folder (``radspine demo --out DIR``; built here if missing, which takes minutes) and predicts
either the demo's own test split or a fresh test-only phantom (``--preset rsna``: real matrix sizes, FOVs,
slice counts and compressed series), so the same model is timed at 128 px and at real size in one run.
Prints JSON: model load time, seconds per study after loading, where the time goes (decode, localize, patches,
radiomics, morphometry, CNN: summed worker seconds from the features meta), and peak memory.

    python benchmarks/predict_bench.py --demo runs/demo [--preset rsna --studies 6 --workers 2] [--data DIR]

``--data DIR`` predicts every training study of an existing phantom as one test set (e.g. 200 real-size studies).
"""

from __future__ import annotations

import argparse
import json
import resource
import tempfile
import time
from pathlib import Path


def _predict_once(data: Path, model: Path, workers: int, load_s: float) -> dict:
    from radspine.predict import predict

    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        s = predict(data, model, Path(tmp) / "submission.csv", workers=workers)
        total = time.perf_counter() - t0
        meta = json.loads((Path(tmp) / "predict_work" / "features" / "meta.json").read_text())
    n = s["studies"]
    return {
        "studies": n,
        "total_s": round(total, 2),
        "seconds_per_study_after_load": round((total - load_s) / n, 3),
        "profile_worker_s_per_study": {k: round(v / n, 3) for k, v in meta.get("profile_s", {}).items()},
        "rows_from_priors": s["rows_from_priors"],
    }


def test_view(data: Path, out: Path) -> Path:
    """A test-split view of a phantom's training studies (``test_*`` CSV and image folder pointing at the
    ``train_*`` ones), so a big real-size phantom rendered once serves as a whole test set."""
    import shutil

    out.mkdir(parents=True, exist_ok=True)
    shutil.copy(data / "train_series_descriptions.csv", out / "test_series_descriptions.csv")
    shutil.copy(data / "train_series_descriptions.csv", out / "train_series_descriptions.csv")
    for name in ("train.csv", "train_label_coordinates.csv"):
        shutil.copy(data / name, out / name)
    (out / "test_images").symlink_to((data / "train_images").resolve())
    (out / "train_images").symlink_to((data / "train_images").resolve())
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--demo", type=Path, default=Path("runs/demo"), help="output folder of `radspine demo`")
    ap.add_argument("--workers", type=int, default=1)
    ap.add_argument("--preset", default=None, help="also predict a fresh test-only phantom of this preset (rsna)")
    ap.add_argument("--studies", type=int, default=6, help="studies of the fresh phantom")
    ap.add_argument("--matrix-scale", type=float, default=1.0, help="shrink the preset's matrices (keeps FOV)")
    ap.add_argument("--seed", type=int, default=123)
    ap.add_argument("--data", type=Path, default=None,
                    help="an existing phantom whose training studies are predicted as a whole test set")
    args = ap.parse_args()

    import torch

    torch.set_num_threads(2)
    from radspine.demo import DemoOptions, run_demo

    if not (args.demo / "model" / "bundle.json").is_file():
        run_demo(args.demo, DemoOptions())
    model = args.demo / "model"

    from radspine.features.embeddings import load_embedder
    from radspine.localize.infer import Localizer
    from radspine.models.bundle import Bundle, embedders_dir, localizer_dir

    t0 = time.perf_counter()
    Bundle.load(model)
    Localizer.load(localizer_dir(model))
    for fam in embedders_dir(model).iterdir():
        if (fam / "embedder.json").is_file() or (fam / "ensemble.json").is_file():
            load_embedder(fam)
    load_s = time.perf_counter() - t0

    out = {"workers": args.workers, "model_load_s": round(load_s, 2), "target_s_per_study": 2.0}
    out["demo_test_split"] = _predict_once(args.demo / "data", model, args.workers, load_s)
    if args.preset:
        from radspine.synth import make_dataset

        with tempfile.TemporaryDirectory() as tmp:
            data = Path(tmp) / "data"
            t = time.perf_counter()
            make_dataset(data, 0, args.studies, seed=args.seed, preset=args.preset, matrix_scale=args.matrix_scale)
            synth_s = time.perf_counter() - t
            res = _predict_once(data, model, args.workers, load_s)
            res["synth_s"] = round(synth_s, 1)
            out[f"preset_{args.preset}"] = res
    if args.data:
        with tempfile.TemporaryDirectory() as tmp:
            res = _predict_once(test_view(args.data, Path(tmp) / "view"), model, args.workers, load_s)
        res["data"] = str(args.data)
        out["whole_test_set"] = res
    if args.preset or args.data:
        base = out["demo_test_split"]["seconds_per_study_after_load"]
        out["ratio_real_size_vs_demo"] = round(res["seconds_per_study_after_load"] / base, 2)
    peak_self = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    peak_children = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
    out["peak_rss_mb"] = round(max(peak_self, peak_children), 1)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
