"""MkDocs hooks: pages that include Markdown files from outside docs/.

``<!-- include: benchmarks/README.md -->`` on a page is replaced by that file (a path from the
repository root), its relative links rewritten to the repository on GitHub, so that the page stays
valid whatever the included file links to.
"""

from __future__ import annotations

import os
import pathlib
import re

ROOT = pathlib.Path(__file__).resolve().parents[1]
INCLUDE = re.compile(r"<!-- include: (\S+) -->")
LINK = re.compile(r"(\]\()([^)#\s]+)")


def _included(path: str, repo_url: str) -> str:
    source = ROOT / path
    text = source.read_text(encoding="utf-8")
    folder = source.parent.relative_to(ROOT)

    def absolute(match):
        target = match.group(2)
        if re.match(r"^[a-z]+:|^/|^#", target):
            return match.group(0)
        resolved = pathlib.Path(os.path.normpath(folder / target)).as_posix()
        kind = "tree" if (ROOT / resolved).is_dir() else "blob"
        return f"{match.group(1)}{repo_url.rstrip('/')}/{kind}/main/{resolved}"

    return LINK.sub(absolute, text)


def on_page_markdown(markdown, page, config, files, **kwargs):
    return INCLUDE.sub(lambda m: _included(m.group(1), config["repo_url"]), markdown)
