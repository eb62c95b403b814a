"""Train the shipped pretrained localizer on a domain-randomised phantom; write src/radspine/localize/shipped/.

    .venv/bin/python scripts/train_shipped_localizer.py [--seed 0] [--out DIR] [--studies 100] [--copies 2] [--epochs 16]

The phantom family: ``make_dataset`` studies with mixed acquisition variations (off-centre spines, large FOV,
thin slices, flipped orientation, random contrast tables), each rendered once by the phantom and ``--copies``
times more from its tissue label maps with random intensities per tissue, bias fields, blur and noise
(:mod:`radspine.localize.domain`). A separate phantom seed is held out to calibrate confidences and report
accuracy. The config, seed, data settings, file checksums and the held-out report go to ``meta.json`` /
``shipped.json`` next to ``localizer.pt``. Same seed and settings → the same weights (single thread, CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
from pathlib import Path

SYNTH = dict(size=128)  # phantom matrix (px); geometry/FOV still vary per the quirks below
QUIRKS = dict(spine_offcentre=0.5, large_fov=0.3, thin_slices=0.25, flipped_orientation=0.2, random_contrast=0.4,
              axial_lower_only=0.1, wrap_around=0.0, motion_ghosting=0.05)
CONFIG = dict(epochs=16, device="cpu", num_threads=1, crops_per_plane=2, random_planes_per_series=2, holdout_frac=0.0)


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--holdout", type=int, default=8)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--epochs", type=int, default=CONFIG["epochs"])
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import torch

    from radspine.localize import LocalizerConfig
    from radspine.localize.domain import randomised_loaders
    from radspine.localize.infer import shipped_localizer_dir
    from radspine.localize.train import _train_on, _TrainData
    from radspine.synth import QuirkConfig, make_dataset

    torch.set_num_threads(1)
    out = args.out or shipped_localizer_dir()
    cfg = LocalizerConfig(**{**CONFIG, "epochs": args.epochs})
    quirks = QuirkConfig(**{**QuirkConfig.none().__dict__, **QUIRKS})
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_root, hold_root = Path(tmp) / "train", Path(tmp) / "hold"
        make_dataset(train_root, args.studies, 0, seed=args.seed, quirks=quirks, workers=1, **SYNTH)
        make_dataset(hold_root, args.holdout, 0, seed=args.seed + 10_000, quirks=quirks, workers=1, **SYNTH)
        kw = dict(quirks=quirks, **SYNTH)
        loaders, coords = randomised_loaders(train_root, args.seed, args.copies, kw)
        h_loaders, h_coords = randomised_loaders(hold_root, args.seed + 10_000, 0, kw)
        import pandas as pd

        data = _TrainData({**loaders, **h_loaders}, pd.concat([coords, h_coords]), cfg, args.seed, source="phantom")
        hold = sorted(h_loaders)
        report = _train_on(data, Path(out), cfg, args.seed, time.perf_counter() - t0, hold=hold,
                           extra_meta={"shipped": True, "synth": SYNTH, "quirks": QUIRKS, "studies": args.studies,
                                       "copies": args.copies, "holdout_seed": args.seed + 10_000})  # fmt: skip
    from radspine.fsutil import write_json_atomic

    files = {p.name: sha256(p) for p in sorted(Path(out).glob("*")) if p.name in ("localizer.pt",)}
    write_json_atomic(Path(out) / "shipped.json", {"seed": args.seed, "config": cfg.model_dump(), "synth": SYNTH,
                                                   "quirks": QUIRKS, "studies": args.studies, "copies": args.copies,
                                                   "sha256": files, "report": report,
                                                   "wall_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
    print(json.dumps({"overall": report.get("per_condition", {}).get("overall"), "sha256": files,
                      "confidence_check": report.get("confidence_check")}, indent=1))


if __name__ == "__main__":
    main()
