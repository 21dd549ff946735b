"""Every notebook in `notebooks/` runs from top to bottom without an error.

A notebook opts in to a small-size run by tagging its cell of size knobs with "parameters" (cell metadata
`{"tags": ["parameters"]}`): the override in `SMALL`, keyed by the notebook's file name, is inserted right after that
cell. A notebook without such a cell runs as it is, so it must be cheap. The notebook is executed in memory, in a
temporary working directory; the file in `notebooks/` is never written.
"""

import pathlib
import time

import pytest

nbformat = pytest.importorskip("nbformat")
nbclient = pytest.importorskip("nbclient")
pytest.importorskip("ipykernel")

ROOT = pathlib.Path(__file__).resolve().parents[1]
NOTEBOOKS = sorted((ROOT / "notebooks").glob("*.ipynb"))

# Small-size overrides, inserted after each notebook's "parameters" cell.
SMALL = {
    "teacher_student_2d.ipynb": (
        "FULL = False\n"
        "n = 300\n"
        "n_test = 500\n"
        "widths = [4]\n"
        "wide = 4\n"
        "sgd_steps = 40\n"
        "n_save = 9\n"
    ),
    "feature_repopulation.ipynb": (
        "FULL = False\n"
        "d = 4\n"
        "n = 128\n"
        "N = 100\n"
        "t1 = 5.0\n"
        "N_digits = 40\n"
        "t1_digits = 1.0\n"
        "ms = [5, 10]\n"
        "draws = 2\n"
        "dt = 0.05\n"
    ),
    "birth_death.ipynb": (
        "FULL = False\n"
        "n = 64\n"
        "widths = [16]\n"
        "seeds = [0, 1]\n"
        "t1 = 200.0\n"
        "n_save = 9\n"
    ),
    "isotropic_gaussians.ipynb": (
        "FULL = False\n"
        "d = 10\n"
        "t1 = 1.0\n"
        "n_save = 3\n"
        "widths = [8]\n"
        "seeds = [0]\n"
        "cells = 16\n"
        "reduced = 256\n"
    ),
    "resnet_feature_flow.ipynb": (
        "FULL = False\n"
        "n = 4\n"
        "depth = 2\n"
        "widths = [6]\n"
        "t1 = 30.0\n"
        "n_save = 4\n"
    ),
    "width_independence.ipynb": (
        "FULL = False\n"
        "n = 32\n"
        "widths = [16, 32]\n"
        "seeds = [0, 1]\n"
        "t1 = 5.0\n"
        "n_save = 21\n"
        "widths_degenerate = [16, 32]\n"  # the shapes and save count of part 1's depth-4 runs: no new compilation
        "seeds_degenerate = [0, 1]\n"
        "t1_degenerate = 20.0\n"
        "n_save_degenerate = 21\n"
    ),
    "parameter_study.ipynb": (
        "N = 64\n"
        "temperatures = 4\n"
        "seeds = 2\n"
        "t1 = 3.0\n"
        "batch_size = 4\n"  # two batches of four points: two files in the study's directory
    ),
}

CELL_TIMEOUT = 300  # seconds per cell: a hanging cell fails the test instead of blocking the suite


def _parameters_cell(nb) -> int | None:
    for index, cell in enumerate(nb.cells):
        if cell.cell_type == "code" and "parameters" in cell.metadata.get("tags", []):
            return index
    return None


def test_notebooks_found():
    assert NOTEBOOKS, "no notebooks found in notebooks/"


def test_every_override_has_a_notebook():
    names = {path.name for path in NOTEBOOKS}
    assert set(SMALL) <= names, f"SMALL names notebooks that do not exist: {sorted(set(SMALL) - names)}"


@pytest.mark.parametrize("path", NOTEBOOKS, ids=lambda p: p.name)
def test_notebook_runs(path, tmp_path):
    nb = nbformat.read(path, as_version=4)
    index = _parameters_cell(nb)
    if index is not None:
        assert path.name in SMALL, f"{path.name} has a 'parameters' cell but no small-size override in SMALL"
        override = nbformat.v4.new_code_cell(SMALL[path.name], metadata={"tags": ["injected-parameters"]})
        nb.cells.insert(index + 1, override)
    # Run where relative paths resolve as from notebooks/ (e.g. ../data), without writing into the repository.
    workdir = tmp_path / "notebooks"
    workdir.mkdir()
    (tmp_path / "data").symlink_to(ROOT / "data", target_is_directory=True)
    client = nbclient.NotebookClient(
        nb, timeout=CELL_TIMEOUT, kernel_name="python3", allow_errors=False,
        resources={"metadata": {"path": str(workdir)}},
    )
    start = time.perf_counter()
    client.execute()  # raises CellExecutionError on the first cell that fails
    elapsed = time.perf_counter() - start
    errors = [
        output for cell in nb.cells if cell.cell_type == "code"
        for output in cell.get("outputs", []) if output.get("output_type") == "error"
    ]
    assert not errors, f"{path.name}: cells raised {[e.get('ename') for e in errors]}"
    print(f"{path.name}: {elapsed:.1f} s")
