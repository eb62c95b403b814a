"""Benchmark: morphometry error vs the phantom's truth, ms per level, and the held-out score with/without.

1. Measurement error: a small clean phantom (QuirkConfig.none()), patches at the labelled points,
   ``measure_detailed`` per row. Truth: canal AP from synth_landmarks.csv; sac area, foramen and recess sizes
   from the re-drawn anatomy (`radspine.synth.study_patients`, drawn by make_dataset's own code).
2. Held-out score (unless ``--no-heldout``): a second phantom of another seed with the default variation mix
   (never tuned on), a localizer trained on its train split, the test split graded at the *predicted*
   points, with the structure-mask features (``labels``) and without them (``nonarrow``: no morphometry, no
   mask-ROI radiomics), same localizer and test points, against the training labels' per-level priors.

Prints one JSON object.

    python benchmarks/morphometry_bench.py [--studies 4] [--size 128] [--seed 1]
        [--heldout-train 40 --heldout-test 20 --heldout-seed 9090 --trials 3 --loc-init shipped
         --preset rsna | --no-heldout]
"""

from __future__ import annotations

import argparse
import json
import math
import tempfile
import time
from pathlib import Path

import numpy as np
import pandas as pd
from scipy.stats import spearmanr


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--studies", type=int, default=4)
    ap.add_argument("--size", type=int, default=128)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--no-heldout", action="store_true", help="measurement error and cost only")
    ap.add_argument("--heldout-train", type=int, default=40)
    ap.add_argument("--heldout-test", type=int, default=20)
    ap.add_argument("--heldout-seed", type=int, default=9090)
    ap.add_argument("--trials", type=int, default=3)
    ap.add_argument("--loc-epochs", type=int, default=10)
    ap.add_argument("--loc-init", default=None, help="'shipped': fine-tune the packaged localizer")
    ap.add_argument("--preset", default=None, help="synth preset of the held-out phantom (e.g. rsna)")
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--work", type=Path, default=None, help="keep the held-out run's files here")
    a = ap.parse_args()

    from radspine.features.morphometry import measure_detailed
    from radspine.geometry import nearest_stack, pixel_to_world
    from radspine.io.dataset import Dataset
    from radspine.io.volumes import load_study_volumes
    from radspine.patches import PatchConfig, extract_patch
    from radspine.synth import QuirkConfig, make_dataset, study_patients
    from radspine.synth.anatomy import LEVEL_DISC

    q = QuirkConfig.none()
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        make_dataset(root, a.studies, 0, seed=a.seed, size=a.size, quirks=q)
        pats = study_patients(a.seed, a.studies, size=a.size, quirks=q)
        truth = pd.read_csv(root / "synth_truth.csv").set_index(["study_id", "condition", "level"]).severity
        ds = Dataset.open(root)
        cfg = PatchConfig()
        rows, t_total = [], 0.0
        for st in ds.studies("train"):
            vols = load_study_volumes(st)
            p = pats[st.study_id]
            for r in ds.coordinates[ds.coordinates.study_id == st.study_id].itertuples():
                vol = vols.find(int(r.series_id), int(r.instance_number))
                pt = pixel_to_world(vol, float(r.x), float(r.y), vol.slice_index(int(r.instance_number)))
                patches = {}
                for name, spec in cfg.specs_for(r.condition).items():
                    v, pr, inside = nearest_stack(vols.stacks(spec.series), pt)
                    patches[name] = extract_patch(v, pt, spec) if inside and abs(pr.distance_mm) <= 8 else None
                t0 = time.perf_counter()
                res = measure_detailed(r.condition, patches)
                t_total += time.perf_counter() - t0
                disc, side = LEVEL_DISC[r.level], 0 if r.condition.startswith("left") else 1
                t = {"sev": truth[(st.study_id, r.condition, r.level)], "disc_height_mm": p.h_disc[disc]}
                if r.condition == "spinal_canal_stenosis":
                    t.update(canal_ap_mm=p.canal_ap_at(disc), canal_ap_sag_mm=p.canal_ap_at(disc),
                             dural_sac_area_mm2=p.sac_area_at(disc))
                elif "foraminal" in r.condition:
                    sn = p.foramen_nar[side][disc]
                    hf = (0.5 * p.h_disc[disc] + 0.3 * 26.5 * p.size) * (1 - 0.45 * sn)
                    t.update(foramen_area_mm2=math.pi * hf * 5.0 * p.size * (1 - 0.6 * sn), foramen_height_mm=2 * hf)
                else:
                    t.update(recess_depth_mm=2 * 4.0 * p.size * (1 - p.recess_nar[side][disc]))
                rows.append((t, res.values, res.reasons))
    out: dict = {"studies": a.studies, "size": a.size, "rows": len(rows),
                 "ms_per_row": round(1e3 * t_total / max(len(rows), 1), 2), "measurements": {}}
    names = ["dural_sac_area_mm2", "canal_ap_mm", "canal_ap_sag_mm", "foramen_area_mm2", "foramen_height_mm",
             "recess_depth_mm", "disc_height_mm"]
    for name in names:
        pairs = [(v[f"mor_{name}"], t[name], t["sev"]) for t, v, _ in rows if name in t]
        ok = [(m, tr, s) for m, tr, s in pairs if np.isfinite(m)]
        if not ok:
            continue
        m, tr, s = (np.array(x) for x in zip(*ok, strict=True))
        out["measurements"][name] = {
            "measured": f"{len(ok)}/{len(pairs)}",
            "median_error": round(float(np.median(m - tr)), 3),
            "median_abs_error": round(float(np.median(np.abs(m - tr))), 3),
            "median_rel_abs_error": round(float(np.median(np.abs(m - tr) / tr)), 4),
            "spearman_vs_truth": round(float(spearmanr(m, tr)[0]), 3),
            "spearman_vs_severity": round(float(spearmanr(m, s)[0]), 3),
            "truth_spearman_vs_severity": round(float(spearmanr(tr, s)[0]), 3),
        }
    reasons: dict[str, int] = {}
    for _, _, why in rows:
        for k, r in why.items():
            if r not in ("", "not applicable"):
                reasons[f"{k}: {r}"] = reasons.get(f"{k}: {r}", 0) + 1
    out["nan_reasons"] = reasons
    if not a.no_heldout:
        out["heldout"] = heldout(a)
    print(json.dumps(out, indent=2))


def heldout(a: argparse.Namespace) -> dict:
    """Held-out score at predicted points with and without the structure-mask features (one phantom,
    localizer and set of test points for both), and each as a ratio to the per-level priors."""
    import sys

    import torch

    from radspine.features.config import FeaturesConfig
    from radspine.synth import make_dataset

    sys.path.insert(0, str(Path(__file__).resolve().parent))
    import skew_experiment as skew

    torch.set_num_threads(2)
    with tempfile.TemporaryDirectory() as tmp:
        work = a.work or Path(tmp) / "work"
        data = work / "phantom"
        if not (data / "test_solution.csv").exists():
            make_dataset(data, a.heldout_train, a.heldout_test, seed=a.heldout_seed, size=a.size, workers=a.workers,
                         preset=a.preset)
        res: dict = {"train_studies": a.heldout_train, "test_studies": a.heldout_test, "seed": a.heldout_seed,
                     "size": a.size, "preset": a.preset, "trials": a.trials, "loc_init": a.loc_init,
                     **skew.prepare(data, work, a.loc_epochs, init=a.loc_init)}  # fmt: skip
        res["priors_score"] = pri = skew.priors_score(data)
        base = FeaturesConfig()
        for name, v in (("with", "labels"), ("without", "nonarrow")):
            cfg, points = skew.variant_config(v, base)
            r = skew.run_variant(data, work, v, cfg, points, a.trials, a.workers)
            res[name] = {**r, "vs_priors": round(r["heldout_score"] / pri, 3)}
        res["extract_cost_ratio"] = round(
            (res["with"]["extract_train_s"] + res["with"]["extract_test_s"])
            / max(res["without"]["extract_train_s"] + res["without"]["extract_test_s"], 1e-9), 3)
    return res


if __name__ == "__main__":
    main()
