"""pyradiomics-equivalent texture features from (image, mask, spacing), computed fast.

Parameters come from pyradiomics' own params format (``imageType`` / ``featureClass`` / ``setting``),
validated by pyradiomics itself. Values match ``RadiomicsFeatureExtractor.execute`` (within ~1e-9
relative on our ROIs) but are computed faster:

* the ROI is discretised once per image type (pyradiomics re-bins in every feature class);
* the texture matrices come straight from pyradiomics' C extension (``radiomics._cmatrices``);
* the feature formulas are evaluated in numpy with shared intermediate terms, ``bincount`` for the GLCM
  sum/difference marginals and a batched symmetric eigen-solve for MCC (see :func:`_glcm_features`);
* no SimpleITK round trip for the Original image; filters (LoG, wavelet, …) are pyradiomics' own
  generators run with one SimpleITK thread (faster for small ROIs);
* shape features depend only on (mask, spacing), so they are cached per mask — a patch ROI mask is
  the same for every patch of a spec. Structure masks (``roi=...``, :mod:`radspine.features.masks`)
  are new for every ROI and always miss the cache (2D shape costs ~0.1 ms; see
  ``benchmarks/radiomics_bench.py``). The 3D shape values themselves still come from pyradiomics'
  C marching cubes (``radiomics._cshape``), whose O(vertices²) diameter search dominates a 3D ROI
  whenever its mask is new (~60 ms for a 5×48×54 ellipse cylinder); radspine's configs omit shape.

The formulas mirror pyradiomics 3.1 (glcm.py, glrlm.py, glszm.py, gldm.py, ngtdm.py, firstorder.py,
shape.py, shape2D.py); every deviation in evaluation order is a floating-point reassociation only.
Settings the fast path does not cover fall back to plain pyradiomics for the whole ROI:
voxel-based extraction, ``force2D``, ``resampledPixelSpacing``, ``normalize``, ``resegmentRange``,
``preCrop`` and the ``LBP3D`` image type.
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import logging
import math
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from radspine.constants import SERIES_SHORT
from radspine.errors import ConfigError

log = logging.getLogger(__name__)

__all__ = ["RadiomicsExtractor", "load_params", "column_name", "plain_extract", "CONFIG_DIR", "MASK_ROIS"]

CONFIG_DIR = Path(__file__).resolve().parents[3] / "configs" / "radiomics"

# Settings under which the fast path is not exact (or not implemented): whole-ROI fallback to pyradiomics.
_FALLBACK_SETTINGS = ("force2D", "resampledPixelSpacing", "normalize", "resegmentRange", "preCrop")
_FAST_IMAGE_TYPES = {
    "Original",
    "LoG",
    "Wavelet",
    "Square",
    "SquareRoot",
    "Logarithm",
    "Exponential",
    "Gradient",
    "LBP2D",
}
_EPS = np.spacing(1)


def load_params(params: str | Path | Mapping[str, Any]) -> dict[str, Any]:
    """Load and validate a pyradiomics params file/dict with pyradiomics' own schema.

    Raises :class:`ConfigError` (one line naming the file) when the file is missing or invalid.
    """
    import pykwalify.core
    import yaml
    from radiomics import getParameterValidationFiles

    name = str(params) if not isinstance(params, Mapping) else "<params dict>"
    if isinstance(params, Mapping):
        data = dict(params)
    else:
        path = Path(params)
        if not path.is_file():
            raise ConfigError(f"{path}: radiomics params file not found")
        try:
            data = yaml.safe_load(path.read_text()) or {}
        except yaml.YAMLError as err:
            raise ConfigError(f"{path}: not valid YAML ({str(err).splitlines()[0]})") from None
    schema_file, schema_funcs = getParameterValidationFiles()
    logging.getLogger("pykwalify").setLevel(logging.CRITICAL)
    try:
        pykwalify.core.Core(source_data=data, schema_files=[schema_file], extensions=[schema_funcs]).validate(
            raise_exception=True
        )
    except Exception as err:  # pykwalify raises SchemaError / ValueError / TypeError from the extensions
        msg = " ".join(str(err).split())
        raise ConfigError(f"{name}: invalid pyradiomics params: {msg[:300]}") from None
    return data


# ROI tags of structure masks (radspine.features.masks); the patch's fixed ellipse ROI has no tag.
MASK_ROIS: tuple[str, ...] = ("sac", "foramen", "recess")


def column_name(series: str, feature: str, roi: str | None = None) -> str:
    """``rad_<series short>[_<roi>]_<pyradiomics feature name>``.

    The feature name is pyradiomics' ``<imageType>_<class>_<feature>``; ``roi`` (one of
    :data:`MASK_ROIS`) marks features of a segmented structure mask, e.g.
    ``rad_axt2_sac_original_shape2D_MeshSurface``; without it the ROI is the patch's fixed ellipse
    (``rad_axt2_original_glcm_Contrast``). No pyradiomics image type starts with a ROI tag, so the two
    never collide.
    """
    short = SERIES_SHORT.get(series, series)
    if short not in SERIES_SHORT.values():
        raise ValueError(f"unknown series {series!r}; expected one of {sorted(SERIES_SHORT)}")
    if roi is not None and roi not in MASK_ROIS:
        raise ValueError(f"unknown ROI tag {roi!r}; expected one of {MASK_ROIS}")
    return f"rad_{short}_{roi}_{feature}" if roi else f"rad_{short}_{feature}"


def _quiet_pyradiomics() -> None:
    """Keep pyradiomics' per-ROI warnings (e.g. "GLCM is symmetrical…") out of batch logs.

    Importing ``radiomics`` resets its logger to INFO and adds a stderr handler, undoing any earlier
    CLI logging setup, so this runs after the import. radspine logs its own NaN reasons.
    """
    import radiomics

    radiomics.setVerbosity(logging.ERROR)
    logging.getLogger("radiomics").setLevel(logging.ERROR)


def _to_sitk(image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]):
    import SimpleITK as sitk

    img = sitk.GetImageFromArray(image)
    img.SetSpacing(tuple(float(s) for s in spacing[::-1]))  # SimpleITK spacing is (x, y[, z])
    msk = sitk.GetImageFromArray(mask.astype(np.uint8))
    msk.CopyInformation(img)
    return img, msk


@contextlib.contextmanager
def _sitk_threads(n: int | None) -> Iterator[None]:
    import SimpleITK as sitk

    if n is None:
        yield
        return
    old = sitk.ProcessObject.GetGlobalDefaultNumberOfThreads()
    sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(n)
    try:
        yield
    finally:
        sitk.ProcessObject.SetGlobalDefaultNumberOfThreads(old)


def plain_extract(
    params: Mapping[str, Any], image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]
) -> dict[str, float]:
    """Features from plain ``RadiomicsFeatureExtractor.execute`` (reference / fallback), diagnostics dropped."""
    from radiomics import featureextractor

    ext = featureextractor.RadiomicsFeatureExtractor(dict(params))
    img, msk = _to_sitk(np.asarray(image), np.asarray(mask), spacing)
    out = ext.execute(img, msk)
    return {k: float(v) for k, v in out.items() if not k.startswith("diagnostics_")}


class RadiomicsExtractor:
    """Fast pyradiomics-equivalent extractor for one params file and one dimensionality.

    Args:
        params: path to a pyradiomics params YAML, or the params dict itself.
        ndim: 2 for (H, W) patches passed as true 2D images, 3 for (S, H, W) stacks.
        series: series type or short name; when given, keys are ``rad_<series>_<feature>``.
        roi: structure-mask tag (:data:`MASK_ROIS`); keys become ``rad_<series>_<roi>_<feature>``.
        fast: False forces plain pyradiomics (reference mode, same output names).
        sitk_threads: SimpleITK threads while filters run (None leaves the global default).
    """

    def __init__(
        self,
        params: str | Path | Mapping[str, Any],
        *,
        ndim: int = 2,
        series: str | None = None,
        fast: bool = True,
        sitk_threads: int | None = 1,
        roi: str | None = None,
    ) -> None:
        if roi is not None and roi not in MASK_ROIS:
            raise ValueError(f"unknown ROI tag {roi!r}; expected one of {MASK_ROIS}")
        if ndim not in (2, 3):
            raise ValueError(f"ndim must be 2 or 3, got {ndim}")
        from radiomics import featureextractor, getFeatureClasses

        _quiet_pyradiomics()
        self.params = load_params(params)
        self.source = str(params) if not isinstance(params, Mapping) else "<params dict>"
        self.ndim = ndim
        self.series = series
        self.roi = roi
        self.sitk_threads = sitk_threads
        # Let pyradiomics resolve defaults exactly as execute() would.
        ref = featureextractor.RadiomicsFeatureExtractor(dict(self.params))
        self.settings: dict[str, Any] = dict(ref.settings)
        self.image_types: dict[str, dict[str, Any]] = {
            k: dict(v or {}) for k, v in ref.enabledImagetypes.items()
        }
        self.classes: dict[str, list[str] | None] = {}
        classes = getFeatureClasses()
        for cname, feats in ref.enabledFeatures.items():
            if feats:  # explicit list: deprecated features that only raise are dropped by pyradiomics
                self.classes[cname] = [f for f in feats if not _raises_deprecation(cname, f)]
            else:
                names = classes[cname].getFeatureNames()
                self.classes[cname] = [f for f, dep in sorted(names.items()) if not dep]
        reasons = [s for s in _FALLBACK_SETTINGS if self.settings.get(s)]
        reasons += [t for t in self.image_types if t not in _FAST_IMAGE_TYPES]
        self.fallback_reasons: list[str] = reasons
        self.fast = fast and not reasons
        if fast and reasons:
            log.info(
                "radiomics %s: plain pyradiomics path (fast path does not cover %s)", self.source, reasons
            )
        self._shape_cache: dict[bytes, dict[str, float]] = {}
        self.feature_names: list[str] = self._feature_names()

    # ------------------------------------------------------------------ names
    def _image_type_names(self, image_type: str, kwargs: dict[str, Any]) -> list[str]:
        if image_type == "Original":
            return ["original"]
        if image_type == "LoG":
            return [f"log-sigma-{str(s).replace('.', '-')}-mm-3D" for s in kwargs.get("sigma", []) if s > 0]
        if image_type == "Wavelet":
            n_ax = self.ndim
            level = int(kwargs.get("level", 1))
            names = []
            details = ["".join(p) for p in itertools.product("LH", repeat=n_ax) if "H" in p]
            for idx in range(1, level + 1):
                prefix = "wavelet" if idx == 1 else f"wavelet{idx}"
                names += [f"{prefix}-{d}" for d in details]
            names.append(("wavelet" if level == 1 else f"wavelet{level}") + "-" + "L" * n_ax)
            return names
        simple = {
            "Square": "square",
            "SquareRoot": "squareroot",
            "Logarithm": "logarithm",
            "Exponential": "exponential",
            "Gradient": "gradient",
            "LBP2D": "lbp-2D",
        }
        if image_type in simple:
            return [simple[image_type]]
        return []  # LBP3D: names only known from a plain run

    def _feature_names(self) -> list[str]:
        names: list[str] = []
        shape_cls = "shape" if self.ndim == 3 else "shape2D"
        if shape_cls in self.classes:
            names += [f"original_{shape_cls}_{f}" for f in self.classes[shape_cls]]
        for itype, kw in self.image_types.items():
            args = dict(self.settings, **kw)
            for iname in self._image_type_names(itype, args):
                for cname, feats in self.classes.items():
                    if cname.startswith("shape"):
                        continue
                    names += [f"{iname}_{cname}_{f}" for f in feats]
        return names

    def column(self, feature: str) -> str:
        """Output key of a pyradiomics feature name (``rad_<series>_…`` when a series is set)."""
        if not self.series:
            return f"{self.roi}_{feature}" if self.roi else feature
        return column_name(self.series, feature, self.roi)

    @property
    def columns(self) -> list[str]:
        """Output keys in order."""
        return [self.column(f) for f in self.feature_names]

    # ------------------------------------------------------------------ public
    def nan_features(self) -> dict[str, float]:
        """All-NaN output (degenerate ROI, missing series)."""
        return {c: math.nan for c in self.columns}

    def extract(self, image: np.ndarray, mask: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
        """Features of the ROI ``mask != 0`` of ``image`` with voxel ``spacing`` (numpy axis order, mm).

        A degenerate ROI (empty, single voxel / too few dimensions, constant or non-finite intensities)
        yields all-NaN features and a logged reason; it never raises for data problems.
        """
        image = np.asarray(image)
        mask = np.asarray(mask)
        if image.ndim != self.ndim or mask.shape != image.shape or len(spacing) != self.ndim:
            raise ValueError(
                f"radiomics {self.source}: expected {self.ndim}D image, same-shape mask and {self.ndim} "
                f"spacings; got image {image.shape}, mask {mask.shape}, spacing {tuple(spacing)}"
            )
        roi = mask != 0
        reason = self._degenerate(image, roi)
        if reason is not None:
            log.info("radiomics: NaN features (%s)", reason)
            return self.nan_features()
        spacing = tuple(float(s) for s in spacing)
        try:
            if self.fast:
                raw = self._extract_fast(image, roi, spacing)
            else:
                raw = plain_extract(self.params, image, roi.astype(np.uint8), spacing)
        except Exception as err:  # a feature library failure must not stop a batch
            log.warning(
                "radiomics: NaN features (%s: %s)", type(err).__name__, str(err).splitlines()[0][:200]
            )
            return self.nan_features()
        return {self.column(f): float(raw.get(f, math.nan)) for f in self.feature_names}

    def _degenerate(self, image: np.ndarray, roi: np.ndarray) -> str | None:
        n = int(roi.sum())
        if n == 0:
            return "empty ROI (outside the image or blank mask)"
        vals = image[roi]
        if not np.all(np.isfinite(vals)):
            return "non-finite intensities in ROI"
        if float(vals.max()) == float(vals.min()):
            return f"constant intensities in ROI ({float(vals.min()):.4g})"
        idx = np.nonzero(roi)
        extent = np.array([i.max() - i.min() + 1 for i in idx])
        ndims = int((extent > 1).sum())
        min_dims = int(self.settings.get("minimumROIDimensions", 2))
        if ndims < min_dims:
            return f"ROI spans {ndims} dimension(s), minimum {min_dims}"
        min_size = self.settings.get("minimumROISize")
        if min_size is not None and n <= int(min_size):
            return f"ROI has {n} voxels, minimum {min_size}"
        return None

    # ------------------------------------------------------------------ fast path
    def _extract_fast(
        self, image: np.ndarray, roi: np.ndarray, spacing: tuple[float, ...]
    ) -> dict[str, float]:
        idx = np.nonzero(roi)
        lo = [int(i.min()) for i in idx]
        hi = [int(i.max()) + 1 for i in idx]
        box = tuple(slice(a, b) for a, b in zip(lo, hi, strict=True))
        # pyradiomics hands every class an image cropped to the ROI's bounding box (no padding).
        c_roi = np.ascontiguousarray(roi[box])
        out: dict[str, float] = {}
        shape_cls = "shape" if self.ndim == 3 else "shape2D"
        if shape_cls in self.classes:
            out.update(self._shape(c_roi, spacing, shape_cls))
        texture = [c for c in self.classes if not c.startswith("shape")]
        if not texture:
            return out
        for itype, kw in self.image_types.items():
            args = dict(self.settings, **kw)
            if itype == "Original":
                out.update(self._texture(np.ascontiguousarray(image[box]), c_roi, spacing, "original", args))
                continue
            import SimpleITK as sitk
            from radiomics import imageoperations

            img, msk = _to_sitk(image, roi.astype(np.uint8), spacing)
            with _sitk_threads(self.sitk_threads):
                for fimg, fname, fargs in getattr(imageoperations, f"get{itype}Image")(img, msk, **args):
                    arr = sitk.GetArrayFromImage(fimg)
                    out.update(self._texture(np.ascontiguousarray(arr[box]), c_roi, spacing, fname, fargs))
        return out

    def _shape(self, c_roi: np.ndarray, spacing: tuple[float, ...], cls: str) -> dict[str, float]:
        key = hashlib.blake2b(
            c_roi.tobytes() + repr((c_roi.shape, spacing, cls)).encode(), digest_size=16
        ).digest()
        hit = self._shape_cache.get(key)
        if hit is None:
            feats = _shape3d(c_roi, spacing) if cls == "shape" else _shape2d(c_roi, spacing)
            hit = {f"original_{cls}_{f}": float(feats[f]) for f in self.classes[cls]}
            if len(self._shape_cache) > 256:
                self._shape_cache.clear()
            self._shape_cache[key] = hit
        return hit

    def _texture(
        self, arr: np.ndarray, roi: np.ndarray, spacing: tuple[float, ...], iname: str, args: dict[str, Any]
    ) -> dict[str, float]:
        from radiomics import cMatrices

        vals = arr[roi]
        edges = _bin_edges(vals, args)
        disc = np.zeros(arr.shape, dtype="int")
        disc[roi] = np.digitize(vals, edges)
        levels = np.unique(disc[roi])
        ng = int(levels.max())
        dist = np.array(args.get("distances", [1]))
        out: dict[str, float] = {}
        for cname, feats in self.classes.items():
            if cname.startswith("shape") or not feats:
                continue
            if cname == "firstorder":
                res = _firstorder(vals, disc[roi], spacing, args)
            elif cname == "glcm":
                P, angles = cMatrices.calculate_glcm(disc, roi, dist, ng, False, 0)
                res = _glcm_features(P[0], angles, levels, ng, spacing, args, set(feats))
            elif cname == "glrlm":
                P, angles = cMatrices.calculate_glrlm(disc, roi, ng, int(np.max(disc.shape)), False, 0)
                res = _glrlm_features(P[0], angles, levels, spacing, args)
            elif cname == "glszm":
                P = cMatrices.calculate_glszm(disc, roi, ng, int(roi.sum()), False, 0)
                res = _glszm_features(P[0], levels)
            elif cname == "gldm":
                P = cMatrices.calculate_gldm(disc, roi, dist, ng, int(args.get("gldm_a", 0)), False, 0)
                res = _gldm_features(P[0], levels)
            elif cname == "ngtdm":
                P = cMatrices.calculate_ngtdm(disc, roi, dist, ng, False, 0)
                res = _ngtdm_features(P[0])
            else:  # unknown class: pyradiomics' schema would have rejected it
                continue
            for f in feats:
                out[f"{iname}_{cname}_{f}"] = float(res[f]) if f in res else math.nan
        return out


_DEPRECATED_RAISING = {
    ("glcm", "Dissimilarity"),
    ("glcm", "Homogeneity1"),
    ("glcm", "Homogeneity2"),
    ("glcm", "SumVariance"),
    ("gldm", "GrayLevelNonUniformityNormalized"),
    ("gldm", "DependencePercentage"),
}


def _raises_deprecation(cname: str, feature: str) -> bool:
    return (cname, feature) in _DEPRECATED_RAISING


# ---------------------------------------------------------------------- feature math
def _bin_edges(vals: np.ndarray, args: dict) -> np.ndarray:
    """pyradiomics' ``imageoperations.getBinEdges``, with ndarray min/max instead of Python's builtins.

    The builtins iterate element by element (~0.5 ms per ROI); ``ndarray.min`` returns the same scalar
    type and value, so the edges are bit-identical.
    """
    from radiomics import imageoperations

    if args.get("binCount") is not None:
        return imageoperations.getBinEdges(vals, **args)
    bw = args.get("binWidth", 25)
    minimum, maximum = vals.min(), vals.max()
    low = minimum - (minimum % bw)
    edges = np.arange(low, maximum + 2 * bw, bw)
    if len(edges) == 1:  # flat region: one bin, as numpy.histogram would give
        edges = [edges[0] - 0.5, edges[0] + 0.5]
    return edges


def _firstorder(x: np.ndarray, disc: np.ndarray, spacing: tuple[float, ...], args: dict) -> dict[str, float]:
    x = x.astype("float")
    n = x.size
    shift = args.get("voxelArrayShift", 0)
    _, counts = np.unique(disc, return_counts=True)
    p = counts / float(n)
    mean = x.mean()
    dev = x - mean
    m2 = np.mean(dev**2)
    m3 = np.mean(dev**3)
    m4 = np.mean(dev**4)
    if m2 == 0:  # flat region, as pyradiomics
        m2 = 1.0
    p10, p25, p50, p75, p90 = np.percentile(x, [10, 25, 50, 75, 90])
    energy = np.sum((x + shift) ** 2)
    in_band = x[(x >= p10) & (x <= p90)]
    std = np.std(x)
    return {
        "Energy": energy,
        "TotalEnergy": energy * float(np.multiply.reduce(spacing)),
        "Entropy": -np.sum(p * np.log2(p + _EPS)),
        "Minimum": x.min(),
        "10Percentile": p10,
        "90Percentile": p90,
        "Maximum": x.max(),
        "Mean": mean,
        "Median": p50,
        "InterquartileRange": p75 - p25,
        "Range": x.max() - x.min(),
        "MeanAbsoluteDeviation": np.mean(np.abs(dev)),
        "RobustMeanAbsoluteDeviation": np.mean(np.abs(in_band - in_band.mean())),
        "RootMeanSquared": np.sqrt(energy / n),
        "StandardDeviation": std,
        "Skewness": m3 / m2**1.5,
        "Kurtosis": m4 / m2**2.0,
        "Variance": std**2,
        "Uniformity": np.sum(p**2),
    }


def _angle_weights(angles: np.ndarray, spacing: tuple[float, ...], norm: str, glcm: bool) -> np.ndarray:
    sp = np.asarray(spacing, dtype=float)
    a = np.abs(np.asarray(angles, dtype=float)) * sp
    if norm == "infinity":
        d = a.max(axis=1)
    elif norm == "euclidean":
        d = np.sqrt(np.sum(a**2, axis=1))
    elif norm == "manhattan":
        d = a.sum(axis=1)
    else:  # "no_weighting" and unknown norms: weight 1, as pyradiomics
        return np.ones(len(angles))
    return np.exp(-(d**2)) if glcm else d


def _weighted_angles(
    P: np.ndarray, angles: np.ndarray, spacing: tuple[float, ...], args: dict, *, glcm: bool
) -> tuple[np.ndarray, np.ndarray]:
    """Apply pyradiomics' optional angle weighting, drop empty angles, return (P, per-angle sums).

    Sums of zero become NaN, as pyradiomics' division by an empty matrix does.
    """
    norm = args.get("weightingNorm")
    if norm is not None:
        P = np.sum(P * _angle_weights(angles, spacing, norm, glcm)[None, None, :], 2, keepdims=True)
    s = P.sum((0, 1))
    if P.shape[2] > 1:
        keep = s != 0
        if not keep.all():
            P, s = P[:, :, keep], s[keep]
    return P, np.where(s == 0, np.nan, s)


def _nanmean(v: np.ndarray) -> float:
    """Mean over angles ignoring NaN angles, as pyradiomics (NaN, silently, when all are NaN)."""
    v = np.asarray(v, dtype=float)
    ok = ~np.isnan(v)
    return float(v[ok].mean()) if ok.any() else math.nan


def _glcm_features(
    P: np.ndarray,
    angles: np.ndarray,
    levels: np.ndarray,
    ng: int,
    spacing: tuple[float, ...],
    args: dict,
    wanted: set[str],
) -> dict[str, float]:
    """GLCM features; P is (Ng, Ng, Na) from the C extension, levels the gray levels present."""
    k = levels - 1
    P = P[np.ix_(k, k)].astype("float")
    if args.get("symmetricalGLCM", True):
        P = P + P.transpose(1, 0, 2)
    P, s = _weighted_angles(P, angles, spacing, args, glcm=True)
    P = P / s[None, None, :]
    na = P.shape[2]
    g = levels.astype("float")
    i, j = g[:, None, None], g[None, :, None]
    px = P.sum(1)  # (Ng, Na) marginal over j
    py = P.sum(0)
    ux = np.sum(g[:, None] * px, 0)  # (Na,)
    uy = np.sum(g[:, None] * py, 0)
    # Marginals p_{x+y}(k), p_{x-y}(k) by bincount instead of one boolean mask per k.
    ksum = (g[:, None] + g[None, :]).astype(int).ravel() - 2
    kdiff = np.abs(g[:, None] - g[None, :]).astype(int).ravel()
    Pf = P.reshape(-1, na)
    pxAddy = np.stack([np.bincount(ksum, Pf[:, a], minlength=2 * ng - 1) for a in range(na)], 1)
    pxSuby = np.stack([np.bincount(kdiff, Pf[:, a], minlength=ng) for a in range(na)], 1)
    kValuesSum = np.arange(2, 2 * ng + 1, dtype="float")[:, None]
    kValuesDiff = np.arange(0, ng, dtype="float")[:, None]
    with np.errstate(divide="ignore", invalid="ignore"):
        HXY = -np.sum(P * np.log2(P + _EPS), (0, 1))
        t = (i + j) - ux - uy
        t2 = t * t
        di = i - ux
        dj = j - uy
        sigx = np.sum(P * di**2, (0, 1)) ** 0.5
        sigy = np.sum(P * dj**2, (0, 1)) ** 0.5
        corm = np.sum(P * di * dj, (0, 1))
        corr = corm / (sigx * sigy + _EPS)
        corr[sigx * sigy == 0] = 1
        diffavg = np.sum(kValuesDiff * pxSuby, 0)
        HX = -np.sum(px * np.log2(px + _EPS), 0)
        HY = -np.sum(py * np.log2(py + _EPS), 0)
        pxpy = px[:, None, :] * py[None, :, :]
        HXY1 = -np.sum(P * np.log2(pxpy + _EPS), (0, 1))
        HXY2 = -np.sum(pxpy * np.log2(pxpy + _EPS), (0, 1))
        div = np.fmax(HX, HY)
        imc1 = HXY - HXY1
        imc1 = np.where(div != 0, imc1 / np.where(div != 0, div, 1), 0.0)
        imc2 = (1 - np.e ** (-2 * (HXY2 - HXY))) ** 0.5
        imc2[HXY2 == HXY] = 0
        res = {
            "Autocorrelation": _nanmean(np.sum(P * (i * j), (0, 1))),
            "JointAverage": float(ux.mean()),
            "ClusterProminence": _nanmean(np.sum(P * t2 * t2, (0, 1))),
            "ClusterShade": _nanmean(np.sum(P * t2 * t, (0, 1))),
            "ClusterTendency": _nanmean(np.sum(P * t2, (0, 1))),
            "Contrast": _nanmean(np.sum(P * (i - j) ** 2, (0, 1))),
            "Correlation": _nanmean(corr),
            "DifferenceAverage": _nanmean(diffavg),
            "DifferenceEntropy": _nanmean(-np.sum(pxSuby * np.log2(pxSuby + _EPS), 0)),
            "DifferenceVariance": _nanmean(np.sum(pxSuby * (kValuesDiff - diffavg) ** 2, 0)),
            "JointEnergy": _nanmean(np.sum(P**2, (0, 1))),
            "JointEntropy": _nanmean(HXY),
            "Imc1": _nanmean(imc1),
            "Imc2": _nanmean(imc2),
            "Idm": _nanmean(np.sum(pxSuby / (1 + kValuesDiff**2), 0)),
            "Idmn": _nanmean(np.sum(pxSuby / (1 + kValuesDiff**2 / ng**2), 0)),
            "Id": _nanmean(np.sum(pxSuby / (1 + kValuesDiff), 0)),
            "Idn": _nanmean(np.sum(pxSuby / (1 + kValuesDiff / ng), 0)),
            "InverseVariance": _nanmean(np.sum(pxSuby[1:] / kValuesDiff[1:] ** 2, 0)),
            "MaximumProbability": _nanmean(np.max(P, (0, 1))),
            "SumAverage": _nanmean(np.sum(kValuesSum * pxAddy, 0)),
            "SumEntropy": _nanmean(-np.sum(pxAddy * np.log2(pxAddy + _EPS), 0)),
            "SumSquares": _nanmean(np.sum(P * di**2, (0, 1))),
        }
    if "MCC" in wanted:
        res["MCC"] = _mcc(P, px, py)
    return res


def _mcc(P: np.ndarray, px: np.ndarray, py: np.ndarray) -> float:
    """Maximal correlation coefficient: sqrt of the 2nd largest eigenvalue of Q, mean over angles.

    pyradiomics builds Q_ij = sum_k P_ik P_jk / (px_i py_k + eps) and calls a general (non-symmetric)
    eigen-solver. Q = D_x^-1 P D_y^-1 P^T is similar to the symmetric S = D_x^-1/2 P D_y^-1 P^T D_x^-1/2,
    which has the same eigenvalues, so one batched ``eigvalsh`` does it (the eps in the denominator
    changes eigenvalues by < 1e-9 relative at ROI sizes where px·py ≫ 1e-7).
    """
    if P.shape[0] < 2:
        return 1.0  # flat region, as pyradiomics
    with np.errstate(divide="ignore", invalid="ignore"):
        sx = np.where(px > 0, 1.0 / np.sqrt(np.where(px > 0, px, 1.0)), 0.0)  # (Ng, Na)
        iy = np.where(py > 0, 1.0 / np.where(py > 0, py, 1.0), 0.0)
        A = P.transpose(2, 0, 1) * sx.T[:, :, None]  # (Na, Ng, Ng): D_x^-1/2 P
        S = (A * iy.T[:, None, :]) @ A.transpose(0, 2, 1)
    if not np.all(np.isfinite(S)):
        return math.nan
    ev = np.linalg.eigvalsh(S)  # ascending
    second = np.clip(ev[:, -2], 0.0, None)  # tiny negative roundoff → 0, as complex sqrt's real part
    return float(np.mean(np.sqrt(second)))


def _glrlm_features(
    P: np.ndarray, angles: np.ndarray, levels: np.ndarray, spacing: tuple[float, ...], args: dict
) -> dict[str, float]:
    P = P[levels - 1].astype("float")  # (Ng, Nr, Na)
    P, Nr = _weighted_angles(P, angles, spacing, args, glcm=False)
    pr = P.sum(0)  # (Nr, Na)
    pg = P.sum(1)  # (Ng, Na)
    iv = levels.astype(float)[:, None]
    jv = np.arange(1, P.shape[1] + 1, dtype=np.float64)
    keep_r = pr.sum(1) != 0
    P, jv, pr = P[:, keep_r], jv[keep_r], pr[keep_r]
    jv = jv[:, None]
    i2 = (levels.astype(float) ** 2)[:, None, None]  # (Ng, 1, 1)
    j2 = (jv**2)[None, :, :]  # (1, Nr, 1)
    with np.errstate(divide="ignore", invalid="ignore"):
        pgn = pg / Nr
        u_i = np.sum(pgn * iv, 0)
        prn = pr / Nr
        u_j = np.sum(prn * jv, 0)
        p = P / Nr
        return {
            "ShortRunEmphasis": _nanmean(np.sum(pr / jv**2, 0) / Nr),
            "LongRunEmphasis": _nanmean(np.sum(pr * jv**2, 0) / Nr),
            "GrayLevelNonUniformity": _nanmean(np.sum(pg**2, 0) / Nr),
            "GrayLevelNonUniformityNormalized": _nanmean(np.sum(pg**2, 0) / Nr**2),
            "RunLengthNonUniformity": _nanmean(np.sum(pr**2, 0) / Nr),
            "RunLengthNonUniformityNormalized": _nanmean(np.sum(pr**2, 0) / Nr**2),
            "RunPercentage": _nanmean(Nr / np.sum(pr * jv, 0)),
            "GrayLevelVariance": _nanmean(np.sum(pgn * (iv - u_i) ** 2, 0)),
            "RunVariance": _nanmean(np.sum(prn * (jv - u_j) ** 2, 0)),
            "RunEntropy": _nanmean(-np.sum(p * np.log2(p + _EPS), (0, 1))),
            "LowGrayLevelRunEmphasis": _nanmean(np.sum(pg / iv**2, 0) / Nr),
            "HighGrayLevelRunEmphasis": _nanmean(np.sum(pg * iv**2, 0) / Nr),
            "ShortRunLowGrayLevelEmphasis": _nanmean(np.sum(P / (i2 * j2), (0, 1)) / Nr),
            "ShortRunHighGrayLevelEmphasis": _nanmean(np.sum(P * i2 / j2, (0, 1)) / Nr),
            "LongRunLowGrayLevelEmphasis": _nanmean(np.sum(P * j2 / i2, (0, 1)) / Nr),
            "LongRunHighGrayLevelEmphasis": _nanmean(np.sum(P * (j2 * i2), (0, 1)) / Nr),
        }


def _glszm_features(P: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    P = P[levels - 1].astype("float")  # (Ng, Ns)
    ps = P.sum(0)
    pg = P.sum(1)
    iv = levels.astype(float)
    jv = np.arange(1, P.shape[1] + 1, dtype=np.float64)
    Nz = P.sum()
    Nz = 1.0 if Nz == 0 else Nz
    Np = np.sum(ps * jv)
    Np = 1.0 if Np == 0 else Np
    keep = ps != 0
    P, jv, ps = P[:, keep], jv[keep], ps[keep]
    i2, j2 = (iv**2)[:, None], (jv**2)[None, :]
    pgn, psn = pg / Nz, ps / Nz
    u_i, u_j = np.sum(pgn * iv), np.sum(psn * jv)
    p = P / Nz
    return {
        "SmallAreaEmphasis": np.sum(ps / jv**2) / Nz,
        "LargeAreaEmphasis": np.sum(ps * jv**2) / Nz,
        "GrayLevelNonUniformity": np.sum(pg**2) / Nz,
        "GrayLevelNonUniformityNormalized": np.sum(pg**2) / Nz**2,
        "SizeZoneNonUniformity": np.sum(ps**2) / Nz,
        "SizeZoneNonUniformityNormalized": np.sum(ps**2) / Nz**2,
        "ZonePercentage": Nz / Np,
        "GrayLevelVariance": np.sum(pgn * (iv - u_i) ** 2),
        "ZoneVariance": np.sum(psn * (jv - u_j) ** 2),
        "ZoneEntropy": -np.sum(p * np.log2(p + _EPS)),
        "LowGrayLevelZoneEmphasis": np.sum(pg / iv**2) / Nz,
        "HighGrayLevelZoneEmphasis": np.sum(pg * iv**2) / Nz,
        "SmallAreaLowGrayLevelEmphasis": np.sum(P / (i2 * j2)) / Nz,
        "SmallAreaHighGrayLevelEmphasis": np.sum(P * i2 / j2) / Nz,
        "LargeAreaLowGrayLevelEmphasis": np.sum(P * j2 / i2) / Nz,
        "LargeAreaHighGrayLevelEmphasis": np.sum(P * i2 * j2) / Nz,
    }


def _gldm_features(P: np.ndarray, levels: np.ndarray) -> dict[str, float]:
    P = P[levels - 1].astype("float")  # (Ng, Nd)
    jv = np.arange(1, P.shape[1] + 1, dtype="float64")
    pd = P.sum(0)
    pg = P.sum(1)
    keep = pd != 0
    P, jv, pd = P[:, keep], jv[keep], pd[keep]
    Nz = np.sum(pd)
    Nz = 1.0 if Nz == 0 else Nz
    iv = levels.astype(float)
    i2, j2 = (iv**2)[:, None], (jv**2)[None, :]
    pgn, pdn = pg / Nz, pd / Nz
    u_i, u_j = np.sum(pgn * iv), np.sum(pdn * jv)
    p = P / Nz
    return {
        "SmallDependenceEmphasis": np.sum(pd / jv**2) / Nz,
        "LargeDependenceEmphasis": np.sum(pd * jv**2) / Nz,
        "GrayLevelNonUniformity": np.sum(pg**2) / Nz,
        "DependenceNonUniformity": np.sum(pd**2) / Nz,
        "DependenceNonUniformityNormalized": np.sum(pd**2) / Nz**2,
        "GrayLevelVariance": np.sum(pgn * (iv - u_i) ** 2),
        "DependenceVariance": np.sum(pdn * (jv - u_j) ** 2),
        "DependenceEntropy": -np.sum(p * np.log2(p + _EPS)),
        "LowGrayLevelEmphasis": np.sum(pg / iv**2) / Nz,
        "HighGrayLevelEmphasis": np.sum(pg * iv**2) / Nz,
        "SmallDependenceLowGrayLevelEmphasis": np.sum(P / (i2 * j2)) / Nz,
        "SmallDependenceHighGrayLevelEmphasis": np.sum(P * i2 / j2) / Nz,
        "LargeDependenceLowGrayLevelEmphasis": np.sum(P * j2 / i2) / Nz,
        "LargeDependenceHighGrayLevelEmphasis": np.sum(P * j2 * i2) / Nz,
    }


def _ngtdm_features(P: np.ndarray) -> dict[str, float]:
    P = P[P[:, 0] != 0].astype("float")  # (Ngp, 3): count, s_i, gray level
    Nvp = P[:, 0].sum()
    p = P[:, 0] / Nvp
    s = P[:, 1]
    iv = P[:, 2]
    ngp = int(np.sum(P[:, 0] > 0))
    ps = p * s
    sum_ps = ps.sum()
    sum_s = s.sum()
    d = iv[:, None] - iv[None, :]
    pp = p[:, None] + p[None, :]
    div = ngp * (ngp - 1)
    contrast = np.sum(p[:, None] * p[None, :] * d**2) * sum_s / Nvp
    absdiff = np.sum(np.abs((iv * p)[:, None] - (iv * p)[None, :]))
    divisor = np.where(pp == 0, 1.0, pp)
    strength = np.sum(pp * d**2)
    return {
        "Coarseness": 1.0 / sum_ps if sum_ps != 0 else 1e6,
        "Contrast": contrast / div if div != 0 else 0.0,
        "Busyness": sum_ps / absdiff if absdiff != 0 else 0.0,
        "Complexity": np.sum(np.abs(d) * (ps[:, None] + ps[None, :]) / divisor) / Nvp,
        "Strength": strength / sum_s if sum_s != 0 else 0.0,
    }


def _principal_moments(roi_padded: np.ndarray, spacing: np.ndarray) -> tuple[int, np.ndarray]:
    coords = np.array(np.where(roi_padded != 0), dtype="int").transpose((1, 0))
    n = coords.shape[0]
    phys = coords * spacing[None, :]
    phys = phys - np.mean(phys, axis=0)
    phys /= np.sqrt(n)
    cov = np.dot(phys.T.copy(), phys)
    ev = np.linalg.eigvals(cov)
    ev[(ev < 0) & (ev > -1e-10)] = 0
    ev.sort()
    return n, ev


def _shape3d(c_roi: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    from radiomics import cShape

    sp = np.array(spacing, dtype=float)
    m = np.pad(c_roi.astype(bool), 1)
    area, vol, diam = cShape.calculate_coefficients(m, sp)
    n, ev = _principal_moments(m, sp)

    def root(*ix: int) -> float:
        return math.nan if any(ev[i] < 0 for i in ix) else 0.0

    return {
        "MeshVolume": vol,
        "VoxelVolume": n * float(np.prod(sp)),
        "SurfaceArea": area,
        "SurfaceVolumeRatio": area / vol,
        "Sphericity": (36 * np.pi * vol**2) ** (1.0 / 3.0) / area,
        "Compactness1": vol / (area ** (3.0 / 2.0) * np.sqrt(np.pi)),
        "Compactness2": (36.0 * np.pi) * (vol**2.0) / (area**3.0),
        "SphericalDisproportion": area / (36 * np.pi * vol**2) ** (1.0 / 3.0),
        "Maximum3DDiameter": diam[3],
        "Maximum2DDiameterSlice": diam[0],
        "Maximum2DDiameterColumn": diam[1],
        "Maximum2DDiameterRow": diam[2],
        "MajorAxisLength": root(2) + np.sqrt(max(ev[2], 0)) * 4,
        "MinorAxisLength": root(1) + np.sqrt(max(ev[1], 0)) * 4,
        "LeastAxisLength": root(0) + np.sqrt(max(ev[0], 0)) * 4,
        "Elongation": root(1, 2) + np.sqrt(max(ev[1], 0) / ev[2]),
        "Flatness": root(0, 2) + np.sqrt(max(ev[0], 0) / ev[2]),
    }


def _shape2d(c_roi: np.ndarray, spacing: tuple[float, ...]) -> dict[str, float]:
    from radiomics import cShape

    sp = np.array(spacing, dtype=float)
    m = np.pad(c_roi.astype(bool), 1)
    perimeter, surface, diameter = cShape.calculate_coefficients2D(m, sp)
    n, ev = _principal_moments(m, sp)
    sph = (2 * np.sqrt(np.pi * surface)) / perimeter
    nan0 = math.nan if ev[0] < 0 else 0.0
    nan1 = math.nan if ev[1] < 0 else 0.0
    return {
        "MeshSurface": surface,
        "PixelSurface": n * float(sp[0] * sp[1]),
        "Perimeter": perimeter,
        "PerimeterSurfaceRatio": perimeter / surface,
        "Sphericity": sph,
        "SphericalDisproportion": 1.0 / sph,
        "MaximumDiameter": diameter,
        "MajorAxisLength": nan1 + np.sqrt(max(ev[1], 0)) * 4,
        "MinorAxisLength": nan0 + np.sqrt(max(ev[0], 0)) * 4,
        "Elongation": nan0 + nan1 + np.sqrt(max(ev[0], 0) / ev[1]),
    }
