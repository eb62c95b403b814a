"""The real-data benchmarks refuse to run without their (never committed) real data, in one clear line."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize(("script", "args"), [
    ("real_nfn_cv.py", ["--data"]),
    ("localize_real_bench.py", ["--skip", "spider,finetune", "--rsna"]),
    ("localize_real_bench.py", ["--skip", "rsna,finetune", "--spider"]),
])
def test_real_benchmark_without_its_data_fails_in_one_line(tmp_path: Path, script: str, args: list[str]):
    missing = tmp_path / "not_built"
    res = subprocess.run([sys.executable, str(ROOT / "benchmarks" / script), *args, str(missing)],
                         capture_output=True, text=True, timeout=120)
    assert res.returncode == 2
    lines = res.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(missing) in lines[0]
    assert "Traceback" not in res.stderr and res.stdout == ""
