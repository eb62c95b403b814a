"""Real RSNA 2024 LSDC label counts per train.csv column (copied from shared/reference/rsna2024_label_stats.json).

Kept in the package because installed users have no access to the shared reference file;
``tests/synth/test_labels.py`` checks this copy against the shared file when it is present.
"""

from __future__ import annotations

from typing import Final

N_STUDIES: Final[int] = 1975

# column -> (Normal/Mild, Moderate, Severe, missing) counts over the real training studies.
LABEL_COUNTS: Final[dict[str, tuple[int, int, int, int]]] = {
    "spinal_canal_stenosis_l1_l2": (1886, 67, 21, 1),
    "spinal_canal_stenosis_l2_l3": (1770, 151, 53, 1),
    "spinal_canal_stenosis_l3_l4": (1622, 230, 122, 1),
    "spinal_canal_stenosis_l4_l5": (1482, 237, 255, 1),
    "spinal_canal_stenosis_l5_s1": (1904, 51, 19, 1),
    "left_neural_foraminal_narrowing_l1_l2": (1908, 63, 2, 2),
    "left_neural_foraminal_narrowing_l2_l3": (1791, 171, 11, 2),
    "left_neural_foraminal_narrowing_l3_l4": (1522, 411, 40, 2),
    "left_neural_foraminal_narrowing_l4_l5": (1204, 629, 140, 2),
    "left_neural_foraminal_narrowing_l5_s1": (1247, 520, 206, 2),
    "right_neural_foraminal_narrowing_l1_l2": (1891, 63, 13, 8),
    "right_neural_foraminal_narrowing_l2_l3": (1793, 168, 6, 8),
    "right_neural_foraminal_narrowing_l3_l4": (1512, 414, 41, 8),
    "right_neural_foraminal_narrowing_l4_l5": (1208, 629, 130, 8),
    "right_neural_foraminal_narrowing_l5_s1": (1281, 496, 190, 8),
    "left_subarticular_stenosis_l1_l2": (1690, 93, 28, 164),
    "left_subarticular_stenosis_l2_l3": (1555, 255, 83, 82),
    "left_subarticular_stenosis_l3_l4": (1324, 454, 194, 3),
    "left_subarticular_stenosis_l4_l5": (887, 624, 461, 3),
    "left_subarticular_stenosis_l5_s1": (1408, 409, 147, 11),
    "right_subarticular_stenosis_l1_l2": (1680, 110, 24, 161),
    "right_subarticular_stenosis_l2_l3": (1577, 243, 73, 82),
    "right_subarticular_stenosis_l3_l4": (1322, 454, 197, 2),
    "right_subarticular_stenosis_l4_l5": (891, 622, 460, 2),
    "right_subarticular_stenosis_l5_s1": (1399, 396, 173, 7),
}

# Studies by number of Axial T2 series (real data).
AXIAL_SERIES_COUNTS: Final[dict[int, int]] = {1: 1640, 2: 306, 3: 28, 4: 1}
STUDIES_WITH_FEWER_THAN_25_COORDINATE_ROWS: Final[int] = 187
