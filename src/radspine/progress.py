"""Progress that a redirected log shows: plain lines when stderr is not a terminal.

rich draws its progress bars only on a terminal; in a log file, CI output or a pipe it shows nothing until
the end. :class:`PlainProgress` writes one ``logging`` line instead (count, elapsed, time left), at most
every ``every_s`` seconds (and always for the last item), so a long stage is visible in any log.
"""

from __future__ import annotations

import logging
import sys
import time


def stderr_is_terminal() -> bool:
    """True when stderr is an interactive terminal (rich bars draw there; elsewhere plain lines)."""
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):  # a closed or replaced stream
        return False


def format_seconds(s: float) -> str:
    """``42s``, ``3m05s``, ``1h02m``."""
    s = max(0.0, float(s))
    if s < 60:
        return f"{s:.0f}s"
    m, sec = divmod(int(round(s)), 60)
    if m < 60:
        return f"{m}m{sec:02d}s"
    h, m = divmod(m, 60)
    return f"{h}h{m:02d}m"


class PlainProgress:
    """``desc: k/n, elapsed 1m10s, ~2m30s left`` lines through ``log`` (INFO).

    Args:
        desc: what is counted ("studies", "extract-features train").
        total: number of items.
        log: the logger to write to.
        every_s: minimum seconds between two lines (0: a line per item).
    """

    def __init__(self, desc: str, total: int, log: logging.Logger, every_s: float = 0.0):
        self.desc = desc
        self.total = total
        self.log = log
        self.every_s = every_s
        self.t0 = time.perf_counter()
        self.done = 0
        self._last = -1e18

    def advance(self, n: int = 1, extra: str = "") -> None:
        """Count ``n`` more items and write a line when due; ``extra`` is appended to the line."""
        self.done += n
        now = time.perf_counter()
        if now - self._last < self.every_s and self.done < self.total:
            return
        self._last = now
        el = now - self.t0
        left = el / self.done * (self.total - self.done) if self.done else float("nan")
        tail = f", ~{format_seconds(left)} left" if self.done < self.total and left == left else ""
        self.log.info("%s: %d/%d, elapsed %s%s%s", self.desc, self.done, self.total, format_seconds(el), tail,
                      f", {extra}" if extra else "")


__all__ = ["PlainProgress", "format_seconds", "stderr_is_terminal"]
