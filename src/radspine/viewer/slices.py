"""A stack's slices at display resolution (8-bit, windowed once per stack, ≤ ``max_px``, compressed) and the
geometry the page needs to place points on them.

The page draws each stored image stretched over the stack's physical field of view, so the stored pixel grid
only sets the sharpness: geometry stays in the original DICOM pixel coordinates (``x``/``y`` of the points
CSV), whatever the display resolution.
"""

from __future__ import annotations

import base64
import io
import logging
from typing import Final

import numpy as np

from radspine.types import Volume

log = logging.getLogger(__name__)

FORMATS: Final[dict[str, str]] = {"webp": "image/webp", "png": "image/png"}
# Lossy WebP at 85: ~38 dB PSNR against the lossless slice on the real-size phantom (39 sagittal, 39 axial), at
# a fifth (sagittal) to a third (axial) of PNG's bytes; 90 costs 1.3-1.7x more for ~2.5 dB.
DEFAULT_QUALITY: Final[int] = 85
# Stored window: wide enough that the page's window/level drag can still brighten the dark end or read the
# bright CSF; the 0.5 % tails are mostly noise and fat-suppression artefacts.
STORE_PERCENTILES: Final[tuple[float, float]] = (0.5, 99.8)
_LETTERS: Final[tuple[tuple[str, str], ...]] = (("L", "R"), ("P", "A"), ("S", "I"))  # LPS: +x left, +y posterior


def direction_letter(v: np.ndarray) -> str:
    """Patient direction (L/R, P/A, S/I) a world direction mostly points to (LPS, so +x is patient left)."""
    v = np.asarray(v, dtype=float)
    axis = int(np.argmax(np.abs(v)))
    return _LETTERS[axis][0 if v[axis] > 0 else 1]


def window_stack(pixels: np.ndarray) -> np.ndarray:
    """The stack as uint8 through one window for all its slices (:data:`STORE_PERCENTILES`, finite pixels)."""
    arr = np.asarray(pixels, dtype=np.float32)
    finite = arr[np.isfinite(arr)]
    if finite.size == 0:
        return np.zeros(arr.shape, np.uint8)
    sample = finite[:: max(1, finite.size // 2_000_000)]  # percentiles of a big stack from a regular sample
    lo, hi = (float(v) for v in np.percentile(sample, STORE_PERCENTILES))
    if hi <= lo:
        hi = lo + 1.0
    out = np.clip((np.nan_to_num(arr, nan=lo) - lo) * (255.0 / (hi - lo)), 0, 255)
    return np.rint(out).astype(np.uint8)


def display_shape(rows: int, cols: int, max_px: int) -> tuple[int, int]:
    """(rows, cols) of the stored image: the original grid shrunk uniformly so its longer side is ≤ max_px."""
    f = min(1.0, max_px / max(rows, cols))
    return max(1, round(rows * f)), max(1, round(cols * f))


def encode_slice(img: np.ndarray, shape: tuple[int, int], fmt: str = "webp", quality: int = DEFAULT_QUALITY) -> bytes:
    """One uint8 slice resized to ``shape`` (Lanczos) and compressed; ``quality`` 100 means lossless WebP."""
    from PIL import Image

    im = Image.fromarray(np.ascontiguousarray(img), mode="L")
    if im.size != (shape[1], shape[0]):
        im = im.resize((shape[1], shape[0]), Image.Resampling.LANCZOS)
    buf = io.BytesIO()
    if fmt == "webp":
        im.save(buf, format="WEBP", quality=int(quality), lossless=quality >= 100, method=4)
    elif fmt == "png":
        im.save(buf, format="PNG", optimize=True)
    else:
        raise ValueError(f"unknown image format {fmt!r} (use one of {sorted(FORMATS)})")
    return buf.getvalue()


def data_uri(data: bytes, fmt: str) -> str:
    """``data:image/...;base64,...``: the page embeds its images, so it opens from the file system alone."""
    return f"data:{FORMATS[fmt]};base64,{base64.b64encode(data).decode('ascii')}"


def stack_geometry(vol: Volume) -> dict:
    """What the page needs to map pixels ↔ world for one stack (the numbers :mod:`radspine.geometry` uses)."""
    row_mm, col_mm = vol.pixel_spacing
    return {
        "rows": int(vol.pixels.shape[1]),
        "cols": int(vol.pixels.shape[2]),
        "pixel_spacing": [float(row_mm), float(col_mm)],
        "positions": [[float(v) for v in p] for p in vol.positions],
        "row_cosine": [float(v) for v in vol.row_cosine],
        "col_cosine": [float(v) for v in vol.col_cosine],
        "normal": [float(v) for v in vol.normal],
        "offsets": [float(v) for v in vol.slice_offsets],
        "instances": [int(v) for v in vol.instance_numbers],
        "slice_spacing": float(vol.slice_spacing),
        # Screen edges in patient directions: +column is row_cosine, +row is col_cosine, +slice is normal.
        "edges": {"right": direction_letter(vol.row_cosine), "left": direction_letter(-vol.row_cosine),
                  "bottom": direction_letter(vol.col_cosine), "top": direction_letter(-vol.col_cosine),
                  "next_slice": direction_letter(vol.normal)},
    }


def stack_images(vol: Volume, *, max_px: int = 512, fmt: str = "webp", quality: int = DEFAULT_QUALITY) -> tuple[list[str | None], list[int], list[str]]:
    """Every slice of a stack as a data URI; (images, display shape (rows, cols), problems).

    A slice that cannot be encoded becomes ``None`` with a problem line naming it (the page says so in the
    slice's place) rather than failing the whole study.
    """
    rows, cols = vol.pixels.shape[1:]
    shape = display_shape(rows, cols, max_px)
    u8 = window_stack(vol.pixels)
    images: list[str | None] = []
    problems: list[str] = []
    for k in range(u8.shape[0]):
        try:
            images.append(data_uri(encode_slice(u8[k], shape, fmt, quality), fmt))
        except (OSError, ValueError) as err:
            images.append(None)
            problems.append(f"series {vol.series_id} instance {int(vol.instance_numbers[k])}: image not encoded ({err})")
            log.warning("%s", problems[-1])
    return images, [int(shape[0]), int(shape[1])], problems
