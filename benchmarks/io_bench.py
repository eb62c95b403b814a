"""Series load throughput of radspine.io.dicom against reading the same files' bytes (the floor).

Prints one JSON object. Uses the phantom (``radspine.synth.make_dataset``) when importable, else series
written with the tests' pydicom helper. Also times each transfer syntax on one written series, because
decoding (RLE, JPEG-LS, JPEG 2000) rather than parsing dominates on compressed data.

    python benchmarks/io_bench.py [--studies 2] [--size 128] [--repeats 3]
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from radspine.io.dicom import list_dicom_files, read_series

HERE = Path(__file__).resolve().parent


def _best_time(fn, repeats: int) -> float:
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def _measure(folders: list[Path], repeats: int) -> dict:
    files = [f for d in folders for f in list_dicom_files(d)]
    nbytes = sum(f.stat().st_size for f in files)

    def raw() -> None:
        for f in files:
            f.read_bytes()

    def load() -> None:
        for d in folders:
            read_series(d)

    raw()  # warm the page cache so both timings see the same storage state
    t_raw = _best_time(raw, repeats)
    t_load = _best_time(load, repeats)
    mb = nbytes / 1e6
    return {
        "series": len(folders),
        "slices": len(files),
        "megabytes": round(mb, 3),
        "load_s": round(t_load, 4),
        "load_slices_per_s": round(len(files) / t_load, 1),
        "load_mb_per_s": round(mb / t_load, 2),
        "raw_read_s": round(t_raw, 5),
        "raw_slices_per_s": round(len(files) / t_raw, 1),
        "raw_mb_per_s": round(mb / t_raw, 1),
        "load_over_raw": round(t_load / t_raw, 1),
    }


def _phantom_series(tmp: Path, studies: int, size: int) -> tuple[str, list[Path]]:
    try:
        from radspine.synth import make_dataset
    except ImportError:
        return "", []
    make_dataset(tmp / "phantom", studies, 0, seed=0, size=size)
    return "phantom", sorted(p for p in (tmp / "phantom" / "train_images").glob("*/*") if p.is_dir())


def _written_series(tmp: Path, size: int, transfer_syntax: str, name: str, n: int = 15) -> Path:
    sys.path.insert(0, str(HERE.parent / "tests" / "io"))
    from dicom_writer import write_series  # the tests' pydicom helper

    rng = np.random.default_rng(0)
    yy, xx = np.mgrid[0:size, 0:size]
    # Smooth anatomy-like content plus noise, so compressed sizes are realistic (not all-zero).
    base = 800 + 400 * np.sin(xx / 9.0) * np.cos(yy / 13.0)
    px = np.clip(base[None] + rng.normal(0, 30, (n, size, size)), 0, 4000).astype(np.uint16)
    folder = tmp / name
    write_series(folder, px, origin=(-40, -60, 30), row_cosine=(0, 1, 0), col_cosine=(0, 0, -1),
                 pixel_spacing=(0.6, 0.6), slice_step=3.5, transfer_syntax=transfer_syntax)
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=2)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--repeats", type=int, default=3)
    args = ap.parse_args()

    from pydicom.uid import ExplicitVRLittleEndian, JPEG2000Lossless, JPEGLSLossless, RLELossless

    out: dict = {
        "python": platform.python_version(),
        "machine": platform.machine(),
        "size": args.size,
        "repeats": args.repeats,
        "timing": "best of repeats, warm page cache, one process",
    }
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        source, folders = _phantom_series(tmp, args.studies, args.size)
        if not folders:
            source = "written"
            folders = [_written_series(tmp, args.size, ExplicitVRLittleEndian, f"s{i}") for i in range(3)]
        out["source"] = source
        out["dataset"] = _measure(folders, args.repeats)
        per_ts = {}
        for name, ts in (("explicit_le", ExplicitVRLittleEndian), ("rle", RLELossless),
                         ("jpeg_ls_lossless", JPEGLSLossless), ("jpeg2000_lossless", JPEG2000Lossless)):
            try:
                folder = _written_series(tmp, args.size, ts, f"ts_{name}")
            except Exception as err:  # noqa: BLE001 - an encoder plugin may be missing; report, go on
                per_ts[name] = {"error": f"{type(err).__name__}: {err}".splitlines()[0]}
                continue
            per_ts[name] = _measure([folder], args.repeats)
        out["transfer_syntaxes"] = per_ts
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
