"""The one place that maps per-study work: serially, over local processes, or on a Dask cluster.

Every mode returns results in the order of the inputs and captures per-item failures instead of
raising, so a batch never loses the studies that worked.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from radspine.errors import RadspineError

log = logging.getLogger(__name__)

# How long to keep retrying a Dask scheduler address before reporting it unreachable.
DASK_CONNECT_TIMEOUT = "20s"

T = TypeVar("T")
R = TypeVar("R")


@dataclass(frozen=True)
class Outcome(Generic[R]):
    """Result of one item: ``value`` on success, else ``error`` (a one-line reason)."""

    key: Any
    value: R | None = None
    error: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


def _describe(err: BaseException) -> str:
    if isinstance(err, RadspineError):
        return str(err)
    return f"{type(err).__name__}: {err}".splitlines()[0]


class _Guarded:
    """Picklable wrapper: runs fn(item) and turns an exception into ``(None, reason)``.

    Only ``fn`` and the item travel to a worker; keys are computed in the parent, so ``key`` may be
    any callable (a lambda included).
    """

    def __init__(self, fn: Callable[[Any], Any]):
        self.fn = fn

    def __call__(self, item: Any) -> tuple[Any, str | None]:
        try:
            return self.fn(item), None
        except Exception as err:  # noqa: BLE001 - a batch must survive any single bad study
            return None, _describe(err)


def default_workers() -> int:
    """Number of usable cores (respects CPU affinity)."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def _progress(total: int, desc: str, quiet: bool):
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    return Progress(
        TextColumn(desc),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        disable=quiet,
        transient=False,
    )


def map_items(
    fn: Callable[[T], R],
    items: Sequence[T],
    *,
    key: Callable[[T], Any] = lambda x: x,
    workers: int | None = None,
    scheduler: str | None = None,
    desc: str = "studies",
    quiet: bool = True,
) -> list[Outcome[R]]:
    """Apply ``fn`` to every item; return one :class:`Outcome` per item, in input order.

    Args:
        fn: picklable callable (a module-level function or a picklable object) for process/Dask modes.
        items: the work items (usually studies).
        key: how to name an item in outcomes and logs (e.g. its study_id).
        workers: 1 = serial in this process; N > 1 = N local processes; None = number of cores.
        scheduler: None for local modes; "local" starts a Dask LocalCluster with ``workers`` workers;
            "tcp://host:port" connects to a running Dask scheduler.
        desc: progress-bar label. quiet: no progress. Progress is a rich bar on a terminal and, when stderr
            is not one (a log file, CI), a plain line at most every 30 s (:class:`radspine.progress.PlainProgress`).
    """
    from radspine.progress import PlainProgress, stderr_is_terminal

    guarded = _Guarded(fn)
    keys = [key(it) for it in items]
    n = len(items)
    if n == 0:
        return []
    results: list[Outcome[R] | None] = [None] * n
    terminal = stderr_is_terminal()
    plain = PlainProgress(desc, n, log, every_s=30.0) if not quiet and not terminal else None
    with _progress(n, desc, quiet or not terminal) as progress:
        task = progress.add_task(desc, total=n)
        for idx, (value, error) in _run(guarded, items, workers, scheduler):
            outcome = Outcome(key=keys[idx], value=value, error=error)
            results[idx] = outcome
            if not outcome.ok:
                log.warning("skipped %s: %s", outcome.key, outcome.error)
            progress.advance(task)
            if plain is not None:
                plain.advance()
    return [r for r in results if r is not None]


def _run(guarded: _Guarded, items: Sequence[Any], workers: int | None, scheduler: str | None) -> Iterable[tuple[int, tuple[Any, str | None]]]:
    if scheduler:
        yield from _run_dask(guarded, items, workers, scheduler)
        return
    n_workers = default_workers() if workers is None else max(1, int(workers))
    if n_workers == 1 or len(items) == 1:
        for i, item in enumerate(items):
            yield i, guarded(item)
        return
    import multiprocessing as mp
    from concurrent.futures import ProcessPoolExecutor, as_completed

    # spawn: children must not inherit torch/OpenMP thread state or open file handles from the parent.
    with ProcessPoolExecutor(max_workers=n_workers, mp_context=mp.get_context("spawn")) as pool:
        futures = {pool.submit(guarded, item): i for i, item in enumerate(items)}
        for fut in as_completed(futures):
            yield futures[fut], fut.result()


def _run_dask(guarded: _Guarded, items: Sequence[Any], workers: int | None, scheduler: str) -> Iterable[tuple[int, tuple[Any, str | None]]]:
    from dask.distributed import Client, LocalCluster, as_completed

    cluster = None
    if scheduler == "local":
        cluster = LocalCluster(
            n_workers=workers or default_workers(),
            threads_per_worker=1,
            processes=True,
            dashboard_address=None,
            silence_logs=logging.ERROR,
        )
        client = Client(cluster)
    else:
        try:
            client = Client(scheduler, timeout=DASK_CONNECT_TIMEOUT)
        except OSError as err:
            raise RadspineError(f"cannot reach Dask scheduler {scheduler}: {err}") from None
    try:
        futures = client.map(guarded, list(items), pure=False)
        index = {f.key: i for i, f in enumerate(futures)}
        for fut in as_completed(futures):
            yield index[fut.key], fut.result()
    finally:
        client.close()
        if cluster is not None:
            cluster.close()
