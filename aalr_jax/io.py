"""Saving and loading trained estimators as a single, pickle-free ``.npz`` file.

File format (format name ``"aalr_jax.estimator"``, version 1): a NumPy ``.npz`` archive (zip of
``.npy`` members, uncompressed) holding only numeric arrays, so it loads with
``np.load(path, allow_pickle=False)`` and never executes code. Its entries are

* ``params/<tree path>``: one array per network parameter, keyed by its path in the
  ``nnx.State``, e.g. ``params/head/layers/0/kernel`` or ``params/head/out/bias``;
* ``standardization/<field>``: ``theta_loc``, ``theta_scale``, ``x_loc``, ``x_scale`` and, when the
  estimator has them, ``x_min`` and ``x_max`` (the training range of x; files without them load
  with ``None`` there);
* ``__aalr_jax__``: a UTF-8 JSON document stored as a 1-D ``uint8`` array::

      {
        "format": "aalr_jax.estimator",
        "format_version": 1,
        "aalr_jax_version": "0.1.0",
        "config": {"theta_dim": 3, "x_shape": [4], "hidden_features": [16, 16],
                   "activation": "selu", "embedding": "flatten"},
        "params": [{"key": "params/head/layers/0/bias", "shape": [16], "dtype": "float32"}, ...],
        "metadata": {...}          # the user's JSON-serialisable dict ({} when none)
      }

A :class:`aalr_jax.nn.RatioEnsemble` of M members is written as version 2: each member's arrays
under ``members/<m>/`` (``members/0/params/head/out/bias``, ``members/0/standardization/x_loc``,
...) and ``"num_members": M`` in the header; version-1 readers refuse it with an upgrade message.

Arrays are stored as host NumPy arrays, so an estimator trained on a GPU loads on a CPU. Loading
rebuilds the network from ``config`` and checks every array against it (names, shapes, dtypes,
finiteness); any problem is a :class:`ValueError` naming the file and what is wrong. Files are
written atomically (:func:`aalr_jax.files.atomic_write`).
"""

from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from aalr_jax.files import atomic_write
from aalr_jax.nn import NetworkConfig, RatioEnsemble, RatioEstimator, Standardization, parameter_template

__all__ = ["FORMAT_NAME", "FORMAT_VERSION", "load_estimator", "load_metadata", "save_estimator"]

FORMAT_NAME = "aalr_jax.estimator"
FORMAT_VERSION = 2  # 1: one estimator; 2: adds ensembles
HEADER_KEY = "__aalr_jax__"
_STD_KEYS = {f: f"standardization/{f}" for f in Standardization._fields}
_RANGE_FIELDS = ("x_min", "x_max")  # optional: a file without them loads with None there
_REQUIRED_STD_KEYS = {f: k for f, k in _STD_KEYS.items() if f not in _RANGE_FIELDS}


# ---------------------------------------------------------------- helpers


def _package_version() -> str:
    try:  # lazy: aalr_jax/__init__ imports this module
        from aalr_jax import __version__

        return __version__
    except ImportError:
        from importlib.metadata import PackageNotFoundError, version

        try:
            return version("aalr-jax")
        except PackageNotFoundError:
            return "0.0.0+unknown"


def _param_key(path) -> str:
    """``(DictKey('head'), ..., GetAttrKey('value'))`` -> ``"params/head/.../kernel"``."""
    key = jax.tree_util.keystr(path, simple=True, separator="/")
    return "params/" + key.removesuffix("/value")


def _expected_shapes(config: NetworkConfig) -> dict[str, tuple[tuple, np.dtype]]:
    leaves = jax.tree_util.tree_leaves_with_path(parameter_template(config))
    return {_param_key(p): (tuple(l.shape), np.dtype(l.dtype)) for p, l in leaves}


def _config_from_json(cfg: Any) -> NetworkConfig:
    """A validated :class:`NetworkConfig` from its JSON dict (lists back to tuples)."""
    if not isinstance(cfg, dict):
        raise ValueError(f"config must be an object, got {type(cfg).__name__}")
    cfg = dict(cfg)
    cfg.setdefault("theta_bound", None)  # a file without the key holds a network trained on z(θ) unbounded
    cfg.setdefault("quadratic", False)  # and one without this key a network without the quadratic terms
    for name in ("x_shape", "hidden_features"):
        if isinstance(cfg.get(name), list):
            cfg[name] = tuple(cfg[name])
    try:
        return NetworkConfig(**cfg).validate()
    except TypeError as e:
        raise ValueError(str(e)) from None


def _check_arrays(arrays: dict[str, np.ndarray], config: NetworkConfig, source: str) -> None:
    """Raise ``ValueError`` unless ``arrays`` are exactly the params and standardization of ``config``."""
    expected = _expected_shapes(config)
    present = {k for k in arrays if k != HEADER_KEY}
    ranges = [_STD_KEYS[f] for f in _RANGE_FIELDS]
    missing = sorted(set(expected) - present) + sorted(set(_REQUIRED_STD_KEYS.values()) - present)
    if len(set(ranges) & present) == 1:
        missing += sorted(set(ranges) - present)
    extra = sorted(present - set(expected) - set(_STD_KEYS.values()))
    if missing:
        raise ValueError(f"{source}: missing arrays {missing}")
    if extra:
        raise ValueError(f"{source}: unexpected arrays {extra} for network config {config}")
    for key, (shape, dtype) in expected.items():
        a = arrays[key]
        if a.shape != shape or a.dtype != dtype:
            raise ValueError(
                f"{source}: parameter {key!r} has shape {a.shape} and dtype {a.dtype}, "
                f"expected shape {shape} and dtype {dtype} for network config {config}"
            )
    std_shapes = {f: (config.theta_dim,) if f.startswith("theta") else tuple(config.x_shape) for f in _STD_KEYS}
    for field, key in _STD_KEYS.items():
        if key not in arrays:
            continue
        a = arrays[key]
        want = std_shapes[field]
        try:
            ok = np.issubdtype(a.dtype, np.floating) and np.broadcast_shapes(a.shape, want) == want
        except ValueError:
            ok = False
        if not ok:
            raise ValueError(
                f"{source}: standardization {field!r} has shape {a.shape} and dtype {a.dtype}, "
                f"expected a floating array of shape {want}"
            )
    bad = [k for k in sorted(present) if not np.all(np.isfinite(arrays[k]))]
    if bad:
        raise ValueError(f"{source}: non-finite values (NaN or inf) in {bad}")
    for field in ("theta_scale", "x_scale"):
        if not np.all(arrays[_STD_KEYS[field]] > 0):
            raise ValueError(f"{source}: standardization {field!r} must be positive")


# ---------------------------------------------------------------- saving


def _estimator_arrays(estimator: RatioEstimator) -> dict[str, np.ndarray]:
    """Host NumPy arrays of one estimator, keyed as in the file (``params/...``, ``standardization/...``)."""
    host = jax.device_get  # device arrays -> host NumPy, whatever device they live on
    arrays = {
        _param_key(p): np.asarray(host(leaf))
        for p, leaf in jax.tree_util.tree_leaves_with_path(estimator.params)
    }
    return arrays | {_STD_KEYS[f]: np.asarray(host(v)) for f, v in estimator.standardization._asdict().items()
                     if v is not None}


def save_estimator(path: str | os.PathLike, estimator, *, metadata: dict | None = None) -> None:
    """Write ``estimator`` (a RatioEstimator or RatioEnsemble; optional JSON-serialisable ``metadata``) to one ``.npz`` file.

    ``path`` is used as given (no ``.npz`` is appended). The write is atomic: an existing file is
    replaced only once the new one is complete. See the module docstring for the format.

    Raises:
        TypeError: ``estimator`` is not a :class:`RatioEstimator`, or ``metadata`` is not a
            JSON-serialisable dict.
        ValueError: the parameters do not match ``estimator.config`` or are not finite.
    """
    if not isinstance(estimator, (RatioEstimator, RatioEnsemble)):
        raise TypeError(f"estimator must be a RatioEstimator or RatioEnsemble, got {type(estimator).__name__}")
    metadata = {} if metadata is None else metadata
    if not isinstance(metadata, dict):
        raise TypeError(f"metadata must be a dict or None, got {type(metadata).__name__}")
    try:
        json.dumps(metadata, allow_nan=False)
    except (TypeError, ValueError) as e:
        raise TypeError(f"metadata must be JSON-serialisable: {e}") from e

    config = estimator.config
    if isinstance(estimator, RatioEnsemble):
        members = [_estimator_arrays(estimator.member(m)) for m in range(estimator.num_members)]
        arrays = {f"members/{m}/{k}": a for m, member in enumerate(members) for k, a in member.items()}
        extra = {"format_version": 2, "num_members": len(members)}
    else:
        members = [_estimator_arrays(estimator)]
        arrays, extra = members[0], {"format_version": 1}
    for m, member in enumerate(members):
        _check_arrays(member, config, "estimator" if len(members) == 1 else f"ensemble member {m}")

    header = {
        "format": FORMAT_NAME,
        **extra,
        "aalr_jax_version": _package_version(),
        "config": config._asdict(),
        "params": [
            {"key": k, "shape": list(a.shape), "dtype": a.dtype.name}
            for k, a in members[0].items()
            if k.startswith("params/")
        ],
        "metadata": metadata,
    }
    arrays[HEADER_KEY] = np.frombuffer(json.dumps(header, allow_nan=False).encode("utf-8"), np.uint8)

    atomic_write(path, lambda f: np.savez(f, **arrays))  # a file object: NumPy appends no ".npz"


# ---------------------------------------------------------------- loading


class _NotOurs(Exception):
    """Internal signal: a valid .npz without the aalr_jax header entry."""


def _read_npz(path: str, keys: set[str] | None = None) -> dict[str, np.ndarray]:
    """The arrays of an ``.npz`` file (only ``keys`` if given), pickle-free, fully read."""
    with open(path, "rb") as fh:  # FileNotFoundError etc. propagate unchanged
        try:
            npz = np.load(fh, allow_pickle=False)
            if not isinstance(npz, np.lib.npyio.NpzFile):
                raise ValueError("it holds a single array, not an .npz archive")
            with npz:
                if HEADER_KEY not in npz.files:
                    raise _NotOurs()
                return {k: npz[k] for k in npz.files if keys is None or k in keys}
        except _NotOurs:
            raise ValueError(f"{path}: not an aalr_jax estimator file (no {HEADER_KEY!r} entry)") from None
        except Exception as e:  # BadZipFile, EOFError, zlib.error, ... on foreign or corrupt bytes
            raise ValueError(f"{path}: not a readable .npz file, or corrupted ({type(e).__name__}: {e})") from e


def _parse_header(raw: np.ndarray, path: str) -> dict:
    if raw.dtype != np.uint8 or raw.ndim != 1:
        raise ValueError(f"{path}: {HEADER_KEY!r} entry must be a 1-D uint8 array, got {raw.dtype} {raw.shape}")
    try:
        header = json.loads(raw.tobytes().decode("utf-8"))
    except (UnicodeDecodeError, json.JSONDecodeError) as e:
        raise ValueError(f"{path}: unreadable JSON header ({e})") from e
    if not isinstance(header, dict):
        raise ValueError(f"{path}: JSON header must be an object, got {type(header).__name__}")
    if header.get("format") != FORMAT_NAME:
        raise ValueError(f"{path}: unknown format {header.get('format')!r}, expected {FORMAT_NAME!r}")
    version = header.get("format_version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise ValueError(f"{path}: invalid format_version {version!r}")
    if version > FORMAT_VERSION:
        raise ValueError(
            f"{path}: format_version {version} is newer than the supported version {FORMAT_VERSION} "
            f"(written by aalr_jax {header.get('aalr_jax_version')!r}); upgrade aalr_jax to load it"
        )
    return header


def load_metadata(path: str | os.PathLike) -> dict:
    """The JSON header of an estimator file (format, versions, ``config``, ``params``, ``metadata``).

    Only the header entry is read and checked (format name and version); no network is built.
    """
    path = os.fspath(path)
    return _parse_header(_read_npz(path, {HEADER_KEY})[HEADER_KEY], path)


def load_estimator(path: str | os.PathLike) -> RatioEstimator | RatioEnsemble:
    """Load an estimator (or ensemble) written by :func:`save_estimator`, on the default JAX device.

    Raises:
        FileNotFoundError: ``path`` does not exist.
        ValueError: the file is not a valid estimator file; the message says why.
    """
    path = os.fspath(path)
    arrays = _read_npz(path)
    header = _parse_header(arrays[HEADER_KEY], path)
    try:
        config = _config_from_json(header.get("config"))
    except ValueError as e:
        raise ValueError(f"{path}: invalid network config {header.get('config')!r}: {e}") from e
    num_members = header.get("num_members")
    if num_members is None:
        return _build(arrays, config, path)
    if isinstance(num_members, bool) or not isinstance(num_members, int) or num_members < 1:
        raise ValueError(f"{path}: num_members must be a positive integer, got {num_members!r}")
    prefixes = [f"members/{m}/" for m in range(num_members)]
    stray = sorted(k for k in arrays if k != HEADER_KEY and not k.startswith(tuple(prefixes)))
    if stray:
        raise ValueError(f"{path}: unexpected arrays {stray} for an ensemble of {num_members} members")
    return RatioEnsemble.stack([
        _build({k[len(prefix):]: a for k, a in arrays.items() if k.startswith(prefix)}, config,
               f"{path} (ensemble member {m})")
        for m, prefix in enumerate(prefixes)
    ])


def _build(arrays: dict[str, np.ndarray], config: NetworkConfig, source: str) -> RatioEstimator:
    """A checked :class:`RatioEstimator` from one estimator's arrays."""
    _check_arrays(arrays, config, source)
    params = jax.tree_util.tree_map_with_path(
        lambda p, _: jnp.asarray(arrays[_param_key(p)]), parameter_template(config)
    )
    standardization = Standardization(*(jnp.asarray(arrays[k]) if k in arrays else None for k in _STD_KEYS.values()))
    return RatioEstimator(config, params, standardization)
