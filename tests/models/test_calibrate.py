"""Calibration maps, their cross-fitted selection, ECE and reliability diagrams."""

from __future__ import annotations

import numpy as np
import pytest

from radspine.metrics import score_arrays
from radspine.models.calibrate import (
    expected_calibration_error,
    fit_calibrator,
    reliability_diagram,
    select_calibration,
)


def _overconfident(n=1500, seed=0, power=2.0):
    """True probabilities q per row, grades drawn from q, predictions softmax(power · log q)."""
    rng = np.random.default_rng(seed)
    logits = rng.normal(size=(n, 3)) * 1.2 + np.array([1.5, 0.0, -0.5])
    q = np.exp(logits) / np.exp(logits).sum(axis=1, keepdims=True)
    y = np.array([rng.choice(3, p=row) for row in q])
    p = q**power / (q**power).sum(axis=1, keepdims=True)
    groups = np.array(["spinal", "foraminal", "subarticular"])[np.arange(n) % 3]
    studies = np.arange(n) // 5
    return p, y, groups, studies


def test_temperature_recovers_overconfidence_and_improves_metric():
    p, y, groups, studies = _overconfident()
    cal = fit_calibrator("temperature", p, y, groups)
    w = np.array([1.0, 2.0, 4.0])[y]

    def wnll(t, m):
        z = np.log(p[m]) / t
        lp = z - np.log(np.exp(z).sum(axis=1, keepdims=True))
        return -(lp[np.arange(m.sum()), y[m]] * w[m]).sum() / w[m].sum()

    # p = softmax(2·log q) is overconfident, so T > 1 (the 1/2/4 weights push it above 2), and the
    # fitted T is the minimum of the weighted NLL of its group.
    for g in ("spinal", "foraminal", "subarticular"):
        t, m = cal.maps[g].temperature_, groups == g
        assert t > 1.5
        assert wnll(t, m) < min(wnll(t * 0.9, m), wnll(t * 1.1, m))
    before = score_arrays(y, p, groups, studies).score
    after = score_arrays(y, cal.transform(p, groups), groups, studies).score
    assert after < before - 0.02
    assert np.allclose(cal.transform(p, groups).sum(axis=1), 1)


@pytest.mark.parametrize("method", ["isotonic", "dirichlet"])
def test_other_methods_output_valid_probabilities(method):
    p, y, groups, _ = _overconfident(600, seed=1)
    out = fit_calibrator(method, p, y, groups).transform(p, groups)
    assert out.shape == p.shape and np.allclose(out.sum(axis=1), 1) and (out > 0).all()


def test_selection_never_worse_than_uncalibrated_and_is_seeded():
    p, y, groups, studies = _overconfident(900, seed=2)
    folds = studies % 3
    cal, res = select_calibration(p, y, groups, studies, folds)
    assert set(res) == {"none", "temperature", "isotonic", "dirichlet"}
    assert res[cal.method].score == min(r.score for r in res.values())
    assert res[cal.method].score < res["none"].score  # overconfident input: some method must help
    cal2, res2 = select_calibration(p, y, groups, studies, folds)
    assert cal2.method == cal.method and res2[cal.method].score == res[cal.method].score


def test_ece_hand_case_and_reliability_png(tmp_path):
    p = np.tile([0.9, 0.05, 0.05], (10, 1))
    y = np.array([0] * 8 + [1, 2])
    assert expected_calibration_error(p, y) == pytest.approx(0.1)
    pp, yy, gg, _ = _overconfident(300, seed=3)
    path = tmp_path / "rel.png"
    reliability_diagram(str(path), pp, fit_calibrator("temperature", pp, yy, gg).transform(pp, gg), yy, gg)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert not list(tmp_path.glob("*.tmp*"))
