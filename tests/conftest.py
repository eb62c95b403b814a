"""Session-wide fixtures: one tiny phantom dataset in the Kaggle layout, built once and shared read-only.

Every test that needs images or labels should use ``phantom_root`` (6 train + 2 test studies, 96 px,
quirks off, seed 0) instead of building its own dataset.
"""

from __future__ import annotations

import json
import os
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


# A small end-to-end demo run (synth → localizer → features → tune → predict → score), shared by the
# end-to-end, report and notebook tests. Sizes are the smallest that still show learning on the phantom.
DEMO_TRAIN = 24
DEMO_TEST = 6


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory: pytest.TempPathFactory) -> dict:
    """Summary dict of a tiny :func:`radspine.demo.run_demo`; its folder is ``summary['out']``.

    Built once per test run: under pytest-xdist (``make test``) the workers share it through their common
    base folder, the first to ask builds it under a file lock and the others read its summary."""
    from filelock import FileLock

    from radspine.demo import DemoOptions, run_demo

    root = tmp_path_factory.getbasetemp()
    if os.environ.get("PYTEST_XDIST_WORKER"):
        root = root.parent  # the base folder all workers of this run share
    out, done = root / "demo_run", root / "demo_run.json"
    with FileLock(str(root / "demo_run.lock")):
        if not done.is_file():
            # The localizer fine-tunes the shipped one for a few epochs (what a small site would do): the
            # suite's largest fixture stays affordable on 2 cores, and the shipped model is exercised end to end.
            summary = run_demo(out, DemoOptions(train_studies=DEMO_TRAIN, test_studies=DEMO_TEST, size=96, trials=2,
                                                seed=0, workers=1, ablations=False, reports=True,
                                                localizer_init="shipped", localizer_epochs=4))
            summary["out"] = str(out)
            done.write_text(json.dumps(summary, default=str))
    return json.loads(done.read_text())
