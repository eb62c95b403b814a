"""The study viewer: a static page per study (slices, points by grade, the rows behind them; move a point and
save the points CSV ``predict --points`` takes) and an index. :func:`build_viewer` is the one entry point."""

from __future__ import annotations

from radspine.viewer.build import ViewerResult, build_viewer, find_points_file

__all__ = ["ViewerResult", "build_viewer", "find_points_file"]
