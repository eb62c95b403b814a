"""Spies for the CNN tests: record what the networks were fitted on without changing what they do."""

from __future__ import annotations

import pytest


def record_fit_sizes(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """Patch ``CnnEmbedder.fit`` to append each fit's number of rows to the returned list."""
    from radspine.features.embeddings import CnnEmbedder

    sizes: list[int] = []
    real_fit = CnnEmbedder.fit

    def spy_fit(self, xs, *a, **k):
        sizes.append(xs.shape[0])
        return real_fit(self, xs, *a, **k)

    monkeypatch.setattr(CnnEmbedder, "fit", spy_fit)
    return sizes
