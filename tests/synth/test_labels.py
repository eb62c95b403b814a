"""Label sampling: real per-column grade frequencies, correlations, blanks, determinism (no images)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from radspine.constants import CONDITIONS, LABEL_COLUMNS, LEVELS, label_column, severity_to_grade
from radspine.synth import QuirkConfig, sample_labels
from radspine.synth.label_stats import LABEL_COUNTS, N_STUDIES
from radspine.synth.labels import blank_rates, flip_probability, flip_scales, grade_probabilities

SHARED_STATS = Path(__file__).resolve().parents[3] / "shared" / "reference" / "rsna2024_label_stats.json"


@pytest.fixture(scope="module")
def labels():
    return sample_labels(800, seed=11)


def test_package_copy_matches_shared_reference():
    if not SHARED_STATS.exists():
        pytest.skip(f"{SHARED_STATS} not present (installed package without ../shared)")
    ref = json.loads(SHARED_STATS.read_text())
    assert N_STUDIES == ref["n_studies"]
    assert set(LABEL_COUNTS) == set(LABEL_COLUMNS)
    for col, counts in LABEL_COUNTS.items():
        r = ref["label_counts_per_column"][col]
        assert counts == (r["Normal/Mild"], r["Moderate"], r["Severe"], r["missing"]), col


def _worst_z(labels, column: str) -> float:
    """Largest |z| of a grade frequency against the real table over every column and grade."""
    probs = grade_probabilities()
    graded = labels[~labels.blank]
    worst = 0.0
    for i, c in enumerate(CONDITIONS):
        for j, lv in enumerate(LEVELS):
            g = graded[(graded.condition == c) & (graded.level == lv)][column].to_numpy()
            n = len(g)
            for k in range(3):
                p = probs[i, j, k]
                z = abs((g == k).mean() - p) / np.sqrt(max(p * (1 - p), 1e-4) / n)
                worst = max(worst, z)
    return worst


def test_reader_grades_follow_real_frequencies_per_column(labels):
    # train.csv holds the reader's grades, as the real table does: the latent frequencies are
    # pre-compensated for the reader noise, so the reader's ones match the table.
    assert _worst_z(labels, "reader_grade") < 4.5
    clean = sample_labels(800, seed=11, quirks=QuirkConfig.none())
    assert (clean.reader_grade == clean.grade).all()
    assert _worst_z(clean, "grade") < 4.5


def test_grades_follow_real_frequencies_per_column(labels):
    probs = grade_probabilities()
    graded = labels[~labels.blank]
    worst = 0.0
    for i, c in enumerate(CONDITIONS):
        for j, lv in enumerate(LEVELS):
            g = graded[(graded.condition == c) & (graded.level == lv)].reader_grade.to_numpy()
            n = len(g)
            for k in range(3):
                p = probs[i, j, k]
                z = abs((g == k).mean() - p) / np.sqrt(max(p * (1 - p), 1e-4) / n)
                worst = max(worst, z)
    # 75 cells x 3 grades: |z| < 4.5 holds with overwhelming probability if the sampler is right.
    assert worst < 4.5
    # The marginal of a column is exactly the real one, e.g. canal L4/L5: 1482/237/255.
    counts = np.array(LABEL_COUNTS[label_column("spinal_canal_stenosis", "l4_l5")][:3], float)
    assert np.allclose(probs[0, 3], counts / counts.sum())


def test_reader_noise_rate_matches_configured():
    peak = QuirkConfig().label_noise
    lab = sample_labels(1500, seed=5)
    sev, g, r = lab.severity.to_numpy(), lab.grade.to_numpy(), lab.reader_grade.to_numpy()
    assert np.abs(r - g).max() == 1  # only ever to a neighbouring grade
    probs = grade_probabilities()
    col = {(c, lv): (i, j) for i, c in enumerate(CONDITIONS) for j, lv in enumerate(LEVELS)}
    ij = np.array([col[k] for k in zip(lab.condition, lab.level)])
    want = flip_probability(sev, peak, probs[ij[:, 0], ij[:, 1]])
    flipped = r != g
    # Measured flip rate = configured model, overall and in bands of distance from the nearest threshold
    # (the probability falls with the distance).
    dist = np.min(np.abs(sev[:, None] - np.array([1 / 3, 2 / 3])), axis=1)
    rates = []
    for lo, hi in ((0.0, 0.03), (0.03, 0.08), (0.08, 0.34)):
        sel = (dist >= lo) & (dist < hi)
        w = want[sel].mean()
        assert abs(flipped[sel].mean() - w) < 4 * np.sqrt(w * (1 - w) / sel.sum()) + 1e-3, (lo, hi)
        rates.append(flipped[sel].mean())
    assert rates[0] > 1.3 * rates[1] > 2.6 * rates[2]
    assert abs(flipped.mean() - want.mean()) < 4 * np.sqrt(want.mean() / len(want))
    # About one abnormal cell in eight is read differently (moderate inter-reader agreement).
    assert 0.08 < flipped[g > 0].mean() < 0.2
    # Balanced flows: the common side of a threshold flips less, the rare side at the full rate.
    sc = flip_scales(probs)
    assert (sc.max(axis=-1) == 1.0).all() and sc[0, 0, 0, 0] < 0.1  # canal L1/L2: normal->moderate is rare
    none = sample_labels(300, seed=5, quirks=QuirkConfig(label_noise=0.0))
    assert (none.reader_grade == none.grade).all()


def test_grade_is_severity_thresholded(labels):
    assert labels.severity.between(0, 1).all()
    assert (labels.grade == labels.severity.map(severity_to_grade)).all()


def _wide(labels):
    return labels.pivot_table(index="study", columns=["condition", "level"], values="severity")


def test_correlations_between_sides_levels_and_age(labels):
    w = _wide(labels)
    sides = np.corrcoef(w[("left_subarticular_stenosis", "l4_l5")], w[("right_subarticular_stenosis", "l4_l5")])[0, 1]
    near = np.corrcoef(w[("spinal_canal_stenosis", "l3_l4")], w[("spinal_canal_stenosis", "l4_l5")])[0, 1]
    far = np.corrcoef(w[("spinal_canal_stenosis", "l1_l2")], w[("spinal_canal_stenosis", "l5_s1")])[0, 1]
    assert sides > 0.5
    assert near > far + 0.08
    assert far > 0.05  # shared per-patient age factor
    across = np.corrcoef(w[("spinal_canal_stenosis", "l2_l3")], w[("left_neural_foraminal_narrowing", "l2_l3")])[0, 1]
    assert 0.2 < across < sides


def test_blank_cells_follow_real_rates_and_flag(labels):
    rates = blank_rates()
    sub = labels[(labels.condition == "left_subarticular_stenosis") & (labels.level == "l1_l2")].blank.mean()
    assert abs(sub - rates[3, 0]) < 0.035  # real 164/1975 = 8.3 %
    assert not sample_labels(300, seed=1, quirks=QuirkConfig.none()).blank.any()


def test_same_seed_same_labels_other_seed_differs():
    a, b, c = sample_labels(20, seed=3), sample_labels(20, seed=3), sample_labels(20, seed=4)
    assert a.equals(b)
    assert not np.allclose(a.severity, c.severity)


def test_quirk_rates_validated():
    from radspine.errors import ConfigError

    with pytest.raises(ConfigError, match="no_axial"):
        QuirkConfig(no_axial=1.5)
