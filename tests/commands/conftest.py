"""Fixtures for the CLI command tests: a messy hospital DICOM export (built once per session)."""

from __future__ import annotations

import pytest
from hospital_export import build_export


@pytest.fixture(scope="session")
def hospital(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Summary dict of :func:`hospital_export.build_export` (2 studies, 6 series + 2 scouts, 2 non-DICOM files)."""
    return build_export(tmp_path_factory.mktemp("hospital") / "export")
