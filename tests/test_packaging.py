"""The release: what the distributions contain, and that a user's install works from them.

The tests marked ``packaging`` build the wheel and the sdist (``python -m build``, which needs the
``build`` package and network access for the build backend), check what they contain, then create
a fresh virtual environment with only Jupyter's kernel machinery in it and run notebook 01 there at
the tiny budget: its first cell runs its own ``pip install aalr-jax`` against the wheel just built
(``AALR_JAX_FIND_LINKS``; dependencies come from PyPI), so what is tested is exactly what a fresh
Colab runtime runs (``AALR_JAX_DIST``: a folder with distributions already built from this tree,
used instead of building them again). They are excluded from the default run; CI runs them in their own step
(``pytest -m packaging tests/test_packaging.py``). The other tests here are quick consistency
checks of the release files and run by default.
"""

from __future__ import annotations

import json
import os
import pathlib
import re
import subprocess
import sys
import tarfile
import tomllib
import zipfile

import pytest

ROOT = pathlib.Path(__file__).resolve().parents[1]
PYPROJECT = tomllib.loads((ROOT / "pyproject.toml").read_text())
VERSION = PYPROJECT["project"]["version"]
REPOSITORY = PYPROJECT["project"]["urls"]["Source"]  # the one repository URL; everything else must match it
NOTEBOOKS = sorted((ROOT / "notebooks").glob("[0-9][0-9]_*.ipynb"))
SHIPPED_DATA = {"py.typed", "tasks/data/README.md"}


# -- quick consistency checks (default run) ---------------------------------------------------------

def test_every_dependency_declares_a_floor():
    for requirement in PYPROJECT["project"]["dependencies"]:
        assert re.fullmatch(r"[A-Za-z0-9_.\-]+>=[0-9][^,;\s]*", requirement), requirement
    constraints = subprocess.run([sys.executable, str(ROOT / ".ci" / "constraints.py")], check=True,
                                 capture_output=True, text=True).stdout.split()
    assert len(constraints) == len(PYPROJECT["project"]["dependencies"])
    assert all("==" in line for line in constraints), constraints


def test_changelog_has_this_version():
    changelog = (ROOT / "CHANGELOG.md").read_text()
    assert "## [Unreleased]" in changelog
    assert f"## [{VERSION}]" in changelog


def test_repository_url_is_one_constant():
    """Every GitHub/Colab link to this project names the repository of pyproject.toml's Source URL."""
    owner_repo = REPOSITORY.removeprefix("https://github.com/")
    files = [ROOT / "README.md", ROOT / "notebooks" / "README.md", ROOT / "mkdocs.yml", ROOT / "pyproject.toml",
             *NOTEBOOKS, *(ROOT / "docs").rglob("*.md")]
    for path in files:
        text = path.read_text()
        for match in re.finditer(r"(?:github\.com/|colab\.research\.google\.com/github/)([\w.-]+/[\w.-]+)", text):
            if "sbi-benchmark" in match.group(1):  # third-party references
                continue
            assert match.group(1) == owner_repo, (path.name, match.group(0))
    assert "OWNER" not in "".join(p.read_text() for p in NOTEBOOKS)


@pytest.mark.parametrize("path", NOTEBOOKS, ids=[p.stem for p in NOTEBOOKS])
def test_notebook_installs_by_name_and_has_a_colab_badge(path):
    nb = json.loads(path.read_text())
    first, setup = "".join(nb["cells"][0]["source"]), "".join(nb["cells"][1]["source"])
    assert f"colab.research.google.com/github/{REPOSITORY.removeprefix('https://github.com/')}/blob/main/notebooks/{path.name}" in first
    required = re.search(r'^AALR_JAX = "([^"]+)"', setup, re.M).group(1)
    assert tuple(map(int, required.split("."))) <= tuple(map(int, VERSION.split(".")[:3])), required
    assert re.search(r'"pip", "install", "-q", f"aalr-jax(\[dask\])?>=\{AALR_JAX\}"', setup), setup
    assert "AALR_JAX_FIND_LINKS" in setup and "jax[cuda12]" in setup


# -- the distributions (marked packaging) ----------------------------------------------------------

@pytest.fixture(scope="module")
def dist_dir(tmp_path_factory):
    if os.environ.get("AALR_JAX_DIST"):  # distributions already built from this tree (.ci/run's dist step)
        return pathlib.Path(os.environ["AALR_JAX_DIST"])
    out = tmp_path_factory.mktemp("dist")
    subprocess.run([sys.executable, "-m", "build", "--outdir", str(out), str(ROOT)], check=True,
                   stdout=subprocess.DEVNULL)
    return out


@pytest.mark.packaging
def test_wheel_ships_the_package_only(dist_dir):
    (wheel,) = dist_dir.glob(f"aalr_jax-{VERSION}-py3-none-any.whl")
    with zipfile.ZipFile(wheel) as archive:
        names = archive.namelist()
        metadata = archive.read(f"aalr_jax-{VERSION}.dist-info/METADATA").decode()
    top = {name.split("/")[0] for name in names}
    assert top == {"aalr_jax", f"aalr_jax-{VERSION}.dist-info"}, top
    assert {f"aalr_jax/{name}" for name in SHIPPED_DATA} <= set(names)
    assert f"aalr_jax-{VERSION}.dist-info/licenses/LICENSE" in names
    assert not [n for n in names if re.search(r"(^|/)(tests?|benchmarks|results|notebooks)/", n)]
    for field in ("License-Expression: MIT", "Requires-Python: >=3.11", "Classifier: Typing :: Typed",
                  f"Project-URL: Source, {REPOSITORY}", "Requires-Dist: jax>="):
        assert field in metadata, field


@pytest.mark.packaging
def test_sdist_ships_the_package_only(dist_dir):
    (sdist,) = dist_dir.glob(f"aalr_jax-{VERSION}.tar.gz")
    with tarfile.open(sdist) as archive:
        names = [name.split("/", 1)[1] for name in archive.getnames() if "/" in name]
    top = {name.split("/")[0] for name in names}
    assert top <= {"aalr_jax", "aalr_jax.egg-info", "LICENSE", "README.md", "PKG-INFO", "pyproject.toml",
                   "setup.cfg", "MANIFEST.in"}, top
    assert {f"aalr_jax/{name}" for name in SHIPPED_DATA} <= set(names)


@pytest.mark.packaging
def test_notebook_01_installs_from_the_wheel_in_a_fresh_environment(dist_dir, tmp_path):
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", str(venv)], check=True)
    python = venv / "bin" / "python"
    # only the kernel machinery (and pytest, which test_notebooks.py imports): aalr-jax and its
    # dependencies come from the notebook's own first cell
    subprocess.run([str(python), "-m", "pip", "install", "-q", "nbclient", "nbformat", "ipykernel", "pytest"], check=True)
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV", "PYTHONHOME")}
    env["AALR_JAX_FIND_LINKS"] = str(dist_dir)
    out = tmp_path / "executed"
    # test_notebooks.py runs the notebook with notebooks/ as the kernel's working directory, where
    # aalr_jax is not importable: the first cell must install it
    run = subprocess.run([str(python), str(ROOT / "tests" / "test_notebooks.py"), "--budget", "tiny", "--output",
                          str(out), "01"], env=env, capture_output=True, text=True)
    print(run.stdout[-4000:], run.stderr[-4000:])
    assert run.returncode == 0, "notebook 01 failed or its claims do not hold"
    executed = json.loads((out / NOTEBOOKS[0].name).read_text())
    printed = "".join("".join(o.get("text", "")) for o in executed["cells"][1].get("outputs", []))
    assert f"pip install -q aalr-jax>=" in printed and f"--find-links {dist_dir}" in printed, printed
    assert "git+" not in printed, "the wheel did not install: the cell fell back to the repository"
    installed = subprocess.run([str(python), "-c", "import aalr_jax, importlib.metadata as m; "
                                "print(m.version('aalr-jax'), aalr_jax.__file__)"], env=env, check=True,
                               capture_output=True, text=True, cwd=tmp_path).stdout.split()
    assert installed[0] == VERSION and str(venv) in installed[1], installed
