"""radspine.fsutil: atomic writes leave ``0o666 & ~umask`` on new files and keep an old file's mode."""

from __future__ import annotations

import contextlib
import os
import stat

import pandas as pd
import pytest

from radspine import fsutil
from radspine.fsutil import (
    atomic_path,
    current_umask,
    write_csv_atomic,
    write_json_atomic,
    write_parquet_atomic,
    write_text_atomic,
)


@contextlib.contextmanager
def umask(mask: int):
    old = os.umask(mask)
    try:
        yield
    finally:
        os.umask(old)


def mode(path) -> int:
    return stat.S_IMODE(os.stat(path).st_mode)


def _df() -> pd.DataFrame:
    return pd.DataFrame({"a": [1, 2], "b": ["x", "y"]})


WRITERS = {
    "text": lambda p: write_text_atomic(p, "hello\n"),
    "json": lambda p: write_json_atomic(p, {"b": 1, "a": [2]}),
    "csv": lambda p: write_csv_atomic(_df(), p),
    "parquet": lambda p: write_parquet_atomic(_df(), p),
}


def test_current_umask_reads_without_changing():
    with umask(0o027):
        assert current_umask() == 0o027
        assert current_umask() == 0o027  # reading twice: not reset by the first read
    with umask(0o002):
        assert current_umask() == 0o002


@pytest.mark.parametrize("mask", [0o022, 0o002, 0o077])
@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_new_file_gets_umask_mode(tmp_path, kind, mask):
    path = tmp_path / "sub" / f"out.{kind}"
    with umask(mask):
        WRITERS[kind](path)
        # What a plain open() gives under the same umask.
        plain = tmp_path / f"plain.{kind}"
        plain.write_text("x")
    assert mode(path) == 0o666 & ~mask == mode(plain)
    assert [p.name for p in path.parent.iterdir()] == [path.name]  # no temporary left behind


@pytest.mark.parametrize("kind", sorted(WRITERS))
def test_replaced_file_keeps_its_mode(tmp_path, kind):
    path = tmp_path / f"out.{kind}"
    path.write_text("old")
    os.chmod(path, 0o640)
    with umask(0o022):
        WRITERS[kind](path)
    assert mode(path) == 0o640
    assert path.read_bytes() != b"old"
    os.chmod(path, 0o604)
    WRITERS[kind](path)
    assert mode(path) == 0o604


def test_writer_that_recreates_the_temporary_file(tmp_path):
    # Some writers unlink and recreate their output (their own atomic rename): the mode still holds.
    path = tmp_path / "model.bin"
    with umask(0o022), atomic_path(path) as tmp:
        tmp.unlink()
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT, 0o600)
        os.write(fd, b"data")
        os.close(fd)
    assert mode(path) == 0o644 and path.read_bytes() == b"data"


def test_error_leaves_target_untouched(tmp_path):
    path = tmp_path / "out.txt"
    path.write_text("old")
    os.chmod(path, 0o640)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text("half")
        raise RuntimeError("boom")
    assert path.read_text() == "old" and mode(path) == 0o640
    assert [p.name for p in tmp_path.iterdir()] == ["out.txt"]


def test_umask_fallback_without_proc(tmp_path, monkeypatch):
    # Where /proc is absent the umask is read by setting and restoring it.
    real_open = open

    def no_proc(file, *a, **k):
        if str(file).startswith("/proc/"):
            raise FileNotFoundError(file)
        return real_open(file, *a, **k)

    monkeypatch.setattr("builtins.open", no_proc)
    with umask(0o037):
        assert fsutil.current_umask() == 0o037
        assert current_umask() == 0o037
        write_text_atomic(tmp_path / "a.txt", "x")
    assert mode(tmp_path / "a.txt") == 0o640
