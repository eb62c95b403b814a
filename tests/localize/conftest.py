"""A localizer trained once per session on its own (larger) phantom, shared read-only by the tests."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

# Training needs more studies than the shared 6-study phantom; kept small so the whole localizer
# suite stays within ~90 s on 2 cores (phantom ~20 s, training ~30 s on one thread).
LOC_TRAIN, LOC_TEST, LOC_SIZE, LOC_SEED = 30, 2, 96, 11
LOC_EPOCHS = 12
# Crops at 4 mm only and no MONAI augmentation: the clean phantom needs neither, and the suite must stay
# short on 2 shared cores (the whole-FOV design trains on 64 px crops, ~3x the old 48 px planes).
LOC_CFG = dict(epochs=LOC_EPOCHS, device="cpu", crops_per_plane=1, strong_augment=False, sag_fine_spacing_mm=2.0)


@pytest.fixture(scope="session")
def loc_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radspine.synth import QuirkConfig, make_dataset

    root = tmp_path_factory.mktemp("loc_phantom") / "data"
    make_dataset(root, LOC_TRAIN, LOC_TEST, seed=LOC_SEED, size=LOC_SIZE, quirks=QuirkConfig.none(), workers=1)
    return root


@pytest.fixture(scope="session")
def loc_model(loc_root: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    from radspine.localize import LocalizerConfig, train_localizer

    out = tmp_path_factory.mktemp("loc_model") / "model"
    train_localizer(loc_root, out, LocalizerConfig(**LOC_CFG), seed=0, init=None)
    return out


@pytest.fixture(scope="session")
def loc_report(loc_model: Path) -> dict:
    return json.loads((loc_model / "localizer_report.json").read_text())
