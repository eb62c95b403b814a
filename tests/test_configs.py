"""Every YAML under configs/ parses; radiomics params pass pyradiomics' own schema and build extractors."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from radspine.errors import ConfigError
from radspine.features.radiomics import CONFIG_DIR, RadiomicsExtractor, load_params

ROOT = Path(__file__).resolve().parents[1] / "configs"
ALL_YAML = sorted(ROOT.rglob("*.yaml")) + sorted(ROOT.rglob("*.yml"))
RADIOMICS_YAML = sorted(CONFIG_DIR.glob("*.yaml"))


def test_config_dir_found():
    assert CONFIG_DIR == ROOT / "radiomics"
    assert {p.name for p in RADIOMICS_YAML} >= {"sagittal_2d.yaml", "axial_2d.yaml", "stack_3d.yaml"}


@pytest.mark.parametrize("path", ALL_YAML, ids=lambda p: str(p.relative_to(ROOT)))
def test_every_yaml_parses_to_a_mapping(path):
    data = yaml.safe_load(path.read_text())
    assert isinstance(data, dict) and data, f"{path} is empty or not a mapping"


@pytest.mark.parametrize("path", RADIOMICS_YAML, ids=lambda p: p.name)
def test_radiomics_params_pass_pyradiomics_schema(path):
    from radiomics import featureextractor

    params = load_params(path)
    assert set(params) <= {"imageType", "featureClass", "setting", "voxelSetting"}
    # pyradiomics' own loader accepts the file as well (it validates with the same schema).
    ref = featureextractor.RadiomicsFeatureExtractor(str(path))
    ndim = 3 if "3d" in path.stem else 2
    ex = RadiomicsExtractor(path, ndim=ndim)
    assert ex.fast, f"{path.name} would fall back to plain pyradiomics: {ex.fallback_reasons}"
    assert set(ref.enabledImagetypes) == set(ex.image_types)
    assert ex.feature_names and len(set(ex.feature_names)) == len(ex.feature_names)


def test_schema_violations_are_reported_with_the_file_name(tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("setting:\n  binWidth: -1\n")
    with pytest.raises(ConfigError, match="bad.yaml.*invalid pyradiomics params"):
        load_params(bad)
    bad.write_text("imageType:\n  Fourier: {}\n")
    with pytest.raises(ConfigError, match="Fourier"):
        load_params(bad)
