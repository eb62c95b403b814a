"""Where the packaged resource files live (a floor below every stage's config, so no import circle)."""

from __future__ import annotations

from pathlib import Path


def config_dir() -> Path:
    """The packaged configs folder (``src/radspine/configs``; ``configs/`` at the repo root links to it)."""
    return Path(__file__).resolve().parent / "configs"
