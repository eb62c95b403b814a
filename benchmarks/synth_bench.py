"""Phantom generation throughput: studies per minute and MB written at the default size (256 px).

Prints one JSON object. Wall-clock rate depends on machine load; ``cpu_s_per_study`` (CPU seconds used by
the workers per study, from a serial run with the default quirks and variations) is the load-independent
figure: 2 cores give about ``120 / cpu_s_per_study`` studies per minute. ``clean_cpu_s_per_study`` is the
same for ``QuirkConfig.none()`` (no partial volume, no variations), to show what the realism costs.

    python benchmarks/synth_bench.py [--studies 8] [--size 256] [--workers 2]

``--preset rsna`` measures real-size studies instead (real matrix mix, 15-24 sagittal / 25-60 axial slices,
16-bit, ~40 % of series compressed): studies/min, CPU s and MB per study, bytes per pixel (compression).
Keep ``--studies`` small there: one real-size study takes ~15-25 CPU s.

    python benchmarks/synth_bench.py --preset rsna --studies 2 --workers 1
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import tempfile
import time
from pathlib import Path

from radspine.synth import QuirkConfig, make_dataset


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=8)
    ap.add_argument("--size", type=int, default=256)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--serial", type=int, default=4, help="studies in each serial CPU-time run")
    ap.add_argument("--preset", default="", help="'rsna': real-size series (see radspine synth --preset)")
    args = ap.parse_args()
    if args.preset:
        _preset(args)
        return
    with tempfile.TemporaryDirectory() as tmp:
        # Serial run: CPU seconds per study.
        c0, t0 = time.process_time(), time.perf_counter()
        n_serial = max(2, args.serial)
        serial = make_dataset(Path(tmp) / "serial", n_serial, 0, seed=1, size=args.size)
        cpu_per_study = (time.process_time() - c0) / n_serial
        serial_wall = (time.perf_counter() - t0) / n_serial
        c0 = time.process_time()
        make_dataset(Path(tmp) / "clean", n_serial, 0, seed=1, size=args.size, quirks=QuirkConfig.none())
        clean_cpu = (time.process_time() - c0) / n_serial
        # Parallel run at the requested worker count.
        t0 = time.perf_counter()
        par = make_dataset(Path(tmp) / "par", args.studies, 0, seed=2, size=args.size, workers=args.workers)
        wall = time.perf_counter() - t0
    print(json.dumps({
        "benchmark": "synth",
        "size_px": args.size,
        "studies": args.studies,
        "workers": args.workers,
        "studies_per_min": round(60.0 * args.studies / wall, 1),
        "wall_s": round(wall, 2),
        "mb_written": round(par["bytes"] / 1e6, 1),
        "mb_per_study": round(par["bytes"] / 1e6 / args.studies, 2),
        "files": par["files"],
        "cpu_s_per_study": round(cpu_per_study, 3),
        "clean_cpu_s_per_study": round(clean_cpu, 3),
        "serial_wall_s_per_study": round(serial_wall, 3),
        "est_studies_per_min_2_idle_cores": round(120.0 / cpu_per_study, 1),
        "serial_studies": n_serial,
        "serial_bytes": serial["bytes"],
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }))


def _preset(args: argparse.Namespace) -> None:
    """One timed run of ``args.studies`` preset studies (CPU of this process = serial CPU when workers=1)."""
    import pydicom

    with tempfile.TemporaryDirectory() as tmp:
        c0, t0 = time.process_time(), time.perf_counter()
        res = make_dataset(Path(tmp) / "p", args.studies, 0, seed=2, preset=args.preset, workers=args.workers)
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
        pixels, compressed, series = 0, 0, 0
        for folder in (Path(tmp) / "p" / "train_images").glob("*/*"):
            files = list(folder.glob("*.dcm"))
            d = pydicom.dcmread(files[0], stop_before_pixels=True)
            pixels += int(d.Rows) * int(d.Columns) * len(files)
            compressed += bool(d.file_meta.TransferSyntaxUID.is_compressed)
            series += 1
    print(json.dumps({
        "benchmark": "synth",
        "preset": args.preset,
        "studies": args.studies,
        "workers": args.workers,
        "studies_per_min": round(60.0 * args.studies / wall, 2),
        "wall_s": round(wall, 2),
        "cpu_s_per_study": round(cpu / args.studies, 2) if args.workers == 1 else None,
        "mb_per_study": round(res["bytes"] / 1e6 / args.studies, 2),
        "files_per_study": round(res["files"] / args.studies, 1),
        "series": series,
        "compressed_series": compressed,
        "bytes_per_pixel": round(res["bytes"] / max(pixels, 1), 3),
        "load_avg_1min": round(os.getloadavg()[0], 2),
        "cpus": os.cpu_count(),
        "python": platform.python_version(),
    }))


if __name__ == "__main__":
    main()
