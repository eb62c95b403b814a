"""Benchmark: radspine's fast radiomics path vs plain ``RadiomicsFeatureExtractor.execute``.

Same ROIs, same settings, one process, one BLAS thread. ROIs are radspine patches: 64×64 (2D) and
5×64×64 (3D) textured images with the PatchSpec ellipse ROI. Timings are interleaved ROI by ROI
(fast, plain, plain with one SimpleITK thread) so load from other processes hits all paths alike.
Prints one JSON object.

    python benchmarks/radiomics_bench.py [--n2d 40] [--n3d 20] [--n-mask 20] [--seed 0]

``mask_rois``: structure masks (radspine.features.masks), a new mask per ROI, so shape is never cached.
"""

from __future__ import annotations

import os

for _v in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_v, "1")

import argparse  # noqa: E402
import json  # noqa: E402
import logging  # noqa: E402
import math  # noqa: E402
import platform  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402

REL_TOL = 1e-6
ABS_FLOOR = 1e-9  # |a-b| below this counts as equal (values that are 0 up to roundoff)


def _rois(n: int, ndim: int, rng: np.random.Generator) -> tuple[list[np.ndarray], np.ndarray, tuple]:
    from radspine.constants import SAG_T2
    from radspine.patches import PatchSpec, roi_mask

    spec = PatchSpec(
        series=SAG_T2,
        size_mm=(48.0, 48.0),
        spacing_mm=0.75,
        neighbors=2 if ndim == 3 else 0,
        slice_step_mm=3.5,
        roi_size_mm=(36.0, 40.0),
    )
    shape = spec.shape if ndim == 3 else spec.shape[1:]
    m2 = roi_mask(spec)
    mask = np.broadcast_to(m2, shape).astype(np.uint8).copy()
    yy, xx = np.indices(shape[-2:])
    imgs = []
    for _ in range(n):
        # Smooth anatomy-like gradients plus speckle, on the normalised (p1→0, p99→1) scale.
        base = 0.5 + 0.3 * np.sin(xx / rng.uniform(4, 12)) * np.cos(yy / rng.uniform(4, 12))
        img = base + rng.normal(0, rng.uniform(0.05, 0.2), shape)
        imgs.append(img.astype(np.float32))
    spacing = (spec.slice_step_mm, spec.spacing_mm, spec.spacing_mm)[-ndim:]
    return imgs, mask, spacing


def _sitk_pair(img, mask, spacing):
    import SimpleITK as sitk

    i = sitk.GetImageFromArray(img)
    i.SetSpacing(tuple(float(s) for s in spacing[::-1]))
    m = sitk.GetImageFromArray(mask)
    m.CopyInformation(i)
    return i, m


def _run(params: dict, ndim: int, n: int, rng: np.random.Generator) -> dict:
    import SimpleITK as sitk
    from radiomics import featureextractor

    from radspine.features.radiomics import RadiomicsExtractor

    imgs, mask, spacing = _rois(n, ndim, rng)
    fast = RadiomicsExtractor(params, ndim=ndim)
    plain = featureextractor.RadiomicsFeatureExtractor(dict(params))
    default_threads = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()

    def run_plain(img, threads):
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(threads)
        try:
            out = plain.execute(*_sitk_pair(img, mask, spacing))
        finally:
            sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(default_threads)
        return {k: float(v) for k, v in out.items() if not k.startswith("diagnostics_")}

    # Warm-up (imports, first-call allocations) outside the timing.
    fast.extract(imgs[0], mask, spacing)
    run_plain(imgs[0], default_threads)
    t_fast, t_nocache, t_plain, t_plain1 = [], [], [], []
    max_rel, worst, raw_max_rel, n_compared, names_equal = 0.0, None, 0.0, 0, True
    for img in imgs:
        t0 = time.perf_counter()
        f = fast.extract(img, mask, spacing)
        t1 = time.perf_counter()
        fast._shape_cache.clear()  # same ROI without the per-mask shape cache
        fast.extract(img, mask, spacing)
        t2 = time.perf_counter()
        p = run_plain(img, default_threads)
        t3 = time.perf_counter()
        run_plain(img, 1)
        t4 = time.perf_counter()
        t_fast.append(t1 - t0)
        t_nocache.append(t2 - t1)
        t_plain.append(t3 - t2)
        t_plain1.append(t4 - t3)
        names_equal &= set(f) == set(p)
        for k, b in p.items():
            a = f.get(k, math.nan)
            if math.isnan(a) and math.isnan(b):
                continue
            diff = abs(a - b)
            raw = diff / max(abs(a), abs(b)) if diff > 0 else 0.0
            raw_max_rel = max(raw_max_rel, raw)
            rel = 0.0 if diff <= ABS_FLOOR else raw
            n_compared += 1
            if not rel <= max_rel:
                max_rel, worst = rel, k
    ms = lambda t: 1e3 * float(np.mean(t))  # noqa: E731
    med = lambda t: 1e3 * float(np.median(t))  # noqa: E731
    return {
        "roi_shape": list(imgs[0].shape),
        "roi_voxels": int(mask.sum()),
        "n_rois": n,
        "n_features": len(fast.feature_names),
        "ms_per_roi_fast": round(ms(t_fast), 3),
        "ms_per_roi_fast_no_shape_cache": round(ms(t_nocache), 3),
        "ms_per_roi_plain": round(ms(t_plain), 3),
        "ms_per_roi_plain_1_sitk_thread": round(ms(t_plain1), 3),
        "median_ms_fast": round(med(t_fast), 3),
        "median_ms_plain": round(med(t_plain), 3),
        "speedup": round(ms(t_plain) / ms(t_fast), 2),
        "speedup_no_shape_cache": round(ms(t_plain) / ms(t_nocache), 2),
        "speedup_vs_plain_1_sitk_thread": round(ms(t_plain1) / ms(t_fast), 2),
        "max_rel_diff": max_rel,
        "worst_feature": worst,
        "max_rel_diff_without_abs_floor": raw_max_rel,
        "n_values_compared": n_compared,
        "names_identical": bool(names_equal),
        "within_tolerance": bool(max_rel <= REL_TOL and names_equal),
    }


def _mask_rois(n: int, rng: np.random.Generator) -> dict:
    """mask_2d.yaml on a new segmented structure mask per ROI (shape cache always misses) vs the same
    images with one fixed ellipse ROI (cache hits after the first), plus the fast/plain agreement."""
    from radspine.features.masks import dural_sac_mask
    from radspine.features.radiomics import CONFIG_DIR, RadiomicsExtractor, plain_extract
    from radspine.patches import Patch

    yy, xx = np.mgrid[0:64, 0:64]
    items = []
    for _ in range(n):
        a, b = rng.uniform(4.0, 9.0, 2)
        cy, cx = 31.5 + rng.normal(0, 1.5, 2)
        img = np.where(np.hypot((yy - cy) / a, (xx - cx) / b) * 0.75 <= 1.0, 1.0, 0.25) + rng.normal(0, 0.06, (64, 64))
        img = img.astype(np.float32)
        p = Patch(image=img[None], mask=np.ones((64, 64), np.uint8), inside=np.ones((1, 64, 64), bool),
                  inside_fraction=1.0, spacing=(3.5, 0.75, 0.75), center_world=np.zeros(3))
        t0 = time.perf_counter()
        m = dural_sac_mask(p, "axial").mask.astype(np.uint8)
        items.append((img, m, time.perf_counter() - t0))
    ellipse = ((yy - 31.5) / 10.0) ** 2 + ((xx - 31.5) / 10.0) ** 2 <= 1
    ext = RadiomicsExtractor(CONFIG_DIR / "mask_2d.yaml", ndim=2)
    t_new = t_fixed = 0.0
    worst = 0.0
    for img, m, _ in items:
        t0 = time.perf_counter()
        fast = ext.extract(img, m, (0.75, 0.75))
        t_new += time.perf_counter() - t0
        t0 = time.perf_counter()
        ext.extract(img, ellipse.astype(np.uint8), (0.75, 0.75))
        t_fixed += time.perf_counter() - t0
        plain = plain_extract(ext.params, img, m, (0.75, 0.75))
        for k, v in plain.items():
            a_, b_ = fast[k], v
            if not (math.isnan(a_) and math.isnan(b_)):
                d = abs(a_ - b_)
                if d > ABS_FLOOR:
                    worst = max(worst, d / max(abs(a_), abs(b_)))
    return {
        "n": n,
        "ms_segment_per_roi": round(1e3 * sum(t for *_, t in items) / n, 3),
        "ms_per_roi_new_mask": round(1e3 * t_new / n, 3),
        "ms_per_roi_fixed_ellipse_cached_shape": round(1e3 * t_fixed / n, 3),
        "max_rel_diff_vs_plain": worst,
        "within_tolerance": worst <= REL_TOL,
    }


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n2d", type=int, default=40)
    ap.add_argument("--n3d", type=int, default=20)
    ap.add_argument("--n-config", type=int, default=10, help="ROIs per radspine config file")
    ap.add_argument("--n-mask", type=int, default=20, help="ROIs with a new structure mask each")
    ap.add_argument("--seed", type=int, default=0)
    a = ap.parse_args()

    import radiomics

    from radspine.features.radiomics import CONFIG_DIR, load_params

    logging.getLogger("radiomics").setLevel(logging.ERROR)  # after import: radiomics resets it
    rng = np.random.default_rng(a.seed)
    # "Original image, default classes" (all classes: shape2D for 2D, shape for 3D) on the normalised scale.
    default = {
        "setting": {"binWidth": 0.05, "additionalInfo": False},
        "imageType": {"Original": {}},
        "featureClass": {},
    }
    result = {
        "pyradiomics": radiomics.__version__,
        "numpy": np.__version__,
        "python": platform.python_version(),
        "cpu": platform.processor() or platform.machine(),
        "rel_tol": REL_TOL,
        "abs_floor": ABS_FLOOR,
        "settings": default,
        "2d": _run(default, 2, a.n2d, rng),
        "3d": _run(default, 3, a.n3d, rng),
        "configs": {},
    }
    for path in sorted(CONFIG_DIR.glob("*.yaml")):
        ndim = 3 if "3d" in path.stem else 2
        r = _run(load_params(path), ndim, a.n_config, rng)
        result["configs"][path.name] = {
            k: r[k]
            for k in (
                "n_features",
                "ms_per_roi_fast",
                "ms_per_roi_plain",
                "speedup",
                "max_rel_diff",
                "max_rel_diff_without_abs_floor",
            )
        }
    result["mask_rois"] = _mask_rois(a.n_mask, rng)
    result["targets_met"] = bool(
        result["2d"]["speedup"] >= 2.5
        and result["3d"]["speedup"] >= 1.8
        and result["2d"]["within_tolerance"]
        and result["3d"]["within_tolerance"]
        and result["mask_rois"]["within_tolerance"]
    )
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
