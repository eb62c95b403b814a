"""radspine.parallel.map_items: input order, captured failures, identical results in every mode."""

from __future__ import annotations

import logging

import pytest

from radspine.errors import RadspineError
from radspine.parallel import Outcome, default_workers, map_items


def square_or_fail(x: int) -> int:
    """Module level so spawned processes can import it."""
    if x == 3:
        raise RadspineError("study 3: broken series")
    if x == 5:
        raise ValueError("bad value\nsecond line")
    return x * x


def test_serial_order_and_failures(caplog: pytest.LogCaptureFixture) -> None:
    items = list(range(7))
    with caplog.at_level(logging.WARNING, logger="radspine.parallel"):
        out = map_items(square_or_fail, items, key=lambda i: f"s{i}", workers=1)
    assert [o.key for o in out] == [f"s{i}" for i in items]
    assert [o.value for o in out] == [0, 1, 4, None, 16, None, 36]
    assert [o.ok for o in out] == [True, True, True, False, True, False, True]
    assert out[3].error == "study 3: broken series"  # a RadspineError's own one-line message
    assert out[5].error == "ValueError: bad value"  # others: type + first line only
    assert "skipped s3: study 3: broken series" in caplog.text
    assert map_items(square_or_fail, [], workers=1) == []


def test_processes_match_serial_with_lambda_key() -> None:
    items = [6, 5, 4, 3, 2, 1, 0]
    serial = map_items(square_or_fail, items, key=lambda i: i + 100, workers=1)
    procs = map_items(square_or_fail, items, key=lambda i: i + 100, workers=2)
    assert procs == serial
    assert isinstance(procs[0], Outcome) and procs[0].key == 106 and procs[0].value == 36


def test_unreachable_dask_scheduler_is_user_error(monkeypatch: pytest.MonkeyPatch) -> None:
    import radspine.parallel

    monkeypatch.setattr(radspine.parallel, "DASK_CONNECT_TIMEOUT", "1s")
    with pytest.raises(RadspineError, match="cannot reach Dask scheduler tcp://127.0.0.1:1"):
        map_items(square_or_fail, [1], scheduler="tcp://127.0.0.1:1")


def test_default_workers_positive() -> None:
    assert default_workers() >= 1


def test_plain_progress_lines_when_stderr_is_not_a_terminal(caplog: pytest.LogCaptureFixture) -> None:
    # pytest's stderr is no terminal: a log line instead of a rich bar that a log file would never show.
    with caplog.at_level(logging.INFO, logger="radspine.parallel"):
        map_items(abs, [1, -2, 3], workers=1, desc="studies", quiet=False)
    lines = [r.getMessage() for r in caplog.records if r.name == "radspine.parallel"]
    assert lines and lines[-1].startswith("studies: 3/3, elapsed ")
    caplog.clear()
    with caplog.at_level(logging.INFO, logger="radspine.parallel"):
        map_items(abs, [1, -2, 3], workers=1, desc="studies", quiet=True)
    assert not [r for r in caplog.records if r.name == "radspine.parallel"]
