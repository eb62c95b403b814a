"""Localizer configuration (pydantic, unknown keys rejected)."""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LocalizerConfig(BaseModel):
    """Settings of the heatmap localizer; defaults train in a few minutes on 2 CPU cores on the phantom.

    Canonical grids are world-aligned and in millimetres, so the same model serves any scanner
    resolution, slice count or in-plane orientation. The sagittal net is fully convolutional: it is
    trained on ``sag_size`` px crops at a random spacing in [``sag_fine_spacing_mm``, ``sag_spacing_mm``]
    placed anywhere over the field of view (spine partly or wholly outside included), and at inference it
    runs over the whole FOV at ``sag_spacing_mm`` (coarse) and then on a window around the found spine at
    ``sag_fine_spacing_mm`` (fine).
    """

    model_config = ConfigDict(extra="forbid")

    # Sagittal canonical plane: columns along world +y (anterior→posterior), rows along world −z.
    sag_spacing_mm: float = Field(4.0, gt=0)  # coarse whole-FOV pass (and the coarsest training scale)
    sag_fine_spacing_mm: float = Field(2.0, gt=0)  # fine pass around the found spine (finest training scale)
    sag_fine_window_mm: float = Field(256.0, gt=0)  # head-feet side of the fine-pass window (mm)
    # Anterior-posterior side of the fine-pass window (mm): vertebral bodies, canal and posterior elements
    # with room for the foramina's prior; the training crops (64 px at 2-4 mm) are no wider.
    sag_fine_width_mm: float = Field(160.0, gt=0)
    sag_size: int = Field(64, ge=16)  # training crop (px)
    sag_depth: int = Field(4, ge=2, le=5)
    # Axial canonical crop around the level centre: columns along world +x, rows along world +y.
    ax_spacing_mm: float = Field(3.0, gt=0)
    ax_size: int = Field(32, ge=16)
    ax_depth: int = Field(3, ge=2, le=5)
    # Axial slices within this distance (mm) of a level's expected plane are all scored by the axial net and
    # the one with the strongest recess peaks is taken (the net is trained on neighbouring slices too, with
    # targets that fade with the distance to the labelled slice). 0 = the slice nearest the level's expected
    # plane (what models saved before this field get). Held out at real size the search took the subarticular
    # term from 0.630 to 0.577 (same graders and localizer training, seed-4242 test phantom).
    ax_slice_search_mm: float = Field(8.0, ge=0)
    # Input channels: planes at −o, 0, +o mm along the slice normal (interpolated between slices).
    channel_offset_mm: float = Field(3.0, ge=0)
    # Sagittal planes are scanned at this step (mm) across the stack at inference (fine pass; coarse uses 2x).
    # Equal to channel_offset_mm by default so neighbouring planes share their channel planes (sampled once).
    slice_step_mm: float = Field(3.0, gt=0)
    # Gaussian targets: in-plane sigma (mm) and across-plane sigma (mm).
    sigma_mm: float = Field(5.0, gt=0)
    sigma_slice_mm: float = Field(3.0, gt=0)
    # Foramina are searched at least this far (mm) from the canal plane on each side.
    side_margin_mm: float = Field(6.0, ge=0)
    # Gaussian prior (mm) tying each foramen to its level's canal point: head-feet and anterior-posterior.
    foramen_prior_z_mm: float = Field(10.0, gt=0)
    foramen_prior_y_mm: float = Field(25.0, gt=0)
    # An 11th sagittal channel for the sacrum (the canal behind the upper S1 body, below L5/S1): L5/S1 is then
    # the lowest disc above it, so an S1/S2 remnant or a sacral segment below is never counted as L5/S1.
    # Its training target comes from the canal labels (L5/S1 + 0.45 × (L5/S1 − L4/L5)); models saved without
    # it load with False.
    sacrum_channel: bool = True
    # Training.
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    base_channels: int = Field(8, ge=4)
    # Crops per labelled sagittal plane (centred near the spine, ±jitter_mm) and background crops per series
    # (anywhere in the FOV, away from the labelled plane too).
    crops_per_plane: int = Field(2, ge=1)
    random_planes_per_series: int = Field(1, ge=0)
    jitter_mm: float = Field(60.0, ge=0)
    ax_jitter_mm: float = Field(6.0, ge=0)
    holdout_frac: float = Field(0.2, ge=0, lt=1)
    # Intensity augmentation of training crops (MONAI: bias field, gamma, noise, blur, inversion).
    strong_augment: bool = True
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    # Torch CPU threads while the localizer runs (restored afterwards); 0 = leave torch's setting.
    # 1 by default: these small convolutions gain little from threads, and on a shared/loaded CPU two
    # spinning OpenMP threads were measured ~10x slower per step than one.
    num_threads: int = Field(1, ge=0)
    # Plane distance (mm) beyond which an axial slice choice is flagged doubtful (far from its level).
    axial_max_distance_mm: float = Field(10.0, gt=0)
    # Heatmap peaks below this (sigmoid) are flagged "doubtful: low confidence"; the point is still written.
    min_peak: float = Field(0.05, ge=0, le=1)
    # Mean canal peak below this: "doubtful: no spine in view" on every sagittal-anchored point.
    spine_min_peak: float = Field(0.15, ge=0, le=1)
    # A level whose gap to a neighbour exceeds this multiple of the study's median disc gap is doubtful.
    max_gap_ratio: float = Field(2.0, gt=1)
    # How disc candidates become levels when the sacrum is in view (see net.choose_levels): "count" = up from the
    # lowest disc-like peak; "window" = the run of consecutive disc-like peaks the level channels answer most.
    level_rule: Literal["count", "window"] = "count"
    # A study whose level confidence (P(chain not shifted)) is below this gets "levels may be shifted" on its
    # points; it is still graded.
    level_shift_below: float = Field(0.5, ge=0, le=1)
    # Below this level confidence the chain is as good one disc up or down (transitional anatomy: 4 or 6
    # lumbar-type vertebrae, a formed S1/S2 disc): "doubtful: level count", and the points are not graded.
    level_doubt_below: float = Field(0.15, ge=0, le=1)

    @model_validator(mode="after")
    def _sizes_fit_depth(self) -> LocalizerConfig:
        for name, size, depth in (("sag", self.sag_size, self.sag_depth), ("ax", self.ax_size, self.ax_depth)):
            if size % 2**depth:
                raise ValueError(f"{name}_size={size} must be a multiple of 2**{name}_depth={2**depth}")
        if self.sag_fine_spacing_mm > self.sag_spacing_mm:
            raise ValueError("sag_fine_spacing_mm must not exceed sag_spacing_mm")
        return self
