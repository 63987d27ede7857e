"""A simulation bank on disk: a Zarr (v3) group written chunk by chunk, resumable, read lazily.

Layout of ``bank.zarr`` for n planned simulations in chunks of ``c`` rows:

* ``theta: (n, d)`` float32, ``x: (n, *x_shape)`` float32 (created with the first result, so the
  shape comes from the simulator), ``valid: (n,)`` bool, each chunked by ``c`` rows, so one
  chunk of simulations is one Zarr chunk of each array;
* attributes ``aalr_jax``: ``config`` (simulator and prior names, seed words, n, chunk size, θ
  dimension, the simulator contract) and the package version; ``completed_chunks``: the sorted
  indices of the chunks written; ``failures``: per chunk, the failed simulations (index, θ, error).

A chunk's arrays are written before its index joins ``completed_chunks``, and every Zarr write of
a local store is atomic (write to a temporary file, then rename), so a run killed at any point
leaves a store whose completed chunks are whole; running the same ``simulate`` again computes
only the others. Unwritten or failed rows are NaN in ``theta``/``x`` and False in ``valid``.

:func:`load_bank` opens a ``.zarr`` store as a :class:`ZarrBank` (nothing read until asked) and
a ``.npz`` file as an in-memory :class:`~aalr_jax.types.SimulationBank`.
"""

from __future__ import annotations

import os
import warnings

import jax.numpy as jnp
import numpy as np

from aalr_jax.types import SimulationBank

__all__ = ["FORMAT", "ZarrBank", "is_store_path", "load_bank"]

FORMAT = "aalr_jax.bank.v1"
_COMPARED = ("format", "simulator", "prior", "contract", "seed", "num_simulations", "chunk_size", "theta_dim")


def _zarr():
    """The ``zarr`` module (an optional dependency: ``pip install 'aalr-jax[dask]'``)."""
    try:
        import zarr
    except ImportError as err:
        raise ImportError("Zarr bank stores need zarr>=3: pip install 'aalr-jax[dask]'") from err
    return zarr


def is_store_path(path) -> bool:
    """Whether ``path`` names a Zarr store: it ends in ``.zarr`` or is a folder holding ``zarr.json``."""
    path = os.fspath(path)
    return path.rstrip("/").endswith(".zarr") or os.path.isfile(os.path.join(path, "zarr.json"))


class ZarrBank:
    """A simulation bank in a Zarr store, read lazily.

    Attributes:
        path: the store's folder.
        theta: ``(n, d)`` Zarr array (slicing reads only the chunks touched).
        x: ``(n, *x_shape)`` Zarr array (``None`` until a first simulation succeeds).
        valid: ``(n,)`` Zarr bool array; False for failed or not yet written rows.
        config: the run's configuration (a dict, see the module docstring).
    """

    is_store = True

    def __init__(self, group, path: str):
        self._group = group
        self.path = path
        meta = dict(group.attrs).get("aalr_jax")
        if not isinstance(meta, dict) or meta.get("config", {}).get("format") != FORMAT:
            raise ValueError(f"{path} is not an aalr_jax bank store (no '{FORMAT}' configuration in its attributes)")
        self.config = meta["config"]

    # ------------------------------------------------------------------ opening

    @classmethod
    def open(cls, path, mode: str = "r") -> "ZarrBank":
        """Open an existing store (``mode="r"`` read-only, ``"r+"`` to write)."""
        path = os.fspath(path)
        try:
            group = _zarr().open_group(path, mode=mode)
        except (FileNotFoundError, ValueError, TypeError) as err:  # zarr's errors for a missing/foreign path
            raise ValueError(f"path {path!r} is not a Zarr bank store: {err}") from err
        return cls(group, path)

    @classmethod
    def create_or_resume(cls, path, config: dict, version: str) -> "ZarrBank":
        """Open ``path`` to resume a run of ``config``, or create it; ``ValueError`` if it holds another run."""
        path = os.fspath(path)
        config = dict(config, format=FORMAT)
        if os.path.exists(path):
            bank = cls.open(path, mode="r+")
            differs = {k: (bank.config.get(k), config.get(k)) for k in _COMPARED if bank.config.get(k) != config.get(k)}
            if differs:
                detail = "; ".join(f"{k}: store has {a!r}, this run has {b!r}" for k, (a, b) in differs.items())
                raise ValueError(
                    f"store={path!r} holds a different run ({detail}); pass another store path or delete it"
                )
            stored_version = dict(bank._group.attrs)["aalr_jax"].get("version")
            if stored_version != version:
                warnings.warn(f"{path} was started by aalr_jax {stored_version}, resumed by {version}", stacklevel=3)
            return bank
        group = _zarr().open_group(path, mode="w-")
        n, d, c = config["num_simulations"], config["theta_dim"], config["chunk_size"]
        group.create_array("theta", shape=(n, d), chunks=(c, d), dtype="float32", fill_value=np.nan)
        group.create_array("valid", shape=(n,), chunks=(c,), dtype="bool", fill_value=False)
        group.attrs.update({"aalr_jax": {"config": config, "version": version}, "completed_chunks": [],
                            "failures": {}})
        return cls(group, path)

    # ------------------------------------------------------------------ layout

    @property
    def theta(self):
        return self._group["theta"]

    @property
    def x(self):
        return self._group["x"] if "x" in self._group else None

    @property
    def valid(self):
        return self._group["valid"]

    @property
    def chunk_size(self) -> int:
        return int(self.config["chunk_size"])

    @property
    def num_planned(self) -> int:
        """n, the simulations the run was configured for."""
        return int(self.config["num_simulations"])

    @property
    def num_chunks(self) -> int:
        return -(-self.num_planned // self.chunk_size)

    @property
    def x_shape(self) -> tuple | None:
        return None if self.x is None else tuple(self.x.shape[1:])

    def chunk_bounds(self, chunk: int) -> tuple[int, int]:
        """``(start, stop)`` rows of chunk ``chunk``."""
        start = chunk * self.chunk_size
        return start, min(start + self.chunk_size, self.num_planned)

    @property
    def completed_chunks(self) -> list:
        return list(dict(self._group.attrs)["completed_chunks"])

    @property
    def complete(self) -> bool:
        return len(self.completed_chunks) == self.num_chunks

    @property
    def failures(self) -> list:
        """Every recorded failed simulation, ``{"index", "theta", "error"}``, in index order."""
        per_chunk = dict(self._group.attrs)["failures"]
        return sorted((f for fs in per_chunk.values() for f in fs), key=lambda f: f["index"])

    def valid_mask(self) -> np.ndarray:
        """``(n,)`` bool: simulations written and valid (reads the whole, small, mask)."""
        return np.asarray(self.valid[:], bool)

    @property
    def num_simulations(self) -> int:
        """Valid simulations written so far (the rows training uses)."""
        return int(self.valid_mask().sum())

    @property
    def theta_dim(self) -> int:
        return int(self.config["theta_dim"])

    # ------------------------------------------------------------------ writing and reading

    def write_chunk(self, chunk: int, theta: np.ndarray, x: np.ndarray | None, valid: np.ndarray,
                    failures: list) -> None:
        """Write chunk ``chunk`` (``theta (k, d)``, ``x (k, *x_shape)`` or ``None``, ``valid (k,)``) and
        then mark it completed."""
        start, stop = self.chunk_bounds(chunk)
        valid = np.asarray(valid, bool)
        if x is not None:
            if self.x is None:
                self._group.create_array("x", shape=(self.num_planned,) + tuple(x.shape[1:]),
                                         chunks=(self.chunk_size,) + tuple(x.shape[1:]), dtype="float32",
                                         fill_value=np.nan)
            elif tuple(x.shape[1:]) != self.x_shape:
                error = f"returned shape {tuple(x.shape[1:])}, expected {self.x_shape}"
                failures = failures + [{"index": start + j, "theta": [float(t) for t in theta[j]], "error": error}
                                       for j in np.flatnonzero(valid)]
                x, valid = None, np.zeros_like(valid)
        self.theta[start:stop] = np.asarray(theta, np.float32)
        if x is not None:
            self.x[start:stop] = np.asarray(x, np.float32)
        self.valid[start:stop] = valid
        attrs = dict(self._group.attrs)
        record = dict(attrs["failures"])
        if failures:
            record[str(chunk)] = list(failures)
        done = sorted(set(attrs["completed_chunks"]) | {int(chunk)})
        self._group.attrs.update({"completed_chunks": done, "failures": record})

    def read_chunk(self, chunk: int) -> tuple[np.ndarray, np.ndarray]:
        """The valid rows of chunk ``chunk``: ``theta (k', d)``, ``x (k', *x_shape)`` as NumPy float32."""
        start, stop = self.chunk_bounds(chunk)
        keep = np.asarray(self.valid[start:stop], bool)
        if self.x is None or not keep.any():
            return np.zeros((0, self.theta_dim), np.float32), np.zeros((0,) + (self.x_shape or (0,)), np.float32)
        return np.asarray(self.theta[start:stop])[keep], np.asarray(self.x[start:stop])[keep]

    def read_chunks(self, chunks) -> SimulationBank:
        """The valid rows of ``chunks`` (in that order) in memory, as a float32 :class:`SimulationBank`."""
        parts = [self.read_chunk(c) for c in chunks]
        theta = np.concatenate([p[0] for p in parts])
        x = np.concatenate([p[1] for p in parts])
        return SimulationBank(jnp.asarray(theta), jnp.asarray(x))

    def to_memory(self) -> SimulationBank:
        """Every valid written simulation, in index order, as an in-memory bank."""
        return self.read_chunks(range(self.num_chunks))

    def __repr__(self) -> str:
        return (f"ZarrBank({self.path!r}, simulator={self.config['simulator']!r}, "
                f"{len(self.completed_chunks)}/{self.num_chunks} chunks of {self.chunk_size}, "
                f"num_simulations={self.num_simulations}, x_shape={self.x_shape})")


def load_bank(path):
    """A bank from disk: a ``.zarr`` store as a lazy :class:`ZarrBank`, a ``.npz`` file as a
    :class:`~aalr_jax.types.SimulationBank` (``theta (n, d)``, ``x (n, *x_shape)`` float32)."""
    if is_store_path(path):
        return ZarrBank.open(path)
    from aalr_jax.data import load_bank as load_npz

    return load_npz(path)
