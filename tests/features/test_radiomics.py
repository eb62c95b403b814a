"""Fast radiomics path vs plain pyradiomics: identical names, values within 1e-6 relative; degenerate ROIs."""

from __future__ import annotations

import logging
import math

import numpy as np
import pytest

from radspine.constants import SAG_T2
from radspine.errors import ConfigError
from radspine.features.radiomics import CONFIG_DIR, RadiomicsExtractor, column_name, plain_extract

REL_TOL = 1e-6
ABS_FLOOR = 1e-9  # values that are 0 up to roundoff (e.g. MCC of a near-flat angle) compare absolutely


@pytest.fixture(autouse=True)
def _quiet_radiomics():
    import radiomics  # noqa: F401  (its import resets the logger level)

    logging.getLogger("radiomics").setLevel(logging.ERROR)


def _roi(shape, rng, kind="ellipse"):
    yy, xx = np.indices(shape[-2:])
    h, w = shape[-2:]
    if kind == "ellipse":
        m2 = ((yy - (h - 1) / 2) / (0.35 * h)) ** 2 + ((xx - (w - 1) / 2) / (0.4 * w)) ** 2 <= 1
    else:  # irregular blob: ellipse minus random holes
        m2 = ((yy - h / 2) / (0.4 * h)) ** 2 + ((xx - w / 2) / (0.3 * w)) ** 2 <= 1
        m2 &= rng.uniform(size=(h, w)) > 0.15
    mask = np.broadcast_to(m2, shape).astype(np.uint8).copy()
    img = rng.normal(0.5, 0.25, shape) + np.linspace(0, 0.6, shape[-1])
    img[..., : h // 3, :] += 0.4  # a brighter band so GLCM/GLSZM see structure
    return img.astype(np.float32), mask


def _assert_same(fast: dict, plain: dict) -> None:
    assert list(fast) == list(plain) or set(fast) == set(plain), set(fast) ^ set(plain)
    bad = []
    for k, b in plain.items():
        a = fast[k]
        if math.isnan(a) and math.isnan(b):
            continue
        if abs(a - b) > max(REL_TOL * max(abs(a), abs(b)), ABS_FLOOR):
            bad.append((k, a, b))
    assert not bad, bad[:5]


ALL_CLASSES = {
    "setting": {"binWidth": 0.05, "additionalInfo": False},
    "imageType": {"Original": {}},
    "featureClass": {},
}


@pytest.mark.parametrize(
    "params,ndim,shape",
    [
        (CONFIG_DIR / "sagittal_2d.yaml", 2, (40, 48)),
        (CONFIG_DIR / "axial_2d.yaml", 2, (36, 36)),
        (CONFIG_DIR / "stack_3d.yaml", 3, (3, 32, 32)),
        (ALL_CLASSES, 2, (48, 40)),
        (ALL_CLASSES, 3, (5, 32, 36)),
    ],
    ids=["sagittal_2d", "axial_2d", "stack_3d", "all_classes_2d", "all_classes_3d"],
)
def test_fast_matches_plain_pyradiomics(params, ndim, shape):
    rng = np.random.default_rng(ndim * 100 + shape[-1])
    ex = RadiomicsExtractor(params, ndim=ndim)
    assert ex.fast
    spacing = (0.75, 0.75) if ndim == 2 else (3.5, 0.75, 0.75)
    for kind in ("ellipse", "irregular"):
        img, mask = _roi(shape, rng, kind)
        fast = ex.extract(img, mask, spacing)
        plain = plain_extract(ex.params, img, mask, spacing)
        assert list(fast) == ex.feature_names
        _assert_same(fast, plain)
    # 2D inputs get shape2D (not shape); 3D the other way round — as pyradiomics itself.
    if params is ALL_CLASSES:
        assert any("_shape2D_" in n for n in fast) == (ndim == 2)
        assert any("_shape_" in n for n in fast) == (ndim == 3)


@pytest.mark.parametrize(
    "setting,image_type,classes",
    [
        ({"binCount": 16}, {"Original": {}}, {"firstorder": None, "glcm": None}),
        ({"binWidth": 0.1, "weightingNorm": "manhattan"}, {"Original": {}}, {"glcm": None, "glrlm": None}),
        (
            {"binWidth": 0.1, "weightingNorm": "euclidean", "symmetricalGLCM": False},
            {"Original": {}},
            {"glcm": None},
        ),
        (
            {"binWidth": 0.1, "distances": [1, 2], "gldm_a": 1},
            {"Original": {}},
            {"gldm": None, "ngtdm": None, "glcm": None},
        ),
        (
            {"binWidth": 0.1},
            {"Wavelet": {}, "Square": {}},
            {"glcm": ["Contrast", "Dissimilarity", "MCC"], "firstorder": ["Mean", "StandardDeviation"]},
        ),
        (
            {"binWidth": 0.1, "voxelArrayShift": 3},
            {"LoG": {"sigma": [0.5, 1.5]}, "Gradient": {}},
            {"firstorder": None, "glszm": None},
        ),
    ],
    ids=[
        "binCount",
        "manhattan",
        "euclid_asym",
        "distances_alpha",
        "wavelet_square_explicit",
        "log_gradient_shift",
    ],
)
def test_fast_matches_plain_for_other_settings(setting, image_type, classes):
    params = {
        "setting": {**setting, "additionalInfo": False},
        "imageType": image_type,
        "featureClass": classes,
    }
    rng = np.random.default_rng(7)
    img, mask = _roi((40, 44), rng, "irregular")
    ex = RadiomicsExtractor(params, ndim=2)
    fast = ex.extract(img, mask, (0.8, 0.6))
    plain = plain_extract(ex.params, img, mask, (0.8, 0.6))
    assert len(fast) > 0 and not any(math.isnan(v) for v in fast.values())
    _assert_same(fast, plain)
    # pyradiomics drops deprecated features that only raise (Dissimilarity) but computes StandardDeviation.
    assert not any(k.endswith("_Dissimilarity") for k in fast)


def test_2d_wavelet_names_do_not_collide():
    params = {
        "setting": {"binWidth": 0.1, "additionalInfo": False},
        "imageType": {"Wavelet": {}},
        "featureClass": {"firstorder": ["Mean"]},
    }
    ex = RadiomicsExtractor(params, ndim=2)
    assert sorted(ex.feature_names) == [f"wavelet-{d}_firstorder_Mean" for d in ("HH", "HL", "LH", "LL")]


def test_columns_and_determinism():
    ex = RadiomicsExtractor(CONFIG_DIR / "sagittal_2d.yaml", ndim=2, series=SAG_T2)
    img, mask = _roi((32, 32), np.random.default_rng(3))
    a = ex.extract(img, mask, (0.75, 0.75))
    b = ex.extract(img.copy(), mask.copy(), (0.75, 0.75))
    assert a == b
    assert list(a) == ex.columns and all(c.startswith("rad_sagt2_") for c in a)
    assert "rad_sagt2_original_glcm_Contrast" in a and "rad_sagt2_log-sigma-2-0-mm-3D_glszm_ZoneEntropy" in a
    assert column_name("axt2", "original_firstorder_Mean") == "rad_axt2_original_firstorder_Mean"
    with pytest.raises(ValueError, match="unknown series"):
        column_name("Coronal", "x")


@pytest.mark.parametrize(
    "case,reason",
    [
        ("empty", "empty ROI"),
        ("constant", "constant intensities"),
        ("single", "1 dimension"),
        ("nan", "non-finite"),
        ("small", "minimum 16"),
    ],
)
def test_degenerate_roi_gives_nan_and_logs(case, reason, caplog):
    ex = RadiomicsExtractor(CONFIG_DIR / "axial_2d.yaml", ndim=2)
    img, mask = _roi((32, 32), np.random.default_rng(4))
    if case == "empty":
        mask[:] = 0
    elif case == "constant":
        img[:] = 0.3
    elif case == "single":
        mask[:] = 0
        mask[10, 5:20] = 1
    elif case == "nan":
        img[16, 16] = np.nan
    elif case == "small":
        mask[:] = 0
        mask[10:13, 10:13] = 1
    with caplog.at_level(logging.INFO, logger="radspine.features.radiomics"):
        out = ex.extract(img, mask, (0.75, 0.75))
    assert list(out) == ex.feature_names and all(math.isnan(v) for v in out.values())
    assert reason in caplog.text


def test_unsupported_settings_fall_back_to_plain():
    params = {
        "setting": {"binWidth": 0.1, "additionalInfo": False, "resegmentRange": [0.0, 5.0]},
        "featureClass": {"firstorder": ["Mean", "Median"]},
    }
    ex = RadiomicsExtractor(params, ndim=2)
    assert not ex.fast and ex.fallback_reasons == ["resegmentRange"]
    img, mask = _roi((24, 24), np.random.default_rng(5))
    out = ex.extract(img, mask, (1.0, 1.0))
    m = img[(mask > 0) & (img >= 0) & (img <= 5)]
    assert out["original_firstorder_Mean"] == pytest.approx(float(np.mean(m.astype(float))), rel=1e-9)


def test_bad_params_and_inputs():
    with pytest.raises(ConfigError, match="not found"):
        RadiomicsExtractor("/nonexistent/params.yaml")
    with pytest.raises(ConfigError, match="invalid pyradiomics params"):
        RadiomicsExtractor({"featureClass": {"texture": None}})
    ex = RadiomicsExtractor(ALL_CLASSES, ndim=3)
    with pytest.raises(ValueError, match="expected 3D image"):
        ex.extract(np.zeros((8, 8)), np.ones((8, 8)), (1.0, 1.0))


def test_patch_to_features_end_to_end():
    from radspine.geometry import pixel_to_world
    from radspine.patches import PatchSpec, extract_patch
    from radspine.types import Volume

    rng = np.random.default_rng(6)
    px = rng.normal(100, 20, (5, 64, 64)).astype(np.float32)
    vol = Volume(
        pixels=px,
        positions=np.array([[-3.5 * k, 0, 0] for k in range(5)], float),
        row_cosine=np.array([0, 1.0, 0]),
        col_cosine=np.array([0, 0, -1.0]),
        pixel_spacing=(0.8, 0.8),
        instance_numbers=np.arange(1, 6),
    )
    spec = PatchSpec(series=SAG_T2, size_mm=(32.0, 32.0), spacing_mm=0.8, neighbors=1, slice_step_mm=3.5)
    p = extract_patch(vol, pixel_to_world(vol, 32, 32, 2), spec)
    ex2 = RadiomicsExtractor(CONFIG_DIR / "sagittal_2d.yaml", ndim=2, series=SAG_T2)
    ex3 = RadiomicsExtractor(CONFIG_DIR / "stack_3d.yaml", ndim=3, series=SAG_T2)
    f2 = ex2.extract(p.image[spec.neighbors], p.mask, p.spacing[1:])
    f3 = ex3.extract(p.image, p.mask3d, p.spacing)
    assert not any(math.isnan(v) for v in f2.values()) and not any(math.isnan(v) for v in f3.values())
    roi = p.image[1][p.mask > 0].astype(float)
    assert f2["rad_sagt2_original_firstorder_Mean"] == pytest.approx(roi.mean(), rel=1e-9)


def _structure_masks(n: int):
    """New segmented masks per ROI: bright discs of varying size/position with a dark root, grown by
    radspine.features.masks (shape and texture both change from ROI to ROI)."""
    from radspine.features.masks import dural_sac_mask
    from radspine.patches import Patch

    rng = np.random.default_rng(5)
    out = []
    yy, xx = np.mgrid[0:64, 0:64]
    for _ in range(n):
        a, b = rng.uniform(4.0, 9.0, 2)
        cy, cx = 31.5 + rng.normal(0, 1.5, 2)
        r = np.hypot((yy - cy) / a, (xx - cx) / b) * 0.75
        img = np.where(r <= 1.0, 1.0, 0.25) + rng.normal(0, 0.06, (64, 64))
        img[np.hypot(yy - cy - a * 0.6, xx - cx) * 0.75 <= 2.0] = 0.35  # dependent root
        img = img.astype(np.float32)
        p = Patch(image=img[None], mask=np.ones((64, 64), np.uint8), inside=np.ones((1, 64, 64), bool),
                  inside_fraction=1.0, spacing=(3.5, 0.75, 0.75), center_world=np.zeros(3))
        m = dural_sac_mask(p, "axial")
        assert m.flag == "" and m.mask.sum() > 20
        out.append((img, m.mask.astype(np.uint8)))
    return out


def test_fast_matches_plain_on_structure_masks():
    # Each ROI brings a new mask, so the shape cache never hits: every value is computed afresh.
    params = CONFIG_DIR / "mask_2d.yaml"
    fast = RadiomicsExtractor(params, ndim=2)
    shapes = set()
    for img, mask in _structure_masks(4):
        got = fast.extract(img, mask, (0.75, 0.75))
        _assert_same(got, plain_extract(fast.params, img, mask, (0.75, 0.75)))
        shapes.add(round(got["original_shape2D_MeshSurface"], 6))
        assert got["original_shape2D_MeshSurface"] == pytest.approx(mask.sum() * 0.5625, rel=0.1)
    assert len(shapes) == 4


def test_mask_roi_column_names():
    ext = RadiomicsExtractor(CONFIG_DIR / "mask_2d.yaml", ndim=2, series="Axial T2", roi="sac")
    assert "rad_axt2_sac_original_shape2D_MeshSurface" in ext.columns
    assert all(c.startswith("rad_axt2_sac_original_") for c in ext.columns)
    assert column_name(SAG_T2, "original_glcm_Contrast", "foramen") == "rad_sagt2_foramen_original_glcm_Contrast"
    assert column_name(SAG_T2, "original_glcm_Contrast") == "rad_sagt2_original_glcm_Contrast"
    with pytest.raises(ValueError, match="unknown ROI tag 'canal'"):
        RadiomicsExtractor(CONFIG_DIR / "mask_2d.yaml", ndim=2, roi="canal")
    with pytest.raises(ValueError, match="unknown ROI tag"):
        column_name(SAG_T2, "x", "bad")
