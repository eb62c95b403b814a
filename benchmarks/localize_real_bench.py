"""Localizer on real anatomy: held-out SPIDER patients and the real RSNA foraminal development set.

    .venv/bin/python benchmarks/localize_real_bench.py [--model shipped|DIR] [--spider $TMPDIR/spider_loc/holdout]
        [--rsna $TMPDIR/rsna_nfn_dev] [--rsna-studies 200] [--finetune-studies 51] [--seed 0] [--out bench.json]

Real data is never part of the repository or the tests: build it first (``../shared/realdata/README.md``):
``scripts/spider_localizer_data.py`` writes the SPIDER hold-out (patients the shipped localizer never saw, canal
points on sagittal T2) and ``build_dev.sh`` the RSNA development set (foraminal points on real Sagittal T1
slices; it may measure, never train shipped weights).

Reported per set (JSON on stdout and in ``--out``):
- SPIDER canal points: 3-D error (mm), share within 5 / 10 mm, level accuracy (the predicted point's nearest
  labelled level is its own), studies whose whole chain is shifted by one level or more, and the
  ``level_confidence`` of shifted vs correct studies.
- RSNA foramina: the same, in-plane on the labelled slice (that set's slices are 4 mm apart by construction,
  not by the scanner, so only the in-plane distance is real), on ``--rsna-studies`` studies drawn with ``--seed``.
- ``finetune``: ``train-localizer`` with its defaults (``--init shipped``) on ``--finetune-studies`` other RSNA
  studies, then the same RSNA test studies (that model is for measurement only: RSNA terms forbid shipping it).
"""

from __future__ import annotations

import argparse
import json
import logging
import sys
import tempfile
import time
from pathlib import Path

import numpy as np


def _fail(msg: str) -> None:
    print(f"error: {msg}", file=sys.stderr)
    sys.exit(2)


def score_study(pred, truth: dict, in_plane: bool) -> list[dict]:
    """Per labelled point of one study: error (mm), own level nearest?, level offset to the nearest level."""
    from radspine.constants import CONDITION_NAMES, LEVEL_KEYS, LEVELS

    name_to_key = {v: k for k, v in CONDITION_NAMES.items()}
    out = []
    for r in pred.itertuples(index=False):
        cond, lv = name_to_key[r.condition], LEVEL_KEYS[r.level]
        tp = truth.get((cond, lv))
        if tp is None:
            continue
        pw = np.array([r.world_x, r.world_y, r.world_z], dtype=np.float64)
        cands = {lv2: t.world for (c2, lv2), t in truth.items() if c2 == cond}
        if not np.all(np.isfinite(pw)):
            out.append({"cond": cond, "err": np.inf, "level_ok": False, "offset": None, "conf": r.level_confidence
                        if "level_confidence" in pred else np.nan})  # fmt: skip
            continue
        if in_plane:  # distance within the labelled slice's plane (its normal is world x)
            def dist(a, b):
                return float(np.linalg.norm((a - b)[1:]))
        else:
            def dist(a, b):
                return float(np.linalg.norm(a - b))
        near = min(cands, key=lambda k: dist(cands[k], pw))
        out.append({"cond": cond, "err": dist(tp.world, pw), "level_ok": near == lv,
                    "offset": LEVELS.index(lv) - LEVELS.index(near),
                    "conf": float(r.level_confidence) if "level_confidence" in pred else np.nan})  # fmt: skip
    return out


def summarise(per_study: dict[int, list[dict]]) -> dict:
    rows = [p for ps in per_study.values() for p in ps]
    if not rows:
        return {"n": 0}
    e = np.array([p["err"] for p in rows])
    shifted, conf_ok, conf_bad = [], [], []
    for sid, ps in per_study.items():
        offs = [p["offset"] for p in ps if p["offset"] is not None]
        if not offs:
            continue
        s = int(np.round(np.median(offs)))
        confs = [p["conf"] for p in ps if np.isfinite(p["conf"])]
        if confs:
            (conf_bad if s else conf_ok).append(float(np.mean(confs)))
        if s:
            shifted.append({"study_id": int(sid), "shift": s})
    return {
        "n_points": int(e.size), "n_studies": len(per_study),
        "median_mm": round(float(np.median(e)), 2), "within_5mm": round(float(np.mean(e <= 5)), 3),
        "within_10mm": round(float(np.mean(e <= 10)), 3),
        "level_accuracy": round(float(np.mean([p["level_ok"] for p in rows])), 3),
        "studies_shifted": len(shifted), "shifted": shifted,
        "level_confidence_mean": {"correct": round(float(np.mean(conf_ok)), 3) if conf_ok else None,
                                  "shifted": round(float(np.mean(conf_bad)), 3) if conf_bad else None},
        "level_confidence_auc": _auc(conf_ok, conf_bad),
        "below_0.5": {"correct": int(np.sum(np.array(conf_ok) < 0.5)), "shifted": int(np.sum(np.array(conf_bad) < 0.5))},
    }  # fmt: skip


def _auc(pos: list[float], neg: list[float]) -> float | None:
    """P(a correct study's level confidence exceeds a shifted one's) (ties count half); None without both."""
    if not pos or not neg:
        return None
    p, n = np.asarray(pos)[:, None], np.asarray(neg)[None, :]
    return round(float(np.mean((p > n) + 0.5 * (p == n))), 3)


def run_set(loc, root: Path, ids: list[int] | None, in_plane: bool) -> tuple[dict, float]:
    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.localize.train import normalised_coordinates, resolve_truth

    ds = Dataset.open(root)
    coords = normalised_coordinates(ds.coordinates)
    by = {int(s): g for s, g in coords.groupby("study_id")}
    studies = [s for s in ds.studies("train") if int(s.study_id) in by and (ids is None or int(s.study_id) in ids)]
    per: dict[int, list[dict]] = {}
    t0 = time.perf_counter()
    for st in studies:
        vols = load_study_volumes(st)
        truth = resolve_truth(vols, by[int(st.study_id)])
        per[int(st.study_id)] = score_study(loc.predict_volumes(st.study_id, vols), truth, in_plane)
    return summarise(per), round((time.perf_counter() - t0) / max(len(studies), 1), 2)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="shipped")
    ap.add_argument("--spider", type=Path, default=Path(tempfile.gettempdir()) / "spider_loc" / "holdout")
    ap.add_argument("--rsna", type=Path, default=Path(tempfile.gettempdir()) / "rsna_nfn_dev")
    ap.add_argument("--rsna-studies", type=int, default=200)
    ap.add_argument("--finetune-studies", type=int, default=51)
    ap.add_argument("--skip", default="", help="comma list of parts to skip: spider,rsna,finetune")
    ap.add_argument("--level-rule", choices=["count", "window"], default=None, help="override the model's")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    skip = set(filter(None, args.skip.split(",")))
    for name, path in (("spider", args.spider), ("rsna", args.rsna)):
        if name not in skip and not (path / "train_label_coordinates.csv").is_file():
            _fail(f"{path}: no real {name} set here (build it as ../shared/realdata/README.md says, or --skip {name})")
    logging.basicConfig(level=logging.WARNING)

    import pandas as pd
    import torch

    from radspine.localize import Localizer
    from radspine.localize.infer import shipped_localizer_dir

    torch.set_num_threads(1)
    model = shipped_localizer_dir() if args.model == "shipped" else Path(args.model)
    loc = Localizer.load(model, device="cpu")
    if args.level_rule:
        loc.cfg = loc.cfg.model_copy(update={"level_rule": args.level_rule})
    res: dict = {"model": str(model), "seed": args.seed, "level_rule": loc.cfg.level_rule}
    if "spider" not in skip:
        res["spider_zero_shot"], res["spider_seconds_per_study"] = run_set(loc, args.spider, None, in_plane=False)
    if "rsna" not in skip or "finetune" not in skip:
        ids = sorted(int(s) for s in pd.read_csv(args.rsna / "train_label_coordinates.csv")["study_id"].unique())
        perm = [int(i) for i in np.random.default_rng(args.seed).permutation(ids)]
        test, tune = perm[: args.rsna_studies], perm[args.rsna_studies : args.rsna_studies + args.finetune_studies]
        if "rsna" not in skip:
            res["rsna_zero_shot"], res["rsna_seconds_per_study"] = run_set(loc, args.rsna, set(test), in_plane=True)
        if "finetune" not in skip:
            res["finetune"] = finetune(args, model, tune, set(test))
    print(json.dumps(res, indent=1))
    if args.out:
        args.out.write_text(json.dumps(res, indent=1))


def finetune(args, model: Path, tune_ids: list[int], test_ids: set[int]) -> dict:
    """train-localizer with its defaults on ``tune_ids`` RSNA studies (a view of the set), then score ``test_ids``."""
    import os

    import pandas as pd

    from radspine.config import load_config
    from radspine.localize import Localizer, train_localizer

    with tempfile.TemporaryDirectory() as tmp:
        view = Path(tmp) / "view"
        (view / "train_images").mkdir(parents=True)
        for name in ("train_label_coordinates.csv", "train_series_descriptions.csv", "train.csv"):
            df = pd.read_csv(args.rsna / name)
            df[df["study_id"].isin(tune_ids)].to_csv(view / name, index=False)
        for sid in tune_ids:
            os.symlink(args.rsna / "train_images" / str(sid), view / "train_images" / str(sid))
        t0 = time.perf_counter()
        cfg = load_config().localizer
        rep = train_localizer(view, Path(tmp) / "model", cfg, seed=args.seed,
                              init="shipped" if args.model == "shipped" else str(model))  # fmt: skip
        secs = round(time.perf_counter() - t0, 1)
        loc = Localizer.load(Path(tmp) / "model", device="cpu")
        summary, per_study = run_set(loc, args.rsna, test_ids, in_plane=True)
    return {"train_studies": len(tune_ids), "train_seconds": secs, "init": rep.get("init"),
            "epochs": rep.get("epochs"), "rsna": summary, "seconds_per_study": per_study}  # fmt: skip


if __name__ == "__main__":
    main()
