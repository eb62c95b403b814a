"""Localizer configuration (pydantic, unknown keys rejected)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class LocalizerConfig(BaseModel):
    """Settings of the heatmap localizer; defaults train in ~1-2 min on 2 CPU cores on the phantom.

    Canonical grids are world-aligned and in millimetres, so the same model serves any scanner
    resolution, slice count or in-plane orientation.
    """

    model_config = ConfigDict(extra="forbid")

    # Sagittal canonical plane: columns along world +y (anterior→posterior), rows along world −z.
    sag_spacing_mm: float = Field(4.0, gt=0)
    sag_size: int = Field(64, ge=32, multiple_of=16)
    sag_depth: int = Field(4, ge=2, le=5)
    # Axial canonical crop around the level centre: columns along world +x, rows along world +y.
    ax_spacing_mm: float = Field(2.0, gt=0)
    ax_size: int = Field(48, ge=32, multiple_of=8)
    ax_depth: int = Field(3, ge=2, le=5)
    # Input channels: planes at −o, 0, +o mm along the slice normal (interpolated between slices).
    channel_offset_mm: float = Field(3.0, ge=0)
    # Sagittal planes are scanned at this step (mm) across the stack at inference.
    slice_step_mm: float = Field(2.0, gt=0)
    # Gaussian targets: in-plane sigma (canonical pixels) and across-plane sigma (mm).
    sigma_px: float = Field(1.5, gt=0)
    sigma_slice_mm: float = Field(3.0, gt=0)
    # Foramina are searched at least this far (mm) from the canal plane on each side.
    side_margin_mm: float = Field(6.0, ge=0)
    # Training.
    epochs: int = Field(12, ge=1)
    batch_size: int = Field(16, ge=1)
    lr: float = Field(3e-3, gt=0)
    base_channels: int = Field(8, ge=4)
    random_planes_per_series: int = Field(3, ge=0)
    jitter_mm: float = Field(12.0, ge=0)
    ax_jitter_mm: float = Field(6.0, ge=0)
    holdout_frac: float = Field(0.2, ge=0, lt=1)
    device: str = "auto"  # "auto" | "cpu" | "cuda"
    num_threads: int = Field(0, ge=0)  # torch CPU threads; 0 = leave torch's default
    # Plane distance (mm) beyond which an axial slice choice is flagged as far from its level.
    axial_max_distance_mm: float = Field(10.0, gt=0)
