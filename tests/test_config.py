"""Typed config loading: the packaged default, unknown keys, bad values, hashes."""

from __future__ import annotations

from pathlib import Path

import pytest

from radspine.config import default_config_path, load_config
from radspine.errors import ConfigError, RadspineError
from radspine.features.config import FeaturesConfig, config_hash


def test_default_yaml_matches_code_defaults() -> None:
    cfg = load_config()
    # The YAML documents the defaults; it must not silently diverge from FeaturesConfig's own.
    assert cfg.features == FeaturesConfig()
    assert config_hash(cfg.features) == config_hash(FeaturesConfig())
    # The embedding defaults live in EmbeddingConfig alone (default.yaml does not repeat them).
    from radspine.features.embeddings import EmbeddingConfig

    assert cfg.features.embeddings.model_dump() == EmbeddingConfig().model_dump()
    assert cfg.localizer.model_dump(exclude={"epochs"}) == type(cfg.localizer)().model_dump(exclude={"epochs"})
    assert cfg.features.patches.jitter_sigma_mm == 1.0  # the skew experiment's winner
    assert default_config_path().is_file()


def test_mask_rois_names_and_switches() -> None:
    from radspine.features.config import MASK_PATCHES, RadiomicsSettings

    assert "foraminal" not in RadiomicsSettings().mask_rois
    assert RadiomicsSettings(mask_rois=True).mask_rois == MASK_PATCHES
    assert RadiomicsSettings(mask_rois=False).mask_rois == ()
    assert RadiomicsSettings(mask_rois=["subarticular", "foraminal"]).mask_rois == ("foraminal", "subarticular")
    with pytest.raises(ValueError, match=r"unknown mask_rois \['foramen'\]"):
        RadiomicsSettings(mask_rois=["foramen"])


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("features:\n  cnn_enable: true\n", r"features\.cnn_enable: Extra inputs are not permitted"),
        ("features:\n  cnn_folds: 1\n", r"features\.cnn_folds: Input should be greater than or equal to 2"),
        ("features:\n  patches:\n    percentiles: [99, 1]\n", r"features\.patches\.percentiles"),
        ("features: [1, 2\n", "invalid YAML"),
        ("- a\n- b\n", "top level must be a mapping"),
    ],
)
def test_bad_config_one_line(tmp_path: Path, text: str, message: str) -> None:
    p = tmp_path / "bad.yaml"
    p.write_text(text)
    with pytest.raises(ConfigError, match=message) as ei:
        load_config(p)
    assert str(p) in str(ei.value) and "\n" not in str(ei.value)


def test_missing_config_file(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="nope.yaml: cannot read config"):
        load_config(tmp_path / "nope.yaml")


def test_hash_tracks_what_changes_features(tmp_path: Path) -> None:
    base = FeaturesConfig()
    h = config_hash(base)
    assert config_hash(base.model_copy(update={"cnn_folds": 5})) == h  # fold count: not a feature identity
    dev = base.model_copy(update={"embeddings": base.embeddings.model_copy(update={"device": "cpu"})})
    assert config_hash(dev) == h
    assert config_hash(base.model_copy(update={"seed": 1})) != h
    p = tmp_path / "sag.yaml"
    p.write_text("imageType:\n  Original: {}\nfeatureClass:\n  firstorder:\n")
    a = base.model_copy(update={"radiomics": base.radiomics.model_copy(update={"sagittal": str(p)})})
    ha = config_hash(a)
    p.write_text("imageType:\n  Original: {}\nfeatureClass:\n  glcm:\n")
    assert config_hash(a) != ha  # the params file's content, not just its name, is hashed
    bad = base.model_copy(update={"radiomics": base.radiomics.model_copy(update={"axial": "missing.yaml"})})
    with pytest.raises(RadspineError, match="radiomics params file not found: missing.yaml"):
        config_hash(bad)


def test_per_study_cache_key_ignores_settings_used_after_the_per_study_stage():
    """CNN settings change the feature config's identity (a model refuses other CNN features) but not the key of
    the per-study cache: trying another CNN does not recompute radiomics, masks and patches."""
    from radspine.features.config import FeaturesConfig, config_hash, study_config_hash

    base = FeaturesConfig()
    cnn = base.model_copy(update={"embeddings": base.embeddings.model_copy(update={"epochs": 9}), "cnn_folds": 5,
                                  "context_cnn_dims": 2})
    patches = base.model_copy(update={"patches": base.patches.model_copy(update={"jitter_sigma_mm": 2.0})})
    assert config_hash(cnn) != config_hash(base) and study_config_hash(cnn) == study_config_hash(base)
    assert study_config_hash(patches) != study_config_hash(base) and config_hash(patches) != config_hash(base)
