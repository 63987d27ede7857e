"""Atomic file output: every file aalr_jax writes (banks, estimators, samples, summaries, plots).

:func:`atomic_write` writes into an unnamed temporary file in the target's folder (Linux
``O_TMPFILE``; elsewhere a hidden ``.<name>.<random>.tmp`` removed on any Python exception), gives
it a name only when complete, and renames it over the target in one step. So a reader sees either
the previous file or the new one, never half of one; a write killed part-way leaves the previous
file and, where ``O_TMPFILE`` exists, nothing else. A symbolic link at the target is replaced by
the new file, never followed; permissions follow the process umask (``0666 & ~umask``), as for any
newly created file.
"""

from __future__ import annotations

import os
import secrets
from typing import Callable, IO

__all__ = ["atomic_write", "atomic_write_bytes"]


def _umask() -> int:
    mask = os.umask(0)
    os.umask(mask)
    return mask


def _open_unnamed(directory: str) -> int | None:
    """An unnamed file in ``directory``, or ``None`` where that is not possible (it is named
    through ``/proc/self/fd``, so ``/proc`` must be mounted too)."""
    flag = getattr(os, "O_TMPFILE", None)
    if flag is None or not os.path.isdir("/proc/self/fd"):
        return None
    try:
        return os.open(directory, flag | os.O_WRONLY, 0o666 & ~_umask())
    except OSError:  # a filesystem without O_TMPFILE support
        return None


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> None:
    """Call ``write(f)`` on a binary file object, then move the result to ``path`` atomically.

    Args:
        path: the target file; its folder must exist (``FileNotFoundError`` names it otherwise).
        write: fills the file object; any exception it raises leaves ``path`` untouched.

    Raises:
        FileNotFoundError: the folder of ``path`` does not exist (the message names it).
        IsADirectoryError: ``path`` is a folder.
    """
    path = os.fspath(path)
    directory = os.path.dirname(os.path.abspath(path))
    if not os.path.isdir(directory):
        raise FileNotFoundError(f"cannot write {path}: the folder {directory} does not exist")
    if os.path.isdir(path) and not os.path.islink(path):
        raise IsADirectoryError(f"cannot write {path}: it is a folder")
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{secrets.token_hex(6)}.tmp")
    fd = _open_unnamed(directory)
    named = fd is None
    if named:
        fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
    try:
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
            if not named:  # linkat(AT_SYMLINK_FOLLOW): a dir fd makes os.link call linkat
                dir_fd = os.open(directory, os.O_RDONLY)
                try:
                    os.link(f"/proc/self/fd/{f.fileno()}", os.path.basename(tmp), dst_dir_fd=dir_fd,
                            follow_symlinks=True)
                finally:
                    os.close(dir_fd)
                named = True
        os.replace(tmp, path)
    except BaseException:
        if named and os.path.lexists(tmp):
            os.unlink(tmp)
        raise


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    """:func:`atomic_write` of ``data``."""
    atomic_write(path, lambda f: f.write(data))
