"""Re-execute the notebooks in demo mode and store the outputs nbval checks.

Only the outputs of cells marked ``# NBVAL_CHECK_OUTPUT`` are kept in the committed notebooks:
they are the expected answers that ``make test`` compares against. Every other output is
stripped, so the notebooks stay small and a Colab user starts from a clean page.

    python tools/refresh_notebooks.py [notebooks/01_clip_zero_shot.ipynb ...]
"""

from __future__ import annotations

import sys
from pathlib import Path

import nbformat

from mllm_nb.demo.runner import CHECK_MARKER, demo_environment, execute_notebook


def refresh(path: Path) -> None:
    with demo_environment():
        notebook, seconds, error = execute_notebook(path)
    if error:
        raise SystemExit(f"{path.name} failed: {error}")
    for cell in notebook.cells:
        if cell.cell_type != "code":
            continue
        if CHECK_MARKER not in cell.source:
            cell.outputs = []
            cell.execution_count = None  # nbval treats a cell with outputs but no count as never run
        cell.metadata.pop("execution", None)
    notebook.metadata.pop("widgets", None)  # live widget state of this run: meaningless in a stored notebook
    nbformat.write(notebook, path)
    print(f"{path.name}: refreshed in {seconds:.1f} s")


if __name__ == "__main__":
    targets = [Path(p) for p in sys.argv[1:]] or sorted(Path("notebooks").glob("*.ipynb"))
    for target in targets:
        refresh(target)
