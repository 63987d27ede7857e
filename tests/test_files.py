"""Atomic writes (aalr_jax.files): old or new file, never half of one, never through a symlink."""

import os
import signal
import subprocess
import sys
import textwrap
import time

import pytest

from aalr_jax import files

SIZE = 8 << 20  # 8 MiB per version: long enough to be killed mid-write


WRITER = textwrap.dedent("""
    import sys
    from aalr_jax.files import atomic_write
    path, size = sys.argv[1], int(sys.argv[2])
    i = 0
    while True:
        i += 1
        block = bytes([i % 251]) * (1 << 20)
        def write(f):
            for _ in range(size >> 20):
                f.write(block)
        atomic_write(path, write)
        print(i, flush=True)
""")


def _complete(path):
    data = open(path, "rb").read()
    return len(data) == SIZE and data.count(data[:1]) == SIZE


@pytest.mark.parametrize("delay", [0.0, 0.05, 0.2])
def test_a_write_killed_midway_leaves_the_old_file_and_nothing_else(tmp_path, delay):
    folder = tmp_path / "out"
    folder.mkdir()
    target = folder / "big.bin"
    env = {**os.environ, "PYTHONPATH": os.getcwd() + os.pathsep + os.environ.get("PYTHONPATH", "")}
    proc = subprocess.Popen([sys.executable, "-c", WRITER, str(target), str(SIZE)], stdout=subprocess.PIPE, env=env)
    try:
        first = proc.stdout.readline()  # one complete version exists
        assert first.strip() == b"1"
        time.sleep(delay)
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
    finally:
        if proc.poll() is None:
            proc.kill()
    assert _complete(target)
    assert os.listdir(folder) == ["big.bin"]  # no temporary file left behind


def test_a_failing_writer_keeps_the_old_file(tmp_path, monkeypatch):
    target = tmp_path / "f.txt"
    target.write_text("old")
    for unnamed in (True, False):  # O_TMPFILE, and the hidden named temporary file elsewhere
        if not unnamed:
            monkeypatch.setattr(files, "_open_unnamed", lambda directory: None)

        def write(f):
            f.write(b"half")
            raise RuntimeError("disk full")

        with pytest.raises(RuntimeError, match="disk full"):
            files.atomic_write(target, write)
        assert target.read_text() == "old" and os.listdir(tmp_path) == ["f.txt"]
        files.atomic_write_bytes(target, b"new")
        assert target.read_text() == "new"
        target.write_text("old")


def test_a_symlink_is_replaced_never_followed_and_the_umask_holds(tmp_path):
    victim = tmp_path / "victim"
    victim.write_text("precious")
    link = tmp_path / "out.json"
    link.symlink_to(victim)
    old = os.umask(0o027)
    try:
        files.atomic_write_bytes(link, b"{}")
    finally:
        os.umask(old)
    assert victim.read_text() == "precious" and not link.is_symlink() and link.read_text() == "{}"
    assert link.stat().st_mode & 0o777 == 0o640


def test_missing_folder_and_folder_target_are_named(tmp_path):
    with pytest.raises(FileNotFoundError, match="the folder .*nodir does not exist"):
        files.atomic_write_bytes(tmp_path / "nodir" / "f", b"x")
    (tmp_path / "d").mkdir()
    with pytest.raises(IsADirectoryError, match="it is a folder"):
        files.atomic_write_bytes(tmp_path / "d", b"x")
