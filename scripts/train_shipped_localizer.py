"""Train the shipped pretrained localizer on real anatomy (SPIDER) and a domain-randomised phantom.

    .venv/bin/python scripts/spider_localizer_data.py --src SPIDER_GIT_OR_DIR --out $TMPDIR/spider_loc
    .venv/bin/python scripts/train_shipped_localizer.py --spider $TMPDIR/spider_loc [--seed 0] [--out DIR]
        [--studies 100] [--copies 2] [--real-copies 8] [--epochs 10] [--init shipped|none]

Sources, all of which may ship (no RSNA-derived data trains these weights):
- **SPIDER** (CC BY 4.0; van der Graaf et al., Sci Data 2024): real sagittal T2 SPACE slices of the patients in
  ``SPIDER/train`` with canal points per level (``scripts/spider_localizer_data.py``), each read as is plus
  ``--real-copies`` field-of-view / scale variants (:func:`radspine.localize.domain.real_variants`): real level
  identity (the sacrum, S1/S2 remnants, thoracic discs above L1/L2) for the canal head. ``SPIDER/holdout``
  patients are never trained on; they calibrate the level confidence and are reported.
- **The phantom**: ``make_dataset`` studies with mixed acquisition variations (off-centre spines, large FOV,
  thin slices, flipped orientation, random contrast tables, S1/S2 remnant discs, transitional anatomy), each
  rendered once and ``--copies`` times more from its tissue label maps with random intensities
  (:mod:`radspine.localize.domain`): the foramen and subarticular heads, which no real set here labels.

``--init shipped`` (default) fine-tunes the current shipped weights; ``none`` trains from scratch. A separate
phantom seed and the SPIDER hold-out calibrate confidences and report accuracy (per source). The config, seed,
sources with their licence and credit, file checksums and the reports go to ``meta.json`` / ``shipped.json``.
Same seed and settings → the same weights (single thread, CPU).
"""

from __future__ import annotations

import argparse
import hashlib
import json
import logging
import tempfile
import time
from functools import partial
from pathlib import Path

SYNTH = dict(size=128)  # phantom matrix (px); geometry/FOV still vary per the quirks below
QUIRKS = dict(spine_offcentre=0.5, large_fov=0.3, thin_slices=0.25, flipped_orientation=0.2, random_contrast=0.4,
              axial_lower_only=0.1, wrap_around=0.0, motion_ghosting=0.05, sacral_remnant=0.5, transitional=0.1)
CONFIG = dict(epochs=10, device="cpu", num_threads=1, crops_per_plane=2, random_planes_per_series=2, holdout_frac=0.0)
SPIDER_CREDIT = ("SPIDER lumbar spine MRI dataset, CC BY 4.0: J.W. van der Graaf et al., 'Lumbar spine segmentation "
                 "in MR images: a dataset and a public benchmark', Scientific Data 11, 264 (2024); slices and masks "
                 "as published in github:istiak769/Lumbar-Spine-MRI-Segementation")


def sha256(path: Path) -> str:
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()


def real_loaders(root: Path, copies: int, seed: int):
    """Loaders (study as read, id × COPY_BASE, plus ``copies`` variants) and coordinates of a real Kaggle-layout set."""
    import pandas as pd

    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.localize.domain import COPY_BASE, _reid, real_variants

    ds = Dataset.open(root)
    coords = ds.coordinates
    loaders, rows, frames = {}, {}, []
    for st in ds.studies("train"):
        c = coords[coords.study_id == st.study_id]
        if c.empty:
            continue
        base = partial(load_study_volumes, st)
        vols = base()
        vol = vols.sag_t2 if vols.sag_t2 is not None else vols.sag_t1
        if vol is None:
            continue
        sid = int(st.study_id)
        loaders[sid * COPY_BASE] = partial(_reid, base, sid * COPY_BASE)
        frames.append(c.assign(study_id=sid * COPY_BASE))
        rows[sid] = int(vol.pixels.shape[1])
    var_l, var_c = real_variants({int(s.study_id): partial(load_study_volumes, s) for s in ds.studies("train")
                                  if int(s.study_id) in rows}, coords, rows, copies, seed)  # fmt: skip
    loaders.update(var_l)
    return loaders, pd.concat([*frames, var_c], ignore_index=True)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--spider", type=Path, required=True, help="folder written by spider_localizer_data.py")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--studies", type=int, default=100)
    ap.add_argument("--holdout", type=int, default=8)
    ap.add_argument("--copies", type=int, default=2)
    ap.add_argument("--real-copies", type=int, default=8)
    ap.add_argument("--holdout-copies", type=int, default=4, help="FOV variants per SPIDER hold-out patient")
    ap.add_argument("--epochs", type=int, default=CONFIG["epochs"])
    ap.add_argument("--init", default="shipped", help="'shipped' (fine-tune the current weights) or 'none'")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(message)s")

    import pandas as pd
    import torch

    from radspine.localize import LocalizerConfig
    from radspine.localize.domain import COPY_BASE, randomised_loaders
    from radspine.localize.infer import shipped_localizer_dir
    from radspine.localize.train import _train_on, _TrainData, load_init, report_by_source
    from radspine.synth import QuirkConfig, make_dataset

    torch.set_num_threads(1)
    out = args.out or shipped_localizer_dir()
    cfg = LocalizerConfig(**{**CONFIG, "epochs": args.epochs})
    # The init weights are read into memory here, before ``out`` (maybe the shipped folder itself) is overwritten.
    init_loc, cfg = load_init(None if args.init == "none" else args.init, cfg)
    quirks = QuirkConfig(**{**QuirkConfig.none().__dict__, **QUIRKS})
    spider_manifest = json.loads((args.spider / "manifest.json").read_text())
    t0 = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        train_root, hold_root = Path(tmp) / "train", Path(tmp) / "hold"
        make_dataset(train_root, args.studies, 0, seed=args.seed, quirks=quirks, workers=1, **SYNTH)
        make_dataset(hold_root, args.holdout, 0, seed=args.seed + 10_000, quirks=quirks, workers=1, **SYNTH)
        kw = dict(quirks=quirks, **SYNTH)
        loaders, coords = randomised_loaders(train_root, args.seed, args.copies, kw)
        h_loaders, h_coords = randomised_loaders(hold_root, args.seed + 10_000, 0, kw)
        r_loaders, r_coords = real_loaders(args.spider / "train", args.real_copies, args.seed)
        # The hold-out patients as read plus field-of-view variants: more (and harder) studies to calibrate the
        # level confidence on; the report gives the patients as read on their own.
        rh_loaders, rh_coords = real_loaders(args.spider / "holdout", args.holdout_copies, args.seed + 1)
        data = _TrainData({**loaders, **h_loaders, **r_loaders, **rh_loaders},
                          pd.concat([coords, h_coords, r_coords, rh_coords]), cfg, args.seed, source="shipped")
        hold = sorted([*h_loaders, *rh_loaders])
        sources = {
            "phantom": {"train_studies": args.studies, "copies": args.copies, "synth": SYNTH, "quirks": QUIRKS,
                        "holdout_seed": args.seed + 10_000, "licence": "generated by radspine"},
            "spider": {"credit": SPIDER_CREDIT, "licence": "CC BY 4.0", "conditions": ["spinal_canal_stenosis"],
                       "train_patients": sorted(int(p) for p, v in spider_manifest["patients"].items()
                                                if v["split"] == "train"),
                       "holdout_patients": sorted(int(p) for p, v in spider_manifest["patients"].items()
                                                  if v["split"] == "holdout"),
                       "real_copies": args.real_copies, "slice_mm": spider_manifest["slice_mm"],
                       "pixel_mm": "from the anatomy (scripts/spider_localizer_data.py)"},
        }  # fmt: skip
        report = _train_on(data, Path(out), cfg, args.seed, time.perf_counter() - t0, hold=hold, init=init_loc,
                           init_name=args.init if args.init != "none" else None,
                           extra_meta={"shipped": True, "sources": sources})  # fmt: skip
        groups = {"phantom": sorted(h_loaders), "spider": sorted(i for i in rh_loaders if i % COPY_BASE == 0),
                  "spider_fov_variants": sorted(i for i in rh_loaders if i % COPY_BASE)}
        report["by_source"] = report_by_source(data, Path(out), groups)
    from radspine.fsutil import write_json_atomic

    files = {p.name: sha256(p) for p in sorted(Path(out).glob("*")) if p.name in ("localizer.pt",)}
    write_json_atomic(Path(out) / "shipped.json", {"seed": args.seed, "config": cfg.model_dump(), "init": args.init,
                                                   "epochs": args.epochs, "sources": sources, "sha256": files,
                                                   "report": report,
                                                   "wall_seconds": round(time.perf_counter() - t0, 1)})  # fmt: skip
    print(json.dumps({"by_source": report["by_source"], "sha256": files}, indent=1))


if __name__ == "__main__":
    main()
