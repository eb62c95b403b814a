"""The feature-analysis notebook runs top to bottom headless on a demo-shaped output and shows every plot."""

from __future__ import annotations

from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "notebooks" / "feature_analysis.ipynb"


@pytest.fixture(scope="module")
def example_run(tmp_path_factory) -> Path:
    from test_analysis import shared_example_run  # one example run per session, built by whichever runs first

    return shared_example_run(tmp_path_factory)


def test_notebook_holds_no_logic() -> None:
    import nbformat

    nb = nbformat.read(NOTEBOOK, as_version=4)
    for cell in nb.cells:
        if cell.cell_type != "code":
            continue
        for line in cell.source.splitlines():
            s = line.strip()
            # Only radspine imports, assignments of analysis calls and display expressions.
            assert not s.startswith(("def ", "class ", "for ", "while ", "if ", "try", "with ")), s
            if s.startswith(("import ", "from ")):
                assert s.startswith(("from radspine", "import radspine")), s


def test_notebook_executes_headless(example_run: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import nbformat
    from nbclient import NotebookClient

    monkeypatch.setenv("RADSPINE_DEMO_DIR", str(example_run))
    monkeypatch.setenv("OMP_NUM_THREADS", "1")
    monkeypatch.setenv("MPLBACKEND", "module://matplotlib_inline.backend_inline")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(nb, timeout=240, kernel_name="python3", resources={"metadata": {"path": str(example_run)}}).execute()
    outputs = [o for c in nb.cells if c.cell_type == "code" for o in c.outputs]
    assert not [o for o in outputs if o.output_type == "error"]
    pngs = [o for o in outputs if o.output_type in ("display_data", "execute_result") and "image/png" in o.get("data", {})]
    # importance, distributions, correlation, CNN projection, calibration, errors, severity
    assert len(pngs) == 7, [list(o.get("data", {})) for o in outputs]
    text = "\n".join(o.get("data", {}).get("text/plain", "") for o in outputs if o.output_type == "execute_result")
    assert "training studies" in text and "30" in text  # the summary table read the example run
    assert "L4/L5" in text and "weighted_logloss" in text  # errors by level
    assert "synth_truth.csv" in text  # the example run has no latent severity and says so
