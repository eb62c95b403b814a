"""Session-wide fixtures: one tiny phantom dataset in the Kaggle layout, built once and shared read-only.

Every test that needs images or labels should use ``phantom_root`` (6 train + 2 test studies, 96 px,
quirks off, seed 0) instead of building its own dataset.
"""

from __future__ import annotations

from pathlib import Path

import pytest

PHANTOM_TRAIN = 6
PHANTOM_TEST = 2
PHANTOM_SIZE = 96
PHANTOM_SEED = 0


@pytest.fixture(scope="session")
def phantom_build(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Summary dict of :func:`radspine.synth.make_dataset` for the shared phantom (study ids, counts)."""
    from radspine.synth import QuirkConfig, make_dataset

    root = tmp_path_factory.mktemp("phantom") / "data"
    return make_dataset(root, PHANTOM_TRAIN, PHANTOM_TEST, seed=PHANTOM_SEED, size=PHANTOM_SIZE,
                        quirks=QuirkConfig.none())


@pytest.fixture(scope="session")
def phantom_root(phantom_build: dict) -> Path:
    """Root folder of the shared phantom: train_images/, test_images/, the competition CSVs,
    test_solution.csv, synth_truth.csv and synth_landmarks.csv. Treat as read-only."""
    return Path(phantom_build["out"])
