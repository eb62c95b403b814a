"""Small data containers shared by every stage. Geometry *math* lives in :mod:`radspine.geometry`."""

from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path

import numpy as np


@dataclass(frozen=True)
class SeriesInfo:
    """One series folder of a study, as listed in ``*_series_descriptions.csv``."""

    study_id: int
    series_id: int
    description: str  # "Sagittal T1" | "Sagittal T2/STIR" | "Axial T2" | anything else (a finding)
    path: Path


@dataclass(frozen=True)
class Study:
    """One study folder: its id, split ("train"/"test") and its series (sorted by series_id)."""

    study_id: int
    split: str
    path: Path
    series: tuple[SeriesInfo, ...] = ()

    def series_of_type(self, description: str) -> list[SeriesInfo]:
        """Series with exactly this description, in series_id order."""
        return [s for s in self.series if s.description == description]


def _frozen(a: np.ndarray) -> np.ndarray:
    """A cached array made read-only, so no caller can change a Volume's geometry through it."""
    a.flags.writeable = False
    return a


@dataclass(frozen=True, eq=False)
class Volume:
    """One geometrically consistent stack of parallel slices of a series.

    ``pixels[k, y, x]``: slice k (sorted by position along ``normal``), row y, column x.
    World coordinates are DICOM patient coordinates (LPS, mm): +x is patient left,
    +y posterior, +z head. A voxel's world position is
    ``positions[k] + x * pixel_spacing[1] * row_cosine + y * pixel_spacing[0] * col_cosine``.
    """

    pixels: np.ndarray  # (S, R, C) float32, RescaleSlope/Intercept applied
    positions: np.ndarray  # (S, 3) ImagePositionPatient of each slice (top-left voxel centre)
    row_cosine: np.ndarray  # (3,) world direction of increasing column index x
    col_cosine: np.ndarray  # (3,) world direction of increasing row index y
    pixel_spacing: tuple[float, float]  # (mm between rows, mm between columns) as in PixelSpacing
    instance_numbers: np.ndarray  # (S,) int InstanceNumber of each slice
    study_id: int = 0
    series_id: int = 0
    description: str = ""
    stack_index: int = 0  # which stack of a multi-stack series (0 if one stack)
    slice_thickness: float | None = None
    meta: dict = field(default_factory=dict)  # optional vendor tags (Manufacturer, MagneticFieldStrength...)

    @cached_property  # geometry is immutable; samplers ask for these per plane
    def normal(self) -> np.ndarray:
        """Unit slice normal = row_cosine × col_cosine (direction of increasing k)."""
        n = np.cross(self.row_cosine, self.col_cosine)
        return _frozen(n / np.linalg.norm(n))

    @property
    def shape(self) -> tuple[int, int, int]:
        return tuple(self.pixels.shape)  # type: ignore[return-value]

    @cached_property  # geometry is immutable; samplers ask for these per plane
    def slice_offsets(self) -> np.ndarray:
        """Signed position of each slice along the normal (mm), increasing with k."""
        return _frozen(self.positions @ self.normal)

    @cached_property  # geometry is immutable; samplers ask for these per plane
    def slice_spacing(self) -> float:
        """Median distance between adjacent slice planes measured from positions (mm); 0 for one slice."""
        if len(self.positions) < 2:
            return float(self.slice_thickness or 0.0)
        return float(np.median(np.diff(self.slice_offsets)))

    def slice_index(self, instance_number: int) -> int:
        """Slice index k of an InstanceNumber; KeyError if the stack does not hold it."""
        hits = np.flatnonzero(self.instance_numbers == int(instance_number))
        if hits.size == 0:
            raise KeyError(
                f"series {self.series_id}: no instance {instance_number} in stack {self.stack_index}"
            )
        return int(hits[0])


@dataclass(frozen=True)
class LevelPoint:
    """A point of one condition × level on one instance of one series (train_label_coordinates row)."""

    study_id: int
    series_id: int
    instance_number: int
    condition: str  # snake_case key, see constants.CONDITIONS
    level: str  # key, see constants.LEVELS
    x: float  # pixel column
    y: float  # pixel row
