"""Re-execute the demo notebook in place, so that its committed outputs are what the current code draws.

    .venv/bin/python scripts/run_notebook.py            # or: make notebook

Runs ``notebooks/datnet_demo.ipynb`` top to bottom (``DATNET_NOTEBOOK_STEPS`` training steps, default 150,
a few CPU minutes), drops the cells' stderr and outputs naming this machine's paths and records in its
metadata (``datnet.fingerprint``) a hash of its code cells and of the code its figures come from
(``DRAWN_BY``); ``tests/notebooks/test_notebook.py`` fails when that hash no
longer matches, i.e. when the committed figures are stale.
"""

import hashlib
import sys
from pathlib import Path

import nbformat
from nbclient import NotebookClient

REPO = Path(__file__).resolve().parents[1]
NOTEBOOK = REPO / "notebooks" / "datnet_demo.ipynb"
# What the notebook's figures show: the drawing code and the dense targets it draws.
DRAWN_BY = sorted((REPO / "src" / "datnet" / "visualization").glob("*.py")) + [
    REPO / "src" / "datnet" / "data" / "aux_targets.py"
]


def fingerprint(notebook: nbformat.NotebookNode) -> str:
    """SHA-256 of the notebook's code cells and of the files in ``DRAWN_BY``."""
    digest = hashlib.sha256()
    for cell in notebook.cells:
        if cell.cell_type == "code":
            digest.update(cell.source.encode())
    for path in DRAWN_BY:
        digest.update(path.relative_to(REPO).as_posix().encode() + path.read_bytes())
    return digest.hexdigest()


def machine_specific(output: nbformat.NotebookNode) -> bool:
    """A stderr stream (warnings, Lightning's log lines), or any output naming this checkout's path (rich's
    warnings come as display data)."""
    return (output.output_type == "stream" and output.name == "stderr") or str(REPO) in str(output)


def drop_machine_output(notebook: nbformat.NotebookNode) -> None:
    """Removes the cells' machine-specific outputs (:func:`machine_specific`); the results, printed output
    and figures stay."""
    for cell in notebook.cells:
        if cell.cell_type == "code":
            cell.outputs = [output for output in cell.outputs if not machine_specific(output)]


def main() -> int:
    notebook = nbformat.read(NOTEBOOK, as_version=4)
    resources = {"metadata": {"path": str(REPO)}}
    NotebookClient(notebook, timeout=1800, kernel_name="python3", resources=resources).execute()  # raises
    drop_machine_output(notebook)
    notebook.metadata["datnet"] = {"fingerprint": fingerprint(notebook)}
    nbformat.write(notebook, NOTEBOOK)
    print(f"executed and wrote {NOTEBOOK.relative_to(REPO)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
