"""A small UNet heatmap model, Gaussian targets and sub-pixel peak decoding.

The UNet stays hand-written (about 60 lines; MONAI's BasicUNet has a fixed depth of 4 and ~4x the
parameters at its smallest useful width): it is fully convolutional, so the same weights run on training
crops and on whole-FOV planes of any size that is a multiple of 2**depth.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(
        nn.Conv2d(cin, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
        nn.Conv2d(cout, cout, 3, padding=1, bias=False),
        nn.BatchNorm2d(cout),
        nn.ReLU(inplace=True),
    )


class HeatmapUNet(nn.Module):
    """UNet of ``depth`` poolings: (B, in_ch, H, W) → logits (B, out_ch, H, W); H, W multiples of 2**depth.

    Depth 4 on a ~80 px canonical sagittal plane gives a receptive field spanning the whole lumbar
    spine, which the level channels need (L1/L2 and L4/L5 look alike; only context tells them apart).
    """

    def __init__(self, in_ch: int = 3, out_ch: int = 5, base: int = 8, depth: int = 4):
        super().__init__()
        chans = [base * 2**i for i in range(depth + 1)]
        self.enc = nn.ModuleList([_block(in_ch, chans[0])] + [_block(chans[i - 1], chans[i]) for i in range(1, depth)])
        self.bottom = _block(chans[depth - 1], chans[depth])
        self.pool = nn.MaxPool2d(2)
        self.ups = nn.ModuleList([nn.ConvTranspose2d(chans[i + 1], chans[i], 2, stride=2) for i in reversed(range(depth))])
        self.decs = nn.ModuleList([_block(chans[i] * 2, chans[i]) for i in reversed(range(depth))])
        self.head = nn.Conv2d(chans[0], out_ch, 1)
        # Start with near-zero heatmaps: most pixels are background, so the loss starts small and stable.
        nn.init.constant_(self.head.bias, -4.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        skips = []
        for enc in self.enc:
            x = enc(x)
            skips.append(x)
            x = self.pool(x)
        x = self.bottom(x)
        for up, dec, skip in zip(self.ups, self.decs, reversed(skips), strict=True):
            x = dec(torch.cat([up(x), skip], 1))
        return self.head(x)


def gaussian_maps(size: int, rows: np.ndarray, cols: np.ndarray, amps: np.ndarray,
                  sigma: float | np.ndarray) -> np.ndarray:  # fmt: skip
    """(N, size, size) Gaussians of peak ``amps`` centred at (rows, cols); NaN centres give zeros.

    ``sigma`` (px): one value, or one per map (N,).
    """
    grid = np.arange(size, dtype=np.float32)
    sigma = np.asarray(sigma, dtype=np.float32)
    sigma = sigma.reshape(-1, 1) if sigma.ndim else sigma
    rows = np.asarray(rows, dtype=np.float32)[:, None]
    cols = np.asarray(cols, dtype=np.float32)[:, None]
    gr = np.exp(-((grid[None] - rows) ** 2) / (2 * sigma**2))
    gc = np.exp(-((grid[None] - cols) ** 2) / (2 * sigma**2))
    maps = np.asarray(amps, dtype=np.float32)[:, None, None] * gr[:, :, None] * gc[:, None, :]
    return np.nan_to_num(maps, nan=0.0).astype(np.float32)


def _log_parabola(a: float, b: float, c: float) -> float:
    """Sub-sample offset of a peak from three samples; exact for a Gaussian (parabola in log space)."""
    la, lb, lc = (np.log(max(float(v), 1e-12)) for v in (a, b, c))
    denom = la - 2 * lb + lc
    return float(np.clip(0.5 * (la - lc) / denom, -0.5, 0.5)) if denom < 0 else 0.0


def decode_peak(heat: np.ndarray, at: tuple[int, int] | None = None) -> tuple[float, float, float]:
    """(row, col, peak value) of a 2-D heatmap: argmax (or the given pixel ``at``) refined by a
    log-parabola fit along each axis."""
    r, c = np.unravel_index(int(np.argmax(heat)), heat.shape) if at is None else (int(at[0]), int(at[1]))
    row, col = float(r), float(c)
    if 0 < r < heat.shape[0] - 1:
        row += _log_parabola(heat[r - 1, c], heat[r, c], heat[r + 1, c])
    if 0 < c < heat.shape[1] - 1:
        col += _log_parabola(heat[r, c - 1], heat[r, c], heat[r, c + 1])
    return row, col, float(heat[r, c])


def assign_ordered_peaks(maps: np.ndarray, min_sep_px: int = 3, max_candidates: int = 9,
                         strong_frac: float = 0.5, floor_row: float | None = None) -> list[tuple[int, int]] | None:  # fmt: skip
    """Pixel (row, col) per channel of (L, H, W) level heatmaps, with rows strictly increasing by channel.

    Candidates are local maxima of the channel-wise maximum map (non-maximum suppression over
    ``min_sep_px``), sorted by row (head to feet). Discs are counted from the sacrum up, as a reader does:
    when at least L candidates are disc-like (response ≥ ``strong_frac`` × the median of the L strongest),
    the last channel takes the lowest of them and the others the disc-like candidates directly above, none
    skipped. Level channels of a net respond to the neighbouring discs too, and on a field of view that
    shows the thoracic spine their summed response favoured a chain one disc too high. ``floor_row``: the
    row of the image's lower edge; when the lowest disc-like candidate lies less than one disc gap above it,
    the sacrum may be out of view and the lowest disc need not be L5/S1, so the count is not used. Otherwise the L
    channels take the ordered subsequence of candidates maximising the summed channel responses (dynamic
    programming), which at least stops two channels from landing on one disc. Returns None when fewer than
    L candidates exist.
    """
    from scipy import ndimage

    n_lv = maps.shape[0]
    top = maps.max(axis=0)
    peaks = (top == ndimage.maximum_filter(top, size=2 * min_sep_px + 1)) & (top > 1e-3)
    rr, cc = np.nonzero(peaks)
    if len(rr) < n_lv:
        return None
    keep = np.argsort(-top[rr, cc], kind="stable")[:max_candidates]
    rr, cc = rr[keep], cc[keep]
    order = np.argsort(rr, kind="stable")
    rr, cc = rr[order], cc[order]
    t = top[rr, cc]
    strong = np.flatnonzero(t >= strong_frac * float(np.median(np.sort(t)[::-1][:n_lv])))
    if len(strong) >= n_lv:
        gap = float(np.median(np.diff(rr[strong])))
        if floor_row is None or floor_row - rr[strong[-1]] >= gap:
            return [(int(rr[k]), int(cc[k])) for k in strong[-n_lv:]]
    n = len(rr)
    score = maps[:, rr, cc]  # (L, n)
    best = np.full((n_lv, n), -np.inf)
    back = np.zeros((n_lv, n), dtype=int)
    best[0] = score[0]
    for lv in range(1, n_lv):
        for j in range(n):
            prev = [i for i in range(j) if rr[i] < rr[j]]
            if prev:
                i = max(prev, key=lambda k: best[lv - 1, k])
                best[lv, j], back[lv, j] = best[lv - 1, i] + score[lv, j], i
    j = int(np.argmax(best[-1]))
    if not np.isfinite(best[-1, j]):
        return None
    path = [j]
    for lv in range(n_lv - 1, 0, -1):
        j = int(back[lv, j])
        path.append(j)
    path.reverse()
    return [(int(rr[k]), int(cc[k])) for k in path]


def refine_argmax_1d(values: np.ndarray, positions: np.ndarray) -> tuple[int, float]:
    """Index of the maximum of a 1-D profile and its parabola-refined position (clamped to neighbours)."""
    i = int(np.argmax(values))
    if 0 < i < len(values) - 1:
        y0, y1, y2 = values[i - 1], values[i], values[i + 1]
        denom = y0 - 2 * y1 + y2
        if denom < 0:
            t = float(np.clip(0.5 * (y0 - y2) / denom, -0.5, 0.5))
            step = positions[i + 1] - positions[i] if t > 0 else positions[i] - positions[i - 1]
            return i, float(positions[i] + t * step)
    return i, float(positions[i])

