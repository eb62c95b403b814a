"""Study-grouped, grade-stratified CV folds: one rule shared by the CNN stage and ``tune``.

The CNN's out-of-fold embeddings and the graders' CV must use the same study folds, or a grader's
validation fold would hold CNN features from networks that saw its labels. ``extract-features`` assigns
the folds once (column ``cv_fold`` of the feature table) and ``tune`` reuses them.
"""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd

from radspine.constants import GROUPS
from radspine.errors import DatasetError


def study_folds(table: pd.DataFrame, grades: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Fold per row: studies kept whole, folds stratified by group × grade (sklearn StratifiedGroupKFold).

    Unlabeled rows follow their study; studies with no labels at all are spread round-robin.

    Raises:
        DatasetError: fewer labeled studies than folds.
    """
    from sklearn.model_selection import StratifiedGroupKFold

    studies = table["study_id"].to_numpy()
    grades = np.asarray(grades, dtype=float)
    lab = ~np.isnan(grades)
    n_lab_studies = len(np.unique(studies[lab]))
    if k < 2 or n_lab_studies < k:
        raise DatasetError(f"need at least {max(k, 2)} labeled studies for {k}-fold CV, have {n_lab_studies}")
    # Stratify on group × grade so every fold sees severe rows of every group.
    gi = table["group"].map({g: i for i, g in enumerate(GROUPS)}).to_numpy()
    strat = gi[lab] * 3 + grades[lab].astype(int)
    cv = StratifiedGroupKFold(n_splits=k, shuffle=True, random_state=seed)
    study_fold: dict[int, int] = {}
    with warnings.catch_warnings():
        # Rare grades (few Severe rows) trigger "least populated class" warnings; grouping wins.
        warnings.filterwarnings("ignore", message="The least populated class", category=UserWarning)
        for f, (_, te) in enumerate(cv.split(np.zeros(lab.sum()), strat, groups=studies[lab])):
            for s in np.unique(studies[lab][te]):
                study_fold[int(s)] = f
    rest = sorted(set(map(int, studies)) - set(study_fold))
    for i, s in enumerate(rest):
        study_fold[s] = i % k
    return np.array([study_fold[int(s)] for s in studies])
