"""Graders: sklearn-style LightGBM/XGBoost estimators, Optuna tuning, calibration and the model bundle.

Public entry points: :class:`radspine.models.bundle.Bundle` (``Bundle.load(dir).predict_proba(table)``),
:func:`radspine.models.tune.tune`, :class:`radspine.models.estimator.GradeClassifier`. Submodules import
their heavy dependencies lazily, so importing this package is cheap.
"""
