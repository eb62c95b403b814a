"""Typed configuration: ``configs/default.yaml`` → :class:`RadspineConfig`; unknown keys are rejected.

Each stage owns its config model (:class:`radspine.features.config.FeaturesConfig`,
:class:`radspine.localize.config.LocalizerConfig`); this
module only composes and loads them.
"""

from __future__ import annotations

from pathlib import Path

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from radspine.errors import ConfigError
from radspine.features.config import FeaturesConfig
from radspine.localize.config import LocalizerConfig
from radspine.resources import config_dir


def default_config_path() -> Path:
    """Path of the packaged ``default.yaml``."""
    return config_dir() / "default.yaml"


class RadspineConfig(BaseModel):
    """The whole pipeline's settings."""

    model_config = ConfigDict(extra="forbid")

    features: FeaturesConfig = Field(default_factory=FeaturesConfig)
    localizer: LocalizerConfig = Field(default_factory=LocalizerConfig)


def load_config(path: str | Path | None = None) -> RadspineConfig:
    """Load and validate a YAML config (the packaged default when ``path`` is None).

    Raises ConfigError with the file and the first offending key on one line.
    """
    p = Path(path) if path is not None else default_config_path()
    try:
        raw = yaml.safe_load(p.read_text()) or {}
    except OSError as err:
        raise ConfigError(f"{p}: cannot read config ({err.strerror})") from None
    except yaml.YAMLError as err:
        raise ConfigError(f"{p}: invalid YAML ({str(err).splitlines()[0]})") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: top level must be a mapping")
    try:
        return RadspineConfig.model_validate(raw)
    except ValidationError as err:
        e = err.errors()[0]
        loc = ".".join(str(x) for x in e["loc"])
        raise ConfigError(f"{p}: {loc}: {e['msg']}") from None
