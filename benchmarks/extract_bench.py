"""Benchmark `radspine extract-features` on a phantom; prints one JSON document.

Measures, for the command as a user runs it (a subprocess, ``--workers W``):
  * studies per minute (target ≥ 20 on 2 cores), split into the per-study map and the CNN stage;
  * peak memory of the whole process tree (sampled RSS sum of the command and its workers) at N and N/2
    studies, extrapolated linearly to 200 studies (target ≤ 3 GB);
  * a projection to 1,975 studies on 16 cores (assumptions printed with it);
  * per-study cost of the radiomics params with and without LoG filters (in-process, one core).

    python benchmarks/extract_bench.py [--studies 20] [--workers 2] [--size 96] [--data DIR]
        [--preset rsna [--matrix-scale S] [--compare-size 128]] [--scheduler local] [--scaling]
        [--side-studies K]

``--preset rsna`` builds the phantom at real image sizes; ``--compare-size 128`` also runs today's default
phantom at 128 px with the same study count, for the ratio; ``--scheduler local`` runs through a Dask
LocalCluster; ``--scaling`` also runs with 1 worker (1 → W scaling); ``--side-studies K`` runs the scaling and
128-px comparison on the big phantom's first K studies (a view, no new phantom), and with ``--data`` the N/2 run
is a view of the same data too. The N and N/2 runs give a measured line to the 1,975-study run on this
machine (extrapolated, and said so). Each run reports where
the per-study time goes (``profile_s``: decode, patches, radiomics, morphometry, CNN).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path


def _tree_rss(proc) -> int:
    import psutil

    try:
        procs = [proc, *proc.children(recursive=True)]
    except psutil.NoSuchProcess:
        return 0
    total = 0
    for p in procs:
        try:
            total += p.memory_info().rss
        except psutil.NoSuchProcess:
            pass
    return total


def _per_study_bytes(out: Path) -> float:
    """Bytes per study that the command holds at once at its peak (CNN stage), from the cache files."""
    import numpy as np
    import pandas as pd

    npzs = sorted(out.glob("cache/*/*/*.npz"))
    fam_bytes: dict[str, int] = {}
    for f in npzs:
        with np.load(f) as z:
            for k in z.files:
                if k.startswith("patch_"):
                    fam_bytes[k] = fam_bytes.get(k, 0) + z[k].nbytes
    table = pd.read_parquet(out / "features.parquet")
    table_bytes = 25 * table.shape[1] * 8
    return 2 * max(fam_bytes.values()) / max(len(npzs), 1) + table_bytes


def subset_view(data: Path, n: int, out: Path) -> Path:
    """A Kaggle-layout view of the first ``n`` training studies of ``data`` (CSV rows filtered by study_id,
    image folders symlinked): a smaller run over the same studies, with no second phantom to render."""
    import pandas as pd

    if (out / "train.csv").is_file():
        return out
    out.mkdir(parents=True, exist_ok=True)
    keep = set(pd.read_csv(data / "train.csv")["study_id"].head(n))
    for csv in data.glob("*.csv"):
        df = pd.read_csv(csv)
        (df[df["study_id"].isin(keep)] if "study_id" in df else df).to_csv(out / csv.name, index=False)
    for split in ("train_images", "test_images"):
        (out / split).mkdir(exist_ok=True)
        for sid in keep:
            src = data / split / str(sid)
            if src.is_dir():
                (out / split / str(sid)).symlink_to(src.resolve())
    return out


def run_command(data: Path, out: Path, workers: int, config: Path | None = None, scheduler: str | None = None) -> dict:
    """Run the CLI once; wall seconds, peak tree RSS and the meta.json it wrote."""
    import psutil

    cmd = [sys.executable, "-c", "from radspine.cli import main; main()", "extract-features", "--data", str(data),
           "--split", "train", "--out", str(out), "--workers", str(workers), "--quiet", "--overwrite"]
    if config is not None:
        cmd += ["--config", str(config)]
    if scheduler is not None:
        cmd += ["--scheduler", scheduler]
    import resource

    ru0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    popen = subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    proc = psutil.Process(popen.pid)
    peak = [0]

    def sample() -> None:
        while popen.poll() is None:
            peak[0] = max(peak[0], _tree_rss(proc))
            time.sleep(0.1)

    th = threading.Thread(target=sample, daemon=True)
    th.start()
    stdout, stderr = popen.communicate()
    th.join()
    wall = time.perf_counter() - t0
    ru1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    # CPU seconds of the command and every worker it waited for: independent of other users' load.
    cpu = (ru1.ru_utime - ru0.ru_utime) + (ru1.ru_stime - ru0.ru_stime)
    if popen.returncode != 0:
        raise SystemExit(f"extract-features failed ({popen.returncode}): {stderr[-2000:]}")
    meta = json.loads((out / "meta.json").read_text())
    return {"wall_s": wall, "cpu_s": cpu, "peak_rss_mb": peak[0] / 2**20, "meta": meta}


def radiomics_cost(data: Path, n: int = 3) -> dict:
    """Seconds per study of the per-study job (volumes + patches + radiomics) with and without LoG."""
    import yaml

    from radspine.features.config import FeaturesConfig, RadiomicsSettings
    from radspine.features.study import StudyJob
    from radspine.io.dataset import Dataset
    from radspine.points import read_points_csv
    from radspine.resources import config_dir

    studies = Dataset.open(data).studies("train")[: n + 1]
    pts = read_points_csv(data / "train_label_coordinates.csv")
    items = [(s, pts[pts["study_id"] == s.study_id]) for s in studies]
    tmp = Path(tempfile.mkdtemp())
    noLoG = {}
    for kind in ("sagittal", "axial"):
        params = yaml.safe_load((config_dir() / "radiomics" / f"{kind}_2d.yaml").read_text())
        params["imageType"] = {"Original": {}}
        (tmp / f"{kind}.yaml").write_text(yaml.safe_dump(params))
        noLoG[kind] = str(tmp / f"{kind}.yaml")
    out = {}
    for name, rad in (
        ("default", RadiomicsSettings()),
        ("original_only", RadiomicsSettings(**noLoG)),
        ("no_radiomics", RadiomicsSettings(enabled=False)),
    ):
        job = StudyJob(FeaturesConfig(radiomics=rad, cnn_enabled=False), "train")
        job(items[0])  # warm-up: extractor construction, imports
        t0 = time.perf_counter()
        rows = [job(it).rows for it in items[1:]]
        out[name] = {
            "s_per_study": round((time.perf_counter() - t0) / len(items[1:]), 3),
            "n_rad_columns": sum(c.startswith("rad_") for c in rows[0].columns),
        }
    return out


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--studies", type=int, default=20)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--size", type=int, default=96)
    ap.add_argument("--data", type=Path, default=None, help="existing phantom (else one is made)")
    ap.add_argument("--work", type=Path, default=None)
    ap.add_argument("--skip-radiomics", action="store_true")
    ap.add_argument("--preset", default=None, help="synth preset of the phantom (rsna = real image sizes)")
    ap.add_argument("--matrix-scale", type=float, default=1.0)
    ap.add_argument("--compare-size", type=int, default=None, help="also run the default phantom at this size")
    ap.add_argument("--scheduler", default=None, help="'local' = Dask LocalCluster with --workers workers")
    ap.add_argument("--scaling", action="store_true", help="also run --side-studies studies with 1 worker")
    ap.add_argument("--side-studies", type=int, default=None,
                    help="studies (the big phantom's first ones) for the scaling and 128-px comparison runs")
    args = ap.parse_args()
    os.environ.setdefault("OMP_NUM_THREADS", str(args.workers))
    work = args.work or Path(tempfile.mkdtemp(prefix="extract_bench_"))
    res: dict = {"cores": len(os.sched_getaffinity(0)), "load_avg_1m": round(os.getloadavg()[0], 2),
                 "workers": args.workers}

    from radspine.synth import QuirkConfig, make_dataset

    datasets = {}
    synth_s = {}
    for n in (args.studies, args.studies // 2):
        d = args.data if (args.data and n == args.studies) else work / f"phantom_{n}"
        if args.data and n != args.studies:
            d = subset_view(args.data, n, work / f"view_{n}")  # the same studies' first half
        if not (d / "train.csv").exists():
            t = time.perf_counter()
            if args.preset:
                make_dataset(d, n, 0, seed=7, preset=args.preset, matrix_scale=args.matrix_scale,
                             workers=args.workers, overwrite=True)  # fmt: skip
            else:
                make_dataset(d, n, 0, seed=7, size=args.size, quirks=QuirkConfig.none(), workers=args.workers,
                             overwrite=True)
            synth_s[n] = round(time.perf_counter() - t, 1)
        datasets[n] = d
    given = "given data (--data)" if args.data and not args.preset else None
    res["phantom"] = {"preset": args.preset or given or "default", "size": None if args.preset or given else args.size,
                      "matrix_scale": args.matrix_scale, "synth_s": synth_s, "data": str(args.data or "")}
    plan = [(n, d, args.workers, f"{n}") for n, d in datasets.items()]
    k = args.side_studies or args.studies
    side = datasets[args.studies] if k == args.studies else subset_view(datasets[args.studies], k, work / f"view_{k}")
    if args.scaling:  # 1 → W workers over the same k studies
        if not any(name == f"{k}" for *_, name in plan):
            plan.append((k, side, args.workers, f"{k}"))
        plan.append((k, side, 1, f"{k}_1worker"))
    if args.compare_size:
        d = work / f"phantom_default_{args.compare_size}"
        if not (d / "train.csv").exists():
            make_dataset(d, k, 0, seed=7, size=args.compare_size, workers=args.workers, overwrite=True)
        if k != args.studies and not any(name == f"{k}" for *_, name in plan):
            plan.append((k, side, args.workers, f"{k}"))
        plan.append((k, d, args.workers, f"{k}_default_{args.compare_size}px"))
    runs = {}
    for _n, d, w, name in plan:
        r = run_command(d, work / f"out_{name}", w, scheduler=args.scheduler)
        m = r["meta"]
        runs[name] = {
            "workers": w,
            "profile_s": m.get("profile_s"),
            "studies": m["n_studies"],
            "wall_s": round(r["wall_s"], 1),
            "studies_per_min": round(60 * m["n_studies"] / r["wall_s"], 1),
            "cpu_s": round(r["cpu_s"], 1),
            # What W dedicated cores would give if the run were CPU-bound and perfectly spread.
            "studies_per_min_cpu_bound": round(60 * m["n_studies"] * args.workers / r["cpu_s"], 1),
            "seconds_studies": m["seconds_studies"],
            "seconds_cnn": m["seconds_cnn"],
            "peak_rss_mb": round(r["peak_rss_mb"]),
            "n_features": m["n_features"],
            "n_failed": m["n_failed_studies"],
        }
        print(json.dumps({f"run_{name}": runs[name]}), file=sys.stderr, flush=True)
    res["runs"] = runs
    big, small = args.studies, args.studies // 2
    if args.compare_size:
        ref = runs[f"{k}_default_{args.compare_size}px"]
        res["ratio_cpu_per_study_vs_default"] = round(runs[str(k)]["cpu_s"] / max(ref["cpu_s"], 1e-9), 2)
        res["ratio_wall_per_study_vs_default"] = round(runs[str(k)]["wall_s"] / max(ref["wall_s"], 1e-9), 2)
    if args.scaling:
        one = runs[f"{k}_1worker"]
        res["scaling_1_to_w_wall"] = round(one["wall_s"] / runs[str(k)]["wall_s"], 2)
    # The whole training set on this machine, from the two measured runs (N and N/2 studies): per-study
    # map and CNN stage each fitted a + b·n through both points (the CNN stage grows with patches), then
    # evaluated at 1,975. Extrapolated, not measured.
    rb, rs = runs[str(big)], runs[str(small)]

    def lin(key: str) -> tuple[float, float]:
        b = (rb[key] - rs[key]) / max(big - small, 1)
        return rb[key] - b * big, b
    a_w, b_w = lin("wall_s")
    res["extrapolated_1975_studies_this_machine_min"] = round((a_w + b_w * 1975) / 60, 1)
    a_c, b_c = lin("seconds_cnn")
    res["extrapolated_1975_cnn_stage_min"] = round((a_c + b_c * 1975) / 60, 1)
    res["extrapolation_note"] = (f"wall = a + b·n through the measured {small}- and {big}-study runs "
                                 f"(b = {b_w:.2f} s/study, CNN stage b = {b_c:.2f} s/study), evaluated at n = 1975")
    # RSS at these sizes is dominated by fixed costs (each process imports torch, pyradiomics, ...), so
    # a two-point fit is noise. What grows with N is known: the CNN stage holds one family's patches
    # of every study at once (+ a resized copy), and the table (25 rows × features × 8 bytes).
    if big >= 200:
        res["peak_rss_mb_200_measured"] = runs[str(big)]["peak_rss_mb"]
    else:
        per_study = _per_study_bytes(work / f"out_{big}")
        peak = max(runs[str(big)]["peak_rss_mb"], runs[str(small)]["peak_rss_mb"])
        res["peak_rss_mb_200_estimate"] = round(peak + per_study * (200 - small) / 2**20)
        res["peak_rss_note"] = (f"max measured peak ({small}/{big} studies) + {per_study / 2**20:.2f} MB per extra "
                                "study (largest CNN family's patches ×2 + table rows), extrapolated to 200")
    a_m, b_m = lin("peak_rss_mb")
    res["extrapolated_1975_peak_rss_mb"] = round(a_m + b_m * 1975)
    # Projection: the per-study map parallelises over cores; the CNN stage is one torch process whose
    # cost grows ~linearly with patches. Assumed: torch speeds up 3x from 2 to 16 threads (conservative).
    r = runs[str(big)]
    map_core_s = r["seconds_studies"] * args.workers / big
    cnn_s = r["seconds_cnn"] / big
    fixed = max(r["wall_s"] - r["seconds_studies"] - r["seconds_cnn"], 0.0)
    proj = 1975 * map_core_s / 16 + 1975 * cnn_s / 3.0 + fixed
    res["projection_1975_studies_16_cores_min"] = round(proj / 60, 1)
    res["projection_note"] = ("per-study map × 1975 / 16 cores + CNN stage per study × 1975 / 3 "
                              "(torch 2→16 threads ≈ 3×) + fixed start-up; measured on this machine's load")
    if not args.skip_radiomics:
        res["per_study_job_1core"] = radiomics_cost(datasets[big])
    print(json.dumps(res, indent=2))


if __name__ == "__main__":
    main()
