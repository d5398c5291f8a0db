"""The notebook in examples/ runs top to bottom on a fresh checkout (issue 39): executed here with nbclient, in a
scratch folder, as a scientist would run it; and it is kept in the repository without outputs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

NOTEBOOK = Path(__file__).resolve().parents[1] / "examples" / "study.ipynb"


def test_the_notebook_is_saved_without_outputs():
    nb = json.loads(NOTEBOOK.read_text())
    code = [c for c in nb["cells"] if c["cell_type"] == "code"]
    assert code and all(not c.get("outputs") and c.get("execution_count") is None for c in code)


@pytest.mark.timeout(900)
def test_the_notebook_runs_top_to_bottom(tmp_path):
    nbformat = pytest.importorskip("nbformat", reason="nbformat is not installed (a test dependency)")
    nbclient = pytest.importorskip("nbclient", reason="nbclient is not installed (a test dependency)")
    nb = nbformat.read(NOTEBOOK, as_version=4)
    nbclient.NotebookClient(nb, timeout=600, kernel_name="python3", resources={"metadata": {"path": str(tmp_path)}}
                            ).execute()
    outputs = "".join(json.dumps(o) for c in nb.cells if c.cell_type == "code" for o in c.get("outputs", []))
    assert "ensemble_stacked" in outputs and "from an array" in outputs and "image/png" in outputs
    assert (tmp_path / "artifacts/notebook/model_comparison/report.html").exists()
