"""Print a pip constraints file pinning every direct dependency of pyproject.toml to its floor.

``name>=X`` becomes ``name==X``; a dependency without a ``>=`` floor is an error (every direct
dependency must declare the oldest release it is tested with). Usage: ``python .ci/constraints.py``.
"""

import pathlib
import re
import sys
import tomllib

pyproject = tomllib.loads((pathlib.Path(__file__).resolve().parents[1] / "pyproject.toml").read_text())
lines = []
for requirement in pyproject["project"]["dependencies"]:
    match = re.fullmatch(r"\s*([A-Za-z0-9_.\-\[\]]+?)\s*>=\s*([0-9][^,;\s]*)\s*(;.*)?", requirement)
    if match is None:
        sys.exit(f"pyproject.toml: {requirement!r} has no plain '>=' floor")
    name = re.sub(r"\[.*\]", "", match.group(1))
    lines.append(f"{name}=={match.group(2)}" + (f" {match.group(3)}" if match.group(3) else ""))
print("\n".join(lines))
