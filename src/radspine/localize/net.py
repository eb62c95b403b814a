"""A small UNet heatmap model, Gaussian targets and sub-pixel peak decoding.

The UNet stays hand-written (about 60 lines; MONAI's BasicUNet has a fixed depth of 4 and ~4x the
parameters at its smallest useful width): it is fully convolutional, so the same weights run on training
crops and on whole-FOV planes of any size that is a multiple of 2**depth.
"""

from __future__ import annotations

from dataclasses import dataclass

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


@dataclass(frozen=True)
class LevelChoice:
    """Which candidate peak each level channel takes, and how sure the chain is.

    ``rows_cols``: (row, col) per channel, rows increasing; ``rule``: "sacrum count" (counted up from the
    lowest disc-like peak), "window" (the run of consecutive disc-like peaks that the level channels answer most)
    or "responses" (ordered assignment maximising the summed responses); ``margin``: the chosen chain's summed
    own-channel response minus that of the best chain one disc up or down, over the chosen chain's (1 = no
    rival, ≤ 0 = a shifted chain explains the heatmaps as well); ``n_disc``: disc-like candidates in view.
    """

    rows_cols: list[tuple[int, int]]
    rule: str
    margin: float
    n_disc: int


def _chain_score(maps: np.ndarray, rr: np.ndarray, cc: np.ndarray, idx: list[int]) -> float:
    return float(sum(maps[lv, rr[k], cc[k]] for lv, k in enumerate(idx)))


def _shift_margin(maps: np.ndarray, rr: np.ndarray, cc: np.ndarray, seq: list[int], idx: list[int]) -> float:
    """(score(idx) − best score of ``idx`` moved one place up or down the candidate sequence ``seq``) / score(idx)."""
    pos = [seq.index(k) for k in idx]
    own = _chain_score(maps, rr, cc, idx)
    rivals = []
    for step in (-1, 1):
        moved = [p + step for p in pos]
        if min(moved) >= 0 and max(moved) < len(seq):
            rivals.append(_chain_score(maps, rr, cc, [seq[p] for p in moved]))
    if not rivals or own <= 0:
        return 1.0 if own > 0 else 0.0
    return float((own - max(rivals)) / own)


def choose_levels(maps: np.ndarray, min_sep_px: int = 3, max_candidates: int = 9, strong_frac: float = 0.5,
                  floor_row: float | None = None, rule: str = "count", sacrum: np.ndarray | None = None,
                  sacrum_min: float = 0.3) -> LevelChoice | None:  # fmt: skip
    """Pixel (row, col) per channel of (L, H, W) level heatmaps, with rows strictly increasing by channel.

    Candidates are local maxima of the channel-wise maximum map (non-maximum suppression over
    ``min_sep_px``), sorted by row (head to feet); disc-like ones respond ≥ ``strong_frac`` × the median of the
    L strongest. With at least L disc-like candidates and the lowest at least one disc gap above the image's lower
    edge ``floor_row`` (else the sacrum may be out of view), a ``sacrum`` heatmap (H, W) whose peak reaches
    ``sacrum_min`` fixes L5/S1 as the lowest disc-like candidate above that peak, within 1.2 disc gaps of it, and
    the others are counted up from there (rule "sacrum": a disc-like S1/S2 remnant or sacral segment lies below
    the sacrum's peak, so it cannot be counted); otherwise ``rule="count"`` counts from the sacrum up (the
    last channel takes the lowest disc-like candidate, the others those directly above, none skipped: level
    channels answer the neighbouring discs too, and on a field of view that shows the thoracic spine their
    summed response favoured a chain one disc too high), ``rule="window"`` takes the run of L consecutive
    disc-like candidates with the largest summed own-channel response (the level channels decide, e.g. that
    an S1/S2 remnant below L5/S1 is not a lumbar disc). Otherwise the L channels take the ordered subsequence
    of candidates maximising the summed channel responses (dynamic programming), which at least stops two
    channels from landing on one disc. Returns None when fewer than L candidates exist.
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
    strong = [int(k) for k in np.flatnonzero(t >= strong_frac * float(np.median(np.sort(t)[::-1][:n_lv])))]
    if len(strong) >= n_lv:
        gap = float(np.median(np.diff(rr[strong])))
        if sacrum is not None and float(sacrum.max()) >= sacrum_min:
            s_row = int(np.unravel_index(int(np.argmax(sacrum)), sacrum.shape)[0])
            above = [k for k in strong if rr[k] < s_row]
            if len(above) >= n_lv and s_row - rr[above[-1]] <= 1.2 * gap:
                idx = above[-n_lv:]
                return LevelChoice([(int(rr[k]), int(cc[k])) for k in idx], "sacrum",
                                   _shift_margin(maps, rr, cc, strong, idx), len(strong))  # fmt: skip
        if floor_row is None or floor_row - rr[strong[-1]] >= gap:
            if rule == "window":
                starts = range(len(strong) - n_lv + 1)
                j = max(starts, key=lambda a: (_chain_score(maps, rr, cc, strong[a : a + n_lv]), a))
                idx = strong[j : j + n_lv]
            else:
                idx = strong[-n_lv:]
            return LevelChoice([(int(rr[k]), int(cc[k])) for k in idx], "sacrum count" if rule != "window" else
                               "window", _shift_margin(maps, rr, cc, strong, idx), len(strong))  # fmt: skip
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
    return LevelChoice([(int(rr[k]), int(cc[k])) for k in path], "responses",
                       _shift_margin(maps, rr, cc, list(range(n)), path), len(strong))  # fmt: skip


def assign_ordered_peaks(maps: np.ndarray, min_sep_px: int = 3, max_candidates: int = 9,
                         strong_frac: float = 0.5, floor_row: float | None = None) -> list[tuple[int, int]] | None:  # fmt: skip
    """The (row, col) per channel of :func:`choose_levels` with the sacrum count (None without enough peaks)."""
    ch = choose_levels(maps, min_sep_px, max_candidates, strong_frac, floor_row)
    return None if ch is None else ch.rows_cols


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

