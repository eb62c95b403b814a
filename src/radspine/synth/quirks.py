"""Quirks and variations of real RSNA data that the phantom reproduces, each behind a rate (0 turns it off)."""

from __future__ import annotations

from dataclasses import dataclass, fields

from radspine.errors import ConfigError

# Upper bound of each field that is not a probability.
_MAX = {"blank_labels": 20.0, "click_noise_mm": 10.0}


@dataclass(frozen=True)
class QuirkConfig:
    """Per-study / per-series rates of each quirk and variation; defaults are low, near the real data's rates.

    :meth:`none` turns everything off and gives the clean phantom (uniform circular lordosis, no reader
    noise, thick slices sampled at their centre plane, one orientation convention).

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
        label_noise: reader grade noise, the flip probability of a cell whose latent severity sits exactly
            on a grade threshold; it falls as exp(-distance / 0.08) away from it (labels.READER_WIDTH).
            Flips go to the neighbouring grade across the nearest threshold; train.csv and test_solution.csv
            hold the reader's grade, synth_truth.csv the latent one.
        click_noise_mm: mean in-plane sd (mm) of a reader's coordinate clicks; each study's reader draws
            an sd of 0.5-1.5 x this (1-3 mm at the default).
        partial_volume: probability, per series, that each slice averages the anatomy over its slab
            (spine structures sampled at the midpoints of the slab's two halves; thin slices < 2.5 mm use
            their centre plane).
        thin_slices: probability, per sagittal series, of a thin-slice protocol (30-80 slices, 1-2 mm).
        lordosis_variation: probability that a study's lordosis varies along the spine (segmental angles
            growing towards a sharp lumbosacral angle, a kyphotic sacrum) instead of one circular arc.
        scoliosis: probability of a mild lateral curve (5-15 mm) with coronal tilt and axial rotation.
        spondylolisthesis: probability that one vertebra (mostly L4 or L5) sits 2-8 mm anterior.
        transitional: probability of transitional-like anatomy (rudimentary L5/S1 disc or a formed S1/S2 disc).
        sacral_remnant: probability of a thin S1/S2 remnant disc (15-35 % of the L5/S1 height) in the sacrum, as
            most real adults have: a disc-like line below L5/S1 that a localizer must not take for L5/S1.
        disc_degeneration: strength (0-1) of disc height loss and T2 darkening with the level's severity.
        flipped_orientation: probability, per series, of another in-plane convention (sagittal columns
            running anterior / rows running superior; axial columns to patient right / rows anterior),
            written truthfully in ImageOrientationPatient.
        wide_intensity: probability, per study, of an unusual intensity scale (log-uniform 80-20000).
        motion_ghosting: probability, per series, of periodic motion ghosts along the phase-encode direction.
        wrap_around: probability, per series, of aliasing: anatomy beyond the field of view along the
            phase-encode direction folds onto the opposite edge.

    Harder variations for localizer work (all 0 by default, so the default phantom is unchanged):

        spine_offcentre: probability, per study, that the sagittal FOV is planned off the spine: its centre
            moves by up to +-60 mm along AP and SI (uniform), so lumbar structures can sit near or past an edge.
        large_fov: probability, per sagittal series, of a large field of view (300-450 mm; small anatomy).
        spine_cropped: probability, per study, that the sagittal FOV misses the lumbar spine altogether (planned
            over the thoracic spine, or below the sacrum): no disc L1/L2-L5/S1, canal or foramen label point
            lies inside the sagittal images; their coordinate rows are dropped.
        random_contrast: probability, per study, of a random tissue-intensity table per contrast (domain
            randomisation, SynthSeg-like): half such studies jitter the real T1/T2/STIR table (x0.6-1.6 per
            tissue, orderings mostly kept), half draw every tissue uniformly in [0.02, 1] (any ordering).
        axial_lower_only: probability, per study, that the main axial series covers only the lowest 2-3 discs
            (upper-level subarticular points then have no axial slice and lose their coordinate rows).
        compressed: probability, per series, of a compressed transfer syntax (JPEG-LS lossless 50 %, JPEG 2000
            lossless 35 %, RLE lossless 15 %); pixel values are unchanged.
    """

    blank_labels: float = 1.0
    missing_coords: float = 0.05
    no_axial: float = 0.01
    axial_split: float = 0.12
    two_axial: float = 0.04
    second_sag_t1: float = 0.01
    reversed_instances: float = 0.1
    missing_tag: float = 0.05
    label_noise: float = 0.45
    click_noise_mm: float = 2.0
    partial_volume: float = 1.0
    thin_slices: float = 0.08
    lordosis_variation: float = 1.0
    scoliosis: float = 0.1
    spondylolisthesis: float = 0.06
    transitional: float = 0.08
    # 0 by default: the grading phantom and its fixtures stay as they were; the shipped localizer trains with it.
    sacral_remnant: float = 0.0
    disc_degeneration: float = 1.0
    flipped_orientation: float = 0.1
    wide_intensity: float = 0.1
    motion_ghosting: float = 0.05
    wrap_around: float = 0.05
    spine_offcentre: float = 0.0
    large_fov: float = 0.0
    spine_cropped: float = 0.0
    random_contrast: float = 0.0
    axial_lower_only: float = 0.0
    compressed: float = 0.0

    def __post_init__(self) -> None:
        for f in fields(self):
            v = getattr(self, f.name)
            hi = _MAX.get(f.name, 1.0)
            if not (0.0 <= float(v) <= hi):
                raise ConfigError(f"quirk rate {f.name}={v} must lie in [0, {hi:g}]")

    @classmethod
    def none(cls) -> QuirkConfig:
        """All quirks and variations off: every study clean and complete."""
        return cls(**{f.name: 0.0 for f in fields(cls)})

    @classmethod
    def all_on(cls) -> QuirkConfig:
        """Every variation at rate 1 (anatomy, acquisition, reader noise) but no missing data: for tests."""
        on = {f.name: 1.0 for f in fields(cls)}
        on.update(blank_labels=0.0, missing_coords=0.0, no_axial=0.0, axial_split=0.0, two_axial=0.0,
                  second_sag_t1=0.0, missing_tag=0.0, label_noise=0.45, click_noise_mm=2.0)
        # Localizer-hardness variations stay off: they move or drop label points, which all_on() promises not to.
        on.update(spine_offcentre=0.0, large_fov=0.0, spine_cropped=0.0, random_contrast=0.0, axial_lower_only=0.0,
                  compressed=0.0)
        return cls(**on)

    @classmethod
    def rsna(cls) -> QuirkConfig:
        """Defaults of ``preset="rsna"``: the default rates plus real-like compressed series (40 %), some
        lower-discs-only axial series (15 %) and some off-centre spines (15 %)."""
        return cls(compressed=0.4, axial_lower_only=0.15, spine_offcentre=0.15)
