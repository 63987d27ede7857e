"""Tests of saving and loading estimators (aalr_jax.io)."""

import dataclasses
import json
import os
import zipfile

import jax
import jax.numpy as jnp
import numpy as np
import pytest

import aalr_jax
from aalr_jax import io
from aalr_jax.nn import NetworkConfig, RatioEnsemble, RatioEstimator, Standardization, init_estimator

CONFIG = NetworkConfig(theta_dim=3, x_shape=(4,), hidden_features=(16, 16), quadratic=False)


@pytest.fixture(scope="module")
def estimator():
    rng = np.random.default_rng(0)
    std = Standardization(
        jnp.asarray(rng.normal(size=3), jnp.float32),
        jnp.asarray(rng.uniform(0.5, 2.0, size=3), jnp.float32),
        jnp.asarray(rng.normal(size=4), jnp.float32),
        jnp.asarray(rng.uniform(0.5, 2.0, size=4), jnp.float32),
    )
    return init_estimator(jax.random.PRNGKey(1), CONFIG, std)


@pytest.fixture
def saved(tmp_path, estimator):
    path = tmp_path / "est.npz"
    io.save_estimator(path, estimator, metadata={"task": "toy", "epochs": 3, "tags": ["a", "b"]})
    return path


def _arrays(path):
    with np.load(path, allow_pickle=False) as f:
        return {k: f[k] for k in f.files}


def _write(path, arrays):
    with open(path, "wb") as f:
        np.savez(f, **arrays)


def _with_header(arrays, **changes):
    header = json.loads(arrays["__aalr_jax__"].tobytes())
    header.update(changes)
    out = dict(arrays)
    out["__aalr_jax__"] = np.frombuffer(json.dumps(header).encode(), np.uint8)
    return out


# ---------------------------------------------------------------- round trip


def test_round_trip_log_ratio(saved, estimator):
    loaded = io.load_estimator(saved)
    assert isinstance(loaded, RatioEstimator)
    assert loaded.config == CONFIG and isinstance(loaded.config.x_shape, tuple)
    assert jax.tree.structure(loaded) == jax.tree.structure(estimator)
    for a, b in zip(loaded.standardization, estimator.standardization):
        np.testing.assert_array_equal(a, b)
    k1, k2 = jax.random.split(jax.random.PRNGKey(2))
    theta = jax.random.normal(k1, (32, 3))
    x = 3.0 * jax.random.normal(k2, (32, 4))
    np.testing.assert_allclose(loaded.log_ratio(theta, x), estimator.log_ratio(theta, x), rtol=1e-6, atol=1e-6)


def test_jit_on_loaded(saved, estimator):
    loaded = io.load_estimator(saved)
    f = jax.jit(lambda est, t, x: est.log_ratio(t, x).sum())
    theta, x = jnp.ones((5, 3)), jnp.ones((5, 4))
    np.testing.assert_allclose(f(loaded, theta, x), f(estimator, theta, x), rtol=1e-6)
    grads = jax.grad(lambda est: est.log_ratio(theta, x).sum())(loaded)
    assert jax.tree.structure(grads) == jax.tree.structure(loaded)


def test_metadata_and_header(saved):
    meta = io.load_metadata(saved)
    assert meta["format"] == "aalr_jax.estimator" and meta["format_version"] == 1
    assert meta["aalr_jax_version"] == aalr_jax.__version__
    assert NetworkConfig(**{k: tuple(v) if isinstance(v, list) else v for k, v in meta["config"].items()}) == CONFIG
    assert meta["metadata"] == {"task": "toy", "epochs": 3, "tags": ["a", "b"]}
    keys = {p["key"] for p in meta["params"]}
    assert "params/head/layers/0/kernel" in keys and "params/head/out/bias" in keys
    kernel = next(p for p in meta["params"] if p["key"] == "params/head/layers/0/kernel")
    assert kernel["shape"] == [3 + 4, 16] and kernel["dtype"] == "float32"


def test_file_is_pickle_free(saved):
    arrays = _arrays(saved)  # allow_pickle=False
    assert all(a.dtype != object for a in arrays.values())
    assert arrays["__aalr_jax__"].dtype == np.uint8
    assert set(arrays) >= {"standardization/theta_loc", "standardization/x_scale"}


def test_default_metadata_is_empty(tmp_path, estimator):
    path = tmp_path / "est.npz"
    io.save_estimator(str(path), estimator)
    assert io.load_metadata(path)["metadata"] == {}


def test_path_kept_as_given_and_atomic_overwrite(tmp_path, estimator):
    path = tmp_path / "model.aalr"
    io.save_estimator(path, estimator, metadata={"run": 1})
    io.save_estimator(path, estimator, metadata={"run": 2})  # replaces the existing file
    assert sorted(os.listdir(tmp_path)) == ["model.aalr"]  # no ".npz" appended, no temp files left
    assert io.load_metadata(path)["metadata"] == {"run": 2}


def test_failed_save_leaves_nothing(tmp_path, estimator):
    bad = RatioEstimator(CONFIG, jax.tree.map(lambda a: a * jnp.nan, estimator.params), estimator.standardization)
    with pytest.raises(ValueError, match="non-finite"):
        io.save_estimator(tmp_path / "x.npz", bad)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("metadata", [{"f": lambda: 0}, {"a": np.float32(1.0)}, {"nan": float("nan")}, [1, 2]])
def test_non_json_metadata_raises_type_error(tmp_path, estimator, metadata):
    with pytest.raises(TypeError, match="metadata"):
        io.save_estimator(tmp_path / "x.npz", estimator, metadata=metadata)
    assert os.listdir(tmp_path) == []


# ---------------------------------------------------------------- errors


def test_missing_file(tmp_path):
    path = tmp_path / "nope.npz"
    with pytest.raises(FileNotFoundError, match="nope.npz"):
        io.load_estimator(path)
    with pytest.raises(FileNotFoundError):
        io.load_metadata(path)


def test_corrupt_bytes(tmp_path):
    path = tmp_path / "junk.npz"
    path.write_bytes(os.urandom(1000))
    with pytest.raises(ValueError, match="junk.npz.*not a readable .npz"):
        io.load_estimator(path)
    path.write_bytes(b"")
    with pytest.raises(ValueError, match="not a readable .npz"):
        io.load_estimator(path)


def test_truncated_file(saved):
    data = saved.read_bytes()
    saved.write_bytes(data[: len(data) // 2])
    with pytest.raises(ValueError, match="est.npz"):
        io.load_estimator(saved)


def test_corrupted_member(saved):
    data = bytearray(saved.read_bytes())
    with zipfile.ZipFile(saved) as z:
        info = z.getinfo("params/head/layers/1/kernel.npy")
    start = info.header_offset + 30 + len(info.filename) + 200  # inside the member's data
    data[start : start + 8] = b"\xff" * 8
    saved.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="est.npz"):
        io.load_estimator(saved)


def test_single_npy_array(tmp_path):
    path = tmp_path / "a.npy"
    np.save(path, np.zeros(3))
    with pytest.raises(ValueError, match="not an .npz archive"):
        io.load_estimator(path)


def test_unrelated_npz(tmp_path):
    path = tmp_path / "other.npz"
    np.savez(path, a=np.zeros(3), b=np.ones((2, 2)))
    with pytest.raises(ValueError, match="other.npz.*not an aalr_jax estimator file"):
        io.load_estimator(path)
    with pytest.raises(ValueError, match="not an aalr_jax estimator file"):
        io.load_metadata(path)


def test_unreadable_json(saved):
    arrays = _arrays(saved)
    arrays["__aalr_jax__"] = np.frombuffer(b"{not json", np.uint8)
    _write(saved, arrays)
    with pytest.raises(ValueError, match="unreadable JSON"):
        io.load_estimator(saved)


@pytest.mark.parametrize(
    "changes, match",
    [
        ({"format_version": 3}, "newer than the supported version 2"),
        ({"format_version": "1"}, "invalid format_version"),
        ({"format": "something.else"}, "unknown format"),
        ({"config": {"theta_dim": 3, "x_shape": [4], "activation": "nope"}}, "invalid network config"),
        ({"config": {"theta_dim": 3, "x_shape": [4], "bogus": 1}}, "invalid network config"),
        ({"config": {"theta_dim": 3}}, "invalid network config"),
        ({"config": {"theta_dim": 3, "x_shape": ["a"]}}, "invalid network config"),
    ],
)
def test_tampered_header(saved, changes, match):
    _write(saved, _with_header(_arrays(saved), **changes))
    with pytest.raises(ValueError, match=match):
        io.load_estimator(saved)


def test_config_not_matching_params(saved):
    _write(saved, _with_header(_arrays(saved), config={"theta_dim": 3, "x_shape": [4], "hidden_features": [8]}))
    with pytest.raises(ValueError, match="missing arrays|unexpected arrays|expected shape"):
        io.load_estimator(saved)


def test_wrong_param_shape(saved):
    arrays = _arrays(saved)
    arrays["params/head/layers/1/kernel"] = np.zeros((16, 15), np.float32)
    _write(saved, arrays)
    with pytest.raises(ValueError, match=r"params/head/layers/1/kernel.*shape \(16, 15\).*expected shape \(16, 16\)"):
        io.load_estimator(saved)


def test_wrong_param_dtype(saved):
    arrays = _arrays(saved)
    arrays["params/head/out/bias"] = arrays["params/head/out/bias"].astype(np.float64)
    _write(saved, arrays)
    with pytest.raises(ValueError, match="params/head/out/bias.*float64"):
        io.load_estimator(saved)


def test_missing_and_extra_params(saved):
    arrays = _arrays(saved)
    del arrays["params/head/out/kernel"]
    _write(saved, arrays)
    with pytest.raises(ValueError, match="missing arrays.*params/head/out/kernel"):
        io.load_estimator(saved)
    arrays = _arrays(saved) | {"params/head/out/kernel": np.zeros((16, 1), np.float32), "params/extra": np.zeros(2)}
    _write(saved, arrays)
    with pytest.raises(ValueError, match="unexpected arrays.*params/extra"):
        io.load_estimator(saved)


def test_non_finite_params(saved):
    arrays = _arrays(saved)
    arrays["params/head/layers/0/bias"] = np.full(16, np.nan, np.float32)
    _write(saved, arrays)
    with pytest.raises(ValueError, match="non-finite.*params/head/layers/0/bias"):
        io.load_estimator(saved)


def test_bad_standardization(saved):
    arrays = _arrays(saved)
    arrays["standardization/x_scale"] = np.zeros(5, np.float32)
    _write(saved, arrays)
    with pytest.raises(ValueError, match="x_scale"):
        io.load_estimator(saved)


# ---------------------------------------------------------------- ensembles


def test_ensemble_round_trip_and_checks(tmp_path, estimator):
    other = init_estimator(jax.random.PRNGKey(2), CONFIG, estimator.standardization)
    ensemble = RatioEnsemble.stack([estimator, other])
    path = tmp_path / "ensemble.npz"
    io.save_estimator(path, ensemble, metadata={"task": "toy"})
    meta = io.load_metadata(path)
    assert meta["format_version"] == 2 and meta["num_members"] == 2 and meta["metadata"] == {"task": "toy"}
    loaded = io.load_estimator(path)
    assert isinstance(loaded, RatioEnsemble) and loaded.num_members == 2
    theta, x = jnp.ones((5, 3)), jnp.linspace(-1, 1, 20).reshape(5, 4)
    expected = (estimator.log_ratio(theta, x) + other.log_ratio(theta, x)) / 2  # the mean member logit
    np.testing.assert_allclose(loaded.log_ratio(theta, x), expected, rtol=1e-6)
    np.testing.assert_array_equal(loaded.member(1).log_ratio(theta, x), other.log_ratio(theta, x))
    arrays = _arrays(path)
    _write(path, _with_header(arrays, num_members=3))
    with pytest.raises(ValueError, match=r"ensemble member 2\): missing arrays"):
        io.load_estimator(path)
    _write(path, _with_header(arrays, num_members=1))
    with pytest.raises(ValueError, match=r"unexpected arrays \['members/1/"):
        io.load_estimator(path)
    bad = dict(arrays)
    bad["members/1/params/head/out/bias"] = np.full_like(bad["members/1/params/head/out/bias"], np.nan)
    _write(path, bad)
    with pytest.raises(ValueError, match=r"ensemble member 1\): non-finite"):
        io.load_estimator(path)


def test_ensemble_members_must_share_a_config(estimator):
    small = init_estimator(jax.random.PRNGKey(3), CONFIG._replace(hidden_features=(8,)), estimator.standardization)
    with pytest.raises(ValueError, match="share one network config"):
        RatioEnsemble.stack([estimator, small])
    with pytest.raises(TypeError, match="non-empty sequence of RatioEstimator"):
        RatioEnsemble.stack([])


def test_files_without_theta_bound_load_unbounded(saved, estimator):
    """Estimator files written before the bounded θ input have no ``theta_bound``: they were
    trained on z(θ) as is, so they load with ``theta_bound=None`` and keep their log-ratios."""
    arrays = _arrays(saved)
    header = json.loads(arrays["__aalr_jax__"].tobytes())
    assert header["config"]["theta_bound"] == 10.0
    del header["config"]["theta_bound"]
    _write(saved, _with_header(arrays, config=header["config"]))
    loaded = io.load_estimator(saved)
    assert loaded.config.theta_bound is None
    theta, x = jnp.array([[0.5, -1.0, 40.0]]), jnp.ones((1, 4))
    unbounded = dataclasses.replace(estimator, config=estimator.config._replace(theta_bound=None))
    np.testing.assert_allclose(loaded.log_ratio(theta, x), unbounded.log_ratio(theta, x), rtol=1e-6)
    assert not np.allclose(loaded.log_ratio(theta, x), estimator.log_ratio(theta, x))  # z = 40 is bounded


def test_quadratic_round_trip_and_older_files_load_without_it(saved, estimator, tmp_path):
    """A network with the quadratic terms saves and loads with their A; files written before they
    existed have no ``quadratic`` key and load as the plain network they are."""
    config = CONFIG._replace(quadratic=True)
    quad = init_estimator(jax.random.PRNGKey(2), config, estimator.standardization)
    params = jax.tree_util.tree_map(lambda a: a, quad.params)
    params["quad"]["kernel"].value = jnp.asarray(np.random.default_rng(3).normal(size=(7, 3)), jnp.float32)
    quad = RatioEstimator(config, params, quad.standardization)
    path = tmp_path / "quad.npz"
    io.save_estimator(path, quad)
    loaded = io.load_estimator(path)
    assert loaded.config.quadratic and io.load_metadata(path)["config"]["quadratic"] is True
    theta, x = jnp.array([[0.5, -1.0, 2.0]]), jnp.ones((1, 4))
    np.testing.assert_array_equal(loaded.log_ratio(theta, x), quad.log_ratio(theta, x))
    arrays = _arrays(saved)
    header = json.loads(arrays["__aalr_jax__"].tobytes())
    assert header["config"]["quadratic"] is False
    del header["config"]["quadratic"]
    _write(saved, _with_header(arrays, config=header["config"]))
    old = io.load_estimator(saved)
    assert old.config.quadratic is False
    np.testing.assert_array_equal(old.log_ratio(theta, x), estimator.log_ratio(theta, x))


# ---------------------------------------------------------------- training ranges


def _with_ranges(estimator, shift=0.0):
    x_min = jnp.asarray([-1.0, -2.0, 0.5, -4.0], jnp.float32) + shift
    return dataclasses.replace(estimator, standardization=estimator.standardization._replace(
        x_min=x_min, x_max=x_min + jnp.asarray([2.0, 3.0, 1.0, 9.0], jnp.float32)))


def test_training_ranges_round_trip(tmp_path, estimator):
    """x_min and x_max survive saving and loading, alone and stacked in an ensemble, and the
    loaded estimator flags the same observations as outside its training data."""
    from aalr_jax.ood import outside_training_data

    ranged = _with_ranges(estimator)
    io.save_estimator(tmp_path / "r.npz", ranged)
    loaded = io.load_estimator(tmp_path / "r.npz")
    np.testing.assert_array_equal(loaded.standardization.x_min, ranged.standardization.x_min)
    np.testing.assert_array_equal(loaded.standardization.x_max, ranged.standardization.x_max)
    x = jnp.asarray([[0.0, 0.0, 1.0, 0.0], [0.0, 0.0, 1.0, 6.5], [0.0, 0.0, 1.0, 5.8]])
    np.testing.assert_array_equal(outside_training_data(loaded, x), [False, True, False])
    ensemble = RatioEnsemble.stack([ranged, _with_ranges(estimator, shift=1.0)])
    io.save_estimator(tmp_path / "e.npz", ensemble)
    members = io.load_estimator(tmp_path / "e.npz").members.standardization
    np.testing.assert_array_equal(members.x_min, ensemble.members.standardization.x_min)
    assert members.x_max.shape == (2, 4)


def test_files_without_training_ranges_load_with_none(tmp_path, saved, estimator):
    assert estimator.standardization.x_min is None and "standardization/x_min" not in _arrays(saved)
    loaded = io.load_estimator(saved)
    assert loaded.standardization.x_min is None and loaded.standardization.x_max is None
    path = tmp_path / "r.npz"
    io.save_estimator(path, _with_ranges(estimator))
    arrays = _arrays(path)
    del arrays["standardization/x_max"]
    _write(path, arrays)
    with pytest.raises(ValueError, match=r"missing arrays \['standardization/x_max'\]"):
        io.load_estimator(path)
    arrays["standardization/x_max"] = np.zeros(5, np.float32)
    _write(path, arrays)
    with pytest.raises(ValueError, match="standardization 'x_max' has shape"):
        io.load_estimator(path)
