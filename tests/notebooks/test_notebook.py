"""The notebook runs top to bottom (a few training steps) and shows its figures."""

from pathlib import Path

import nbformat
from nbclient import NotebookClient

NOTEBOOK = Path(__file__).resolve().parents[2] / "notebooks" / "datnet_demo.ipynb"


def test_notebook_executes(monkeypatch):
    monkeypatch.setenv("DATNET_NOTEBOOK_STEPS", "3")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    NotebookClient(notebook, timeout=600, kernel_name="python3").execute()
    outputs = [out for cell in notebook.cells if cell.cell_type == "code" for out in cell.get("outputs", [])]
    assert not [out for out in outputs if out.get("output_type") == "error"]
    figures = [out for out in outputs if "image/png" in out.get("data", {})]
    assert len(figures) == 2  # predictions/targets grid and the SE weights per level


def test_committed_notebook_has_its_outputs():
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    code = [cell for cell in notebook.cells if cell.cell_type == "code"]
    assert code and all(cell.get("outputs") for cell in code)


def test_committed_figures_are_from_the_current_code(load_script):
    """The committed outputs were made by the notebook's current cells and drawing/target code: after a change
    to either, `make notebook` re-executes it (``scripts/run_notebook.py`` stamps the fingerprint)."""
    run_notebook = load_script("run_notebook")
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    recorded = notebook.metadata.get("datnet", {}).get("fingerprint")
    assert recorded == run_notebook.fingerprint(notebook), "stale notebook outputs: run `make notebook`"


def test_committed_outputs_name_no_machine_paths():
    """The committed outputs say nothing of the machine they ran on (``scripts/run_notebook.py`` drops stderr
    and outputs naming the checkout)."""
    text = NOTEBOOK.read_text()
    assert str(NOTEBOOK.parents[1]) not in text and "site-packages" not in text
