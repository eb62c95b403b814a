"""CLI polish: --version, unwrapped logs when stderr is not a terminal, --quiet hides warnings, score order."""

from __future__ import annotations

import logging
import warnings

import pandas as pd
from typer.testing import CliRunner

import radspine
from radspine.cli import app

runner = CliRunner()


def test_version():
    res = runner.invoke(app, ["--version"])
    assert res.exit_code == 0
    assert res.stdout.strip() == f"radspine {radspine.__version__}"


def test_log_lines_are_not_wrapped_when_redirected(hospital, tmp_path):
    # A work folder with a long path: rich at 80 columns used to break it across lines.
    work = tmp_path / ("very_long_folder_name_" * 5) / "work"
    res = runner.invoke(app, ["localize", "--dicom", str(hospital["root"]), "--model", str(tmp_path / "nomodel"),
                              "--out", str(tmp_path / "pts.csv"), "--work", str(work)])
    view = str(work / "dicom_view")
    line = next(ln for ln in res.stderr.splitlines() if "non-DICOM files ignored" in ln)
    assert line.endswith(view), line
    assert "INFO" in line and "2 studies, 6 series typed" in line
    assert res.exit_code == 2  # then the missing localizer model is a one-line error
    assert res.stderr.strip().splitlines()[-1].startswith("error: ")


def test_quiet_hides_library_warnings(monkeypatch):
    from radspine.commands import setup_logging

    monkeypatch.delenv("PYTHONWARNINGS", raising=False)
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        setup_logging(quiet=True)
        warnings.warn("The least populated class in y has only 1 members", UserWarning, stacklevel=1)
        assert logging.getLogger().level == logging.WARNING
    assert seen == []
    import os

    assert os.environ["PYTHONWARNINGS"] == "ignore"  # worker processes inherit it
    with warnings.catch_warnings(record=True) as seen:
        warnings.simplefilter("always")
        setup_logging(quiet=False)
        warnings.warn("shown", UserWarning, stacklevel=1)
    assert [str(w.message) for w in seen] == ["shown"]


def _write(tmp_path):
    rid = ["1_spinal_canal_stenosis_l1_l2", "1_spinal_canal_stenosis_l2_l3"]
    sol = tmp_path / "solution.csv"
    sub = tmp_path / "submission.csv"
    pd.DataFrame({"row_id": rid, "normal_mild": [1, 0], "moderate": [0, 1], "severe": [0, 0],
                  "sample_weight": [1, 2]}).to_csv(sol, index=False)
    pd.DataFrame({"row_id": rid, "normal_mild": [0.7, 0.2], "moderate": [0.2, 0.5], "severe": [0.1, 0.3]}).to_csv(
        sub, index=False)
    return sol, sub


def test_score_names_argument_order_when_swapped(tmp_path):
    sol, sub = _write(tmp_path)
    ok = runner.invoke(app, ["score", str(sol), str(sub)])
    assert ok.exit_code == 0, ok.output
    res = runner.invoke(app, ["score", str(sub), str(sol)])
    assert res.exit_code == 2
    msg = res.stderr.strip()
    assert len(msg.splitlines()) == 1
    assert "the files look swapped" in msg and "radspine score SOLUTION SUBMISSION" in msg
    assert str(sub) in msg


def test_score_other_errors_name_the_order_too(tmp_path):
    sol, _ = _write(tmp_path)
    bad = tmp_path / "bad.csv"
    bad.write_text("row_id,normal_mild\n1_spinal_canal_stenosis_l1_l2,1\n")
    res = runner.invoke(app, ["score", str(sol), str(bad)])
    assert res.exit_code == 2
    assert "missing columns" in res.stderr
    assert f"SOLUTION={sol}, SUBMISSION={bad}" in res.stderr
