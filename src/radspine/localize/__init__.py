"""Localizer: the 25 condition × level points of a study from its images alone.

Sagittal stacks are resampled onto canonical world-aligned planes (columns anterior→posterior, rows
head→feet, mm spacing) and scanned by a small fully convolutional UNet that predicts one heatmap per level
for the canal and the foramina: first over the whole field of view (coarse), then on a window around the
found spine (fine); the plane with the strongest response gives the slice, and the side of a foramen is
decided by world x (patient left = +x). Each level's canal point is carried through world geometry into
the nearest axial slice over every axial stack, where a second UNet finds both recesses. Heads without
training labels are skipped (their points are "not localised: ..."); every point has a ``confidence``.
A pretrained model ships with the package (:func:`shipped_localizer_dir`).

Public API: :func:`train_localizer`, :class:`Localizer` (``load``, ``predict_study``),
:func:`localize_dataset`, :func:`oof_points`, :class:`LocalizerConfig`; the points CSV format is
:mod:`radspine.points` (re-exported here).
"""

from radspine.localize.config import LocalizerConfig
from radspine.localize.infer import (
    POINT_COLUMNS,
    Localizer,
    fallback_rows,
    localize_dataset,
    shipped_localizer_dir,
)
from radspine.localize.train import evaluate, oof_points, train_localizer
from radspine.points import SCHEMA_COLUMNS, detail_path, read_points, write_points

__all__ = [
    "POINT_COLUMNS",
    "SCHEMA_COLUMNS",
    "detail_path",
    "write_points",
    "Localizer",
    "LocalizerConfig",
    "evaluate",
    "fallback_rows",
    "localize_dataset",
    "oof_points",
    "read_points",
    "shipped_localizer_dir",
    "train_localizer",
]
