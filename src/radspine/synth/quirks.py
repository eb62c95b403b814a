"""Quirks of the real RSNA data that the phantom reproduces, each behind a rate (0 turns it off)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from radspine.errors import ConfigError


@dataclass(frozen=True)
class QuirkConfig:
    """Per-study rates (probabilities) of each quirk; defaults are low, near the real data's rates.

    Attributes:
        blank_labels: multiplier on the real per-column rate of blank train.csv cells (1.0 = real rates,
            e.g. ~8 % for subarticular L1/L2, ~0.1 % elsewhere). Blank cells also lose their coordinate row.
        missing_coords: probability that a study loses 1-3 coordinate rows (fewer than 25 rows).
        no_axial: probability that a study has no Axial T2 series at all.
        axial_split: probability that the axial stacks are split over 2-3 series (disjoint levels).
        two_axial: probability of an extra, repeated Axial T2 series covering all levels.
        second_sag_t1: probability of a second (repeated) Sagittal T1 series.
        reversed_instances: probability, per series, that InstanceNumber runs opposite to position.
        missing_tag: probability, per series, that one optional tag (SpacingBetweenSlices, SliceThickness,
            Manufacturer, MagneticFieldStrength, PatientPosition) is absent from every file.
    """

    blank_labels: float = 1.0
    missing_coords: float = 0.05
    no_axial: float = 0.01
    axial_split: float = 0.12
    two_axial: float = 0.04
    second_sag_t1: float = 0.01
    reversed_instances: float = 0.1
    missing_tag: float = 0.05

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            hi = 20.0 if f.name == "blank_labels" else 1.0
            if not (0.0 <= float(v) <= hi):
                raise ConfigError(f"quirk rate {f.name}={v} must lie in [0, {hi:g}]")

    @classmethod
    def none(cls) -> QuirkConfig:
        """All quirks off: every study clean and complete."""
        return cls(**{f.name: 0.0 for f in fields(cls)})
