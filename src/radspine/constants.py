"""Competition vocabulary: conditions, levels, grades, weights and row_id helpers.

Names follow the RSNA 2024 Lumbar Spine Degenerative Classification files exactly.
"""

from __future__ import annotations

from typing import Final

# snake_case condition keys as used in train.csv columns and submission row_ids.
CONDITIONS: Final[tuple[str, ...]] = (
    "spinal_canal_stenosis",
    "left_neural_foraminal_narrowing",
    "right_neural_foraminal_narrowing",
    "left_subarticular_stenosis",
    "right_subarticular_stenosis",
)
# Title-case names as used in train_label_coordinates.csv's `condition` column.
CONDITION_NAMES: Final[dict[str, str]] = {
    "spinal_canal_stenosis": "Spinal Canal Stenosis",
    "left_neural_foraminal_narrowing": "Left Neural Foraminal Narrowing",
    "right_neural_foraminal_narrowing": "Right Neural Foraminal Narrowing",
    "left_subarticular_stenosis": "Left Subarticular Stenosis",
    "right_subarticular_stenosis": "Right Subarticular Stenosis",
}
CONDITION_KEYS: Final[dict[str, str]] = {v: k for k, v in CONDITION_NAMES.items()}

LEVELS: Final[tuple[str, ...]] = ("l1_l2", "l2_l3", "l3_l4", "l4_l5", "l5_s1")
LEVEL_NAMES: Final[dict[str, str]] = {
    "l1_l2": "L1/L2",
    "l2_l3": "L2/L3",
    "l3_l4": "L3/L4",
    "l4_l5": "L4/L5",
    "l5_s1": "L5/S1",
}
LEVEL_KEYS: Final[dict[str, str]] = {v: k for k, v in LEVEL_NAMES.items()}

SEVERITIES: Final[tuple[str, ...]] = ("Normal/Mild", "Moderate", "Severe")
SEVERITY_COLUMNS: Final[tuple[str, ...]] = ("normal_mild", "moderate", "severe")
SEVERITY_WEIGHTS: Final[tuple[float, ...]] = (1.0, 2.0, 4.0)
# Continuous latent severity scale: grade g covers [lo, hi].
SEVERITY_THRESHOLDS: Final[tuple[float, float]] = (1.0 / 3.0, 2.0 / 3.0)

SAG_T1: Final = "Sagittal T1"
SAG_T2: Final = "Sagittal T2/STIR"
AX_T2: Final = "Axial T2"
SERIES_TYPES: Final[tuple[str, ...]] = (SAG_T1, SAG_T2, AX_T2)
# Short names used in feature column names (rad_<series>_...).
SERIES_SHORT: Final[dict[str, str]] = {SAG_T1: "sagt1", SAG_T2: "sagt2", AX_T2: "axt2"}

# Condition groups of the metric.
GROUPS: Final[tuple[str, ...]] = ("spinal", "foraminal", "subarticular")
CONDITION_GROUP: Final[dict[str, str]] = {
    "spinal_canal_stenosis": "spinal",
    "left_neural_foraminal_narrowing": "foraminal",
    "right_neural_foraminal_narrowing": "foraminal",
    "left_subarticular_stenosis": "subarticular",
    "right_subarticular_stenosis": "subarticular",
}
CONDITION_SIDE: Final[dict[str, str | None]] = {
    "spinal_canal_stenosis": None,
    "left_neural_foraminal_narrowing": "left",
    "right_neural_foraminal_narrowing": "right",
    "left_subarticular_stenosis": "left",
    "right_subarticular_stenosis": "right",
}
# The series type on which readers place each condition's point.
CONDITION_SERIES: Final[dict[str, str]] = {
    "spinal_canal_stenosis": SAG_T2,
    "left_neural_foraminal_narrowing": SAG_T1,
    "right_neural_foraminal_narrowing": SAG_T1,
    "left_subarticular_stenosis": AX_T2,
    "right_subarticular_stenosis": AX_T2,
}

# train.csv column order (condition-major, level-minor), as in the competition file.
LABEL_COLUMNS: Final[tuple[str, ...]] = tuple(f"{c}_{lv}" for c in CONDITIONS for lv in LEVELS)


def label_column(condition: str, level: str) -> str:
    """train.csv column for a condition key and level key, e.g. ``spinal_canal_stenosis_l1_l2``."""
    return f"{condition}_{level}"


def row_id(study_id: int, condition: str, level: str) -> str:
    """Submission row_id, e.g. ``4003253_spinal_canal_stenosis_l1_l2``."""
    return f"{int(study_id)}_{condition}_{level}"


def parse_row_id(rid: str) -> tuple[int, str, str]:
    """Inverse of :func:`row_id`: ``(study_id, condition, level)``; raises ValueError if malformed."""
    study, _, rest = rid.partition("_")
    for cond in CONDITIONS:
        if rest.startswith(cond + "_"):
            level = rest[len(cond) + 1 :]
            if level in LEVELS and study.isdigit():
                return int(study), cond, level
    raise ValueError(f"malformed row_id {rid!r}")


def study_row_ids(study_id: int) -> list[str]:
    """The 25 row_ids of one study in competition order."""
    return [row_id(study_id, c, lv) for c in CONDITIONS for lv in LEVELS]


def grade_index(grade: str) -> int:
    """0/1/2 for "Normal/Mild"/"Moderate"/"Severe"; raises ValueError otherwise."""
    return SEVERITIES.index(grade)


def severity_to_grade(score: float) -> int:
    """Grade index of a continuous latent severity in [0, 1]."""
    lo, hi = SEVERITY_THRESHOLDS
    return 0 if score < lo else (1 if score < hi else 2)
