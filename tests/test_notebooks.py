"""Every notebook in ``notebooks/`` runs top to bottom at the ``"tiny"`` budget without an error.

Each notebook executes in a fresh kernel of the current interpreter (nbclient, kernel ``python3``)
with ``AALR_NOTEBOOK_BUDGET=tiny`` in the kernel's environment (plus flags that make XLA compile
faster, which dominates at that budget) and ``notebooks/`` as its working directory; any exception
in any cell fails the test. The saved notebooks are not modified.

Also a tool to refresh the committed outputs (notebooks are saved with their outputs at the
default budget)::

    python tests/test_notebooks.py --budget small --save            # all notebooks
    python tests/test_notebooks.py --budget small --save 01 05      # those whose name starts so
"""

from __future__ import annotations

import argparse
import os
import pathlib
import sys
import time

import pytest

NOTEBOOK_DIR = pathlib.Path(__file__).resolve().parents[1] / "notebooks"
NOTEBOOKS = sorted(NOTEBOOK_DIR.glob("[0-9][0-9]_*.ipynb"))
TIMEOUT_S = 600  # per cell
TINY_XLA_FLAGS = ("--xla_backend_optimization_level=0", "--xla_llvm_disable_expensive_passes=true")


def execute(path: pathlib.Path, budget: str = "tiny", *, timeout: int = TIMEOUT_S):
    """Run the notebook at ``path`` in a fresh kernel at ``budget``; returns the executed notebook."""
    import nbformat
    from nbclient import NotebookClient

    nb = nbformat.read(path, as_version=4)
    client = NotebookClient(
        nb,
        timeout=timeout,
        kernel_name="python3",  # jupyter_client runs it with sys.executable, this interpreter
        resources={"metadata": {"path": str(path.parent)}},  # the kernel's working directory
        record_timing=False,
    )
    env = dict(os.environ, AALR_NOTEBOOK_BUDGET=budget, PYTHONWARNINGS="ignore::DeprecationWarning")
    env.pop("MPLBACKEND", None)  # the inline backend draws the figures
    if budget == "tiny":
        # At the tiny budget XLA compilation dominates (each sampler configuration compiles for ~10 s on
        # 2 CPU cores); compiling with fewer optimisations cuts the whole run by about a third.
        env["JAX_DISABLE_MOST_OPTIMIZATIONS"] = "1"
        env["XLA_FLAGS"] = " ".join([os.environ.get("XLA_FLAGS", ""), *TINY_XLA_FLAGS]).strip()
    client.execute(env=env)
    return nb


def test_notebooks_found():
    assert len(NOTEBOOKS) >= 6, [p.name for p in NOTEBOOKS]


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_runs(path):
    pytest.importorskip("nbclient")
    pytest.importorskip("ipykernel")
    execute(path, "tiny")


def main(argv=None):
    parser = argparse.ArgumentParser(description="Execute the notebooks (and optionally save their outputs).")
    parser.add_argument("names", nargs="*", help="prefixes of notebook names (default: all)")
    parser.add_argument("--budget", default="small", choices=("tiny", "small", "large"))
    parser.add_argument("--save", action="store_true", help="write the executed notebooks in place")
    args = parser.parse_args(argv)
    import nbformat

    paths = [p for p in NOTEBOOKS if not args.names or any(p.name.startswith(n) for n in args.names)]
    for path in paths:
        start = time.perf_counter()
        nb = execute(path, args.budget)
        seconds = time.perf_counter() - start
        if args.save:
            nbformat.write(nb, path)
        size = path.stat().st_size / 1024
        print(f"{path.name}: {seconds:.0f} s at budget {args.budget!r}" + (f", saved ({size:.0f} KiB)" if args.save else ""),
              flush=True)


if __name__ == "__main__":
    sys.exit(main())
