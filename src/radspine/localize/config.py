"""Localizer configuration (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field, model_validator


class LocalizerConfig(BaseModel):
    """Settings of the heatmap localizer; defaults train in ~1-2 min on 2 CPU cores on the phantom.

    Canonical grids are world-aligned and in millimetres, so the same model serves any scanner
    resolution, slice count or in-plane orientation.
    """

    model_config = ConfigDict(extra="forbid")

    # Sagittal canonical plane: columns along world +y (anterior→posterior), rows along world −z.
    sag_spacing_mm: float = Field(5.0, gt=0)
    sag_size: int = Field(48, ge=16)
    sag_depth: int = Field(3, ge=2, le=5)
    # Axial canonical crop around the level centre: columns along world +x, rows along world +y.
    ax_spacing_mm: float = Field(3.0, gt=0)
    ax_size: int = Field(32, ge=16)
    ax_depth: int = Field(3, ge=2, le=5)
    # Input channels: planes at −o, 0, +o mm along the slice normal (interpolated between slices).
    channel_offset_mm: float = Field(3.0, ge=0)
    # Sagittal planes are scanned at this step (mm) across the stack at inference.
    slice_step_mm: float = Field(2.0, gt=0)
    # Gaussian targets: in-plane sigma (canonical pixels) and across-plane sigma (mm).
    sigma_px: float = Field(1.2, gt=0)
    sigma_slice_mm: float = Field(3.0, gt=0)
    # Foramina are searched at least this far (mm) from the canal plane on each side.
    side_margin_mm: float = Field(6.0, ge=0)
    # Gaussian prior (mm) tying each foramen to its level's canal point: head-feet and anterior-posterior.
    foramen_prior_z_mm: float = Field(10.0, gt=0)
    foramen_prior_y_mm: float = Field(25.0, gt=0)
    # Training.
    epochs: int = Field(20, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    base_channels: int = Field(8, ge=4)
    random_planes_per_series: int = Field(1, ge=0)
    jitter_mm: float = Field(12.0, ge=0)
    ax_jitter_mm: float = Field(6.0, ge=0)
    holdout_frac: float = Field(0.2, ge=0, lt=1)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    # Torch CPU threads while the localizer runs (restored afterwards); 0 = leave torch's setting.
    # 1 by default: these small convolutions gain little from threads, and on a shared/loaded CPU two
    # spinning OpenMP threads were measured ~10x slower per step than one.
    num_threads: int = Field(1, ge=0)
    # Plane distance (mm) beyond which an axial slice choice is flagged as far from its level.
    axial_max_distance_mm: float = Field(10.0, gt=0)
    # Heatmap peaks below this (sigmoid) are flagged "low confidence"; the point is still written.
    min_peak: float = Field(0.05, ge=0, le=1)

    @model_validator(mode="after")
    def _sizes_fit_depth(self) -> LocalizerConfig:
        for name, size, depth in (("sag", self.sag_size, self.sag_depth), ("ax", self.ax_size, self.ax_depth)):
            if size % 2**depth:
                raise ValueError(f"{name}_size={size} must be a multiple of 2**{name}_depth={2**depth}")
        return self
