"""Griffe extension for the API reference: Sphinx roles in the docstrings become cross-references.

The docstrings are Google style with some reST roles (``:func:`fit```, ``:class:`~aalr_jax.nn.RatioEstimator```).
mkdocstrings renders Markdown, where a role would show as literal text, so once the package is
loaded each role is rewritten as an autorefs link, ``[fit][aalr_jax.train.fit]``: its target is
looked up as written, then relative to the object's class, module and parent packages, then under
``aalr_jax``. Only targets the reference renders become links (documented objects of the modules
named by a ``::: module`` line under ``docs/api/``); any other target becomes plain code and is
listed in the build log at INFO level. ``mkdocs build --strict`` still fails on any Markdown
cross-reference that does not resolve.
Double-backtick literals (reST) become single-backtick code.
"""

from __future__ import annotations

import logging
import pathlib
import re

import griffe

logger = logging.getLogger("mkdocs.plugins.griffe_roles")
ROLE = re.compile(r":(?:py:)?(?:func|class|mod|meth|attr|data|obj|exc|const|paramref):`(~?)([^`]+?)`")
LITERAL = re.compile(r"``([^`]+?)``")
API_PAGES = pathlib.Path(__file__).resolve().parent / "api"


def _rendered_modules() -> tuple[set, set]:
    """Modules whose members the API pages render, and modules rendered without their members."""
    full, bare = set(), set()
    for page in API_PAGES.glob("*.md"):
        blocks = re.split(r"^::: ", page.read_text(), flags=re.M)[1:]
        for block in blocks:
            name, _, rest = block.partition("\n")
            (bare if re.search(r"members:\s*false", rest.split("\n\n")[0]) else full).add(name.strip())
    return full, bare


def _exists(collection, path: str) -> bool:
    try:
        collection[path]
    except Exception:  # KeyError, or an alias that does not resolve
        return False
    return True


def _rendered(collection, path: str, full: set, bare: set) -> bool:
    try:
        obj = collection[path]
        obj = obj.final_target if obj.is_alias else obj
    except Exception:
        return False
    if obj.is_module:
        return obj.path in full or obj.path in bare
    if any(part.startswith("_") for part in obj.path.split(".")) or not obj.docstring:
        return False
    return obj.module.path in full


def _resolve(collection, obj, target: str) -> str | None:
    target = target.strip().removesuffix("()")
    scopes = []
    scope = obj if obj.is_class or obj.is_module else obj.parent
    while scope is not None:
        scopes.append(scope.path)
        scope = scope.parent
    for prefix in ["", *(s + "." for s in scopes), "aalr_jax."]:
        if _exists(collection, prefix + target):
            return prefix + target
    return None


class SphinxRoles(griffe.Extension):
    def on_package(self, *, pkg, loader, **kwargs) -> None:
        unresolved = set()
        full, bare = _rendered_modules()
        for obj in _walk(pkg):
            if obj.docstring is None:
                continue

            def link(match, obj=obj):
                short, target = match.group(1), match.group(2)
                text = target.strip().split(".")[-1] if short else target.strip()
                path = _resolve(loader.modules_collection, obj, target)
                if path is None or not _rendered(loader.modules_collection, path, full, bare):
                    unresolved.add(f"{obj.path}: {target}")
                    return f"`{text}`"
                return f"[`{text}`][{path}]"

            value = ROLE.sub(link, obj.docstring.value)
            obj.docstring.value = LITERAL.sub(r"`\1`", value)
        for item in sorted(unresolved):
            logger.info("reST role target not found, rendered as code: %s", item)


def _walk(obj, seen=None):
    seen = set() if seen is None else seen
    if obj.path in seen:
        return
    seen.add(obj.path)
    yield obj
    for member in obj.members.values():
        if member.is_alias:
            continue
        yield from _walk(member, seen)
