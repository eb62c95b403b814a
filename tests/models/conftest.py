"""Shared fixtures for the models tests: one thread for BLAS/OpenMP (the CI machine is shared)."""

from __future__ import annotations

import pytest


@pytest.fixture(autouse=True)
def _one_thread():
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        yield
