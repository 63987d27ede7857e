"""Tests of the command line (aalr_jax.cli): in-process through ``main(argv)``, plus one subprocess.

Budgets are tiny; every in-process sampling call uses the same sampler settings and network, so
the sampler compiles once for the whole module.
"""

import json
import math
import os
import subprocess
import sys

import jax.numpy as jnp
import numpy as np
import pytest

from aalr_jax import cli, io

BUDGET = ["--num-simulations", "2000"]
TRAINING = ["--max-epochs", "3"]
SAMPLER = ["--num-samples", "200", "--num-chains", "4", "--num-warmup", "50", "--quiet"]
OUTPUTS = ("samples.npz", "estimator.npz", "corner.png", "summary.json")


def _run_ok(argv, capsys=None):
    code = cli.main([str(a) for a in argv])
    if capsys is not None:
        out, err = capsys.readouterr()
        assert code == 0, err
        return out, err
    assert code == 0
    return None


def _error(argv, capsys):
    """Exit status and stderr of a command expected to fail."""
    code = cli.main([str(a) for a in argv])
    _, err = capsys.readouterr()
    assert "Traceback" not in err
    return code, err


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("run")
    _run_ok(["run", *BUDGET, *TRAINING, *SAMPLER, "--output", out])
    return out


@pytest.fixture(scope="module")
def trained(tmp_path_factory):
    """``simulate`` then ``train`` through files, with the same seed and settings as ``run_dir``."""
    folder = tmp_path_factory.mktemp("pipeline")
    bank, estimator = folder / "bank.npz", folder / "estimator.npz"
    _run_ok(["simulate", "--task", "two_moons", *BUDGET, "--output", bank, "--quiet"])
    _run_ok(["train", "--bank", bank, "--output", estimator, "--task", "two_moons", *TRAINING, "--quiet"])
    return estimator


def _summary(folder):
    return json.loads((folder / "summary.json").read_text())


def _check_summary(summary, *, budget=2000, method="rwmh"):
    assert summary["task"] == "two_moons" and summary["budget"] == budget and summary["method"] == method
    assert summary["seed"] == 0
    for phase in ("sample", "write", "total"):
        assert summary["timings"][phase] > 0
    assert summary["training"]["epochs"] == 3 and 0 <= summary["training"]["best_epoch"] < 3
    assert math.isfinite(summary["training"]["best_validation_loss"])
    assert list(summary["posterior"]) == ["parameter_1", "parameter_2"]
    for stats in summary["posterior"].values():
        assert -1.0 <= stats["mean"] <= 1.0 and 0.0 < stats["std"] < 2.0
    diagnostics = summary["diagnostics"]
    assert 0.0 < diagnostics["mean_acceptance"] <= 1.0
    assert diagnostics["num_modes"] >= 1 and sum(diagnostics["chains_per_mode"]) <= 100
    assert all(r > 0.5 for r in diagnostics["within_mode_rhat"]) and min(diagnostics["ess_bulk"]) > 0
    assert isinstance(diagnostics["warnings"], list) and isinstance(diagnostics["notes"], list)
    assert summary["versions"]["jax"] and summary["versions"]["aalr_jax"]
    assert summary["device"] in ("cpu", "gpu", "tpu", "cuda", "rocm")


def _check_samples(folder, x_obs):
    with np.load(folder / "samples.npz") as f:
        assert {"samples", "chains", "acceptance_rate", "rhat", "ess", "x_obs"} <= set(f.files)
        assert f["samples"].shape == (200, 2) and f["chains"].shape == (4, 50, 2)
        assert f["acceptance_rate"].shape == (4,) and f["rhat"].shape == f["ess"].shape == (2,)
        assert np.all(np.abs(f["samples"]) <= 1.0)
        np.testing.assert_allclose(f["x_obs"], x_obs, rtol=1e-6)
        return f["samples"]


def test_run_writes_every_output(run_dir):
    for name in OUTPUTS:
        assert (run_dir / name).stat().st_size > 0, name
    summary = _summary(run_dir)
    _check_summary(summary)
    assert summary["timings"]["simulate"] > 0 and summary["timings"]["train"] > 0
    assert summary["reference_posterior"] is True and summary["observation"] == "default"
    _check_samples(run_dir, [-0.6396706, 0.16234657])
    assert (run_dir / "corner.png").read_bytes()[:4] == b"\x89PNG"
    assert io.load_metadata(run_dir / "estimator.npz")["metadata"] == {
        "task": "two_moons", "num_simulations": 2000, "seed": 0, "training": summary["training"],
    }


def test_simulate_train_sample_through_files(trained, run_dir, tmp_path, capsys):
    bank = trained.parent / "bank.npz"
    with np.load(bank) as f:
        assert f["theta"].shape == (2000, 2) and f["x"].shape == (2000, 2)
    assert io.load_metadata(trained)["metadata"]["task"] == "two_moons"
    # fit's default network has no quadratic terms, and the file says so
    assert io.load_metadata(trained)["metadata"]["training"]["quadratic"] is False
    assert io.load_metadata(trained)["metadata"]["training"]["ratio_weighting"] == 0.5  # fit's default α
    assert not io.load_estimator(trained).config.quadratic
    out, _ = _run_ok(["sample", "--estimator", trained, *SAMPLER, "--output", tmp_path], capsys)  # task from metadata
    assert str(tmp_path) in out
    for name in ("samples.npz", "corner.png", "summary.json"):
        assert (tmp_path / name).exists(), name
    summary = _summary(tmp_path)
    _check_summary(summary)
    samples = _check_samples(tmp_path, [-0.6396706, 0.16234657])
    # Every phase has its own key derived from --seed: the steps reproduce `run` exactly.
    np.testing.assert_allclose(samples, _check_samples(run_dir, [-0.6396706, 0.16234657]), atol=1e-5)


@pytest.mark.parametrize("fmt", ["csv", "npy", "npz"])
def test_observation_from_file(fmt, trained, tmp_path):
    x_obs = np.array([0.1, -0.3], np.float32)
    path = tmp_path / f"obs.{fmt}"
    if fmt == "csv":
        path.write_text("0.1,-0.3\n")
    elif fmt == "npy":
        np.save(path, x_obs[None])  # a leading axis of 1 is accepted
    else:
        np.savez(path, other=np.zeros(5), x_obs=x_obs)
    out = tmp_path / "out"
    _run_ok(["sample", "--estimator", trained, "--task", "two_moons", "--observation", path, *SAMPLER, "--output", out])
    summary = _summary(out)
    assert summary["observation"] == str(path)
    assert all(math.isfinite(s["mean"]) for s in summary["posterior"].values())
    _check_samples(out, x_obs)


def test_iid_observations(trained, tmp_path, capsys):
    x_obs = np.array([[0.1, -0.3], [0.12, -0.28], [0.08, -0.31]], np.float32)
    path = tmp_path / "obs.npy"
    np.save(path, x_obs)
    _run_ok(["sample", "--estimator", trained, "--observation", path, "--iid", *SAMPLER, "--output", tmp_path / "out"])
    summary = _summary(tmp_path / "out")
    assert summary["iid"] is True and summary["reference_posterior"] is False  # no reference for n > 1
    _check_samples(tmp_path / "out", x_obs)
    np.save(path, x_obs[None])  # (1, n, 2): one batch axis too many
    code, err = _error(["sample", "--estimator", trained, "--observation", path, "--iid", "--output", tmp_path], capsys)
    assert code == 2 and "(n, 2) with --iid" in err and "(1, 3, 2)" in err


def test_bad_observation_shape(tmp_path, capsys):
    path = tmp_path / "obs.csv"
    path.write_text("0.1,0.2,0.3\n")
    code, err = _error(["run", "--observation", path, "--output", tmp_path / "out", "--quiet"], capsys)
    assert code == 2
    assert err.startswith("aalr-jax: error: ") and str(path) in err and "(3,)" in err and "(2,)" in err
    assert not (tmp_path / "out").exists()  # rejected before any work


def test_user_errors(trained, tmp_path, capsys):
    missing = tmp_path / "missing.npz"
    cases = [
        (["sample", "--estimator", missing, "--output", tmp_path], "estimator file not found"),
        (["train", "--bank", missing, "--output", tmp_path / "e.npz"], "bank file not found"),
        (["run", "--observation", tmp_path / "x.npy", "--output", tmp_path], "observation file not found"),
        (["sample", "--estimator", trained, "--task", "slcp", "--output", tmp_path], "task slcp"),
        (["train", "--bank", trained.parent / "bank.npz", "--task", "slcp", "--output", tmp_path / "e"], "task slcp"),
        (["train", "--bank", trained.parent / "bank.npz", "--batch-size", "8", "--num-negatives", "8", "--quiet",
          "--output", tmp_path / "e"], "num_negatives must be smaller than batch_size (8)"),
    ]
    bad_text = tmp_path / "obs.txt"
    bad_text.write_text("1,2\n")
    cases.append((["run", "--observation", bad_text, "--output", tmp_path], "unsupported extension"))
    for argv, message in cases:
        code, err = _error(argv, capsys)
        assert code == 2 and err.startswith("aalr-jax: error: ") and message in err, (argv, err)
    code, err = _error(["run", "--task", "nope"], capsys)  # argparse rejects it with its usage line
    assert code == 2 and "invalid choice: 'nope'" in err
    code, err = _error(["sample", "--output", tmp_path], capsys)
    assert code == 2 and "--estimator" in err


def test_no_arguments_means_run_with_defaults(monkeypatch):
    seen = {}
    monkeypatch.setattr(cli, "_cmd_run", lambda args: seen.update(vars(args)) or 0)
    assert cli.main([]) == 0
    assert seen["task"] == "two_moons" and seen["num_simulations"] == 20_000 and seen["output"] == "aalr_output"
    assert (seen["method"], seen["num_samples"], seen["num_chains"], seen["num_warmup"]) == ("auto", 10_000, 100, 500)
    assert seen["seed"] == 0 and seen["hidden"] == (128, 128, 128) and not seen["quiet"] and not seen["iid"]
    assert cli.main(["--task", "slcp", "--hidden", "8,4"]) == 0
    assert seen["task"] == "slcp" and seen["hidden"] == (8, 4)


@pytest.mark.parametrize(
    "command, options",
    [
        ([], ["run", "simulate", "train", "sample"]),
        (["run"], ["--task", "--num-simulations", "--method", "--num-samples", "--num-chains", "--num-warmup", "--thin",
                   "--observation", "--iid", "--output", "--seed", "--max-epochs", "--batch-size", "--quiet"]),
        (["simulate"], ["--task", "--num-simulations", "--output", "--seed"]),
        (["train"], ["--bank", "--output", "--task", "--max-epochs", "--batch-size", "--seed", "--hidden"]),
        (["sample"], ["--estimator", "--task", "--observation", "--output", "--method", "--num-samples", "--iid"]),
    ],
)
def test_help(command, options, capsys):
    assert cli.main([*command, "--help"]) == 0
    out = capsys.readouterr().out
    for option in options:
        assert option in out, option


def test_console_entry_point(tmp_path):
    """``python -m aalr_jax run`` in a fresh interpreter (the ``aalr-jax`` script calls the same main)."""
    out = tmp_path / "out"
    argv = ["run", "--num-simulations", "500", "--max-epochs", "1", "--batch-size", "64", "--hidden", "16",
            "--num-samples", "20", "--num-chains", "2", "--num-warmup", "10", "--output", str(out)]
    env = {**os.environ, "JAX_PLATFORMS": os.environ.get("JAX_PLATFORMS", "cpu")}
    command = [sys.executable, "-m", "aalr_jax", *argv]
    proc = subprocess.run(command, capture_output=True, text=True, timeout=300, env=env)
    assert proc.returncode == 0, proc.stderr
    assert "outputs in" in proc.stdout and str(out) in proc.stdout
    assert "simulating 500 two_moons simulations" in proc.stderr  # progress lines without --quiet
    for name in OUTPUTS:
        assert (out / name).exists(), name


def test_one_draw_per_chain_skips_the_health_report(trained, tmp_path, capsys):
    argv = ["sample", "--estimator", trained, "--num-samples", "8", "--num-chains", "8", "--num-warmup", "20",
            "--output", tmp_path]
    _, err = _run_ok(argv, capsys)
    assert "1 draw(s) per chain: no MCMC health report" in err
    summary = _summary(tmp_path)
    assert summary["diagnostics"] is None and summary["sampler"]["num_chains"] == 8
    with np.load(tmp_path / "samples.npz") as f:
        assert f["samples"].shape == (8, 2) and np.all(np.isnan(f["ess"]))


def test_an_iid_default_observation_without_iid_says_how(tmp_path, capsys):
    """weinberg's default observation is a set of 100 i.i.d. draws: without --iid the CLI must not
    treat it as 100 separate observations, and the error says what to pass."""
    code, err = _error(["run", "--task", "weinberg", "--output", tmp_path / "out", "--quiet"], capsys)
    assert code == 2 and "(100, 1)" in err and "pass --iid" in err
    assert not (tmp_path / "out").exists()


def test_train_an_ensemble_then_sample_with_it(trained, tmp_path, capsys):
    """--ensemble 2: the file holds two members (each the network `train` makes alone), the run
    records each member's training (here with 2 negatives per simulation, ratio weighting ½, the
    parameters' moving average and the quadratic terms in θ), and `sample` reads the ensemble back;
    a weighting outside [0, 1] and a decay of 1 are refused."""
    estimator = tmp_path / "ensemble.npz"
    out, _ = _run_ok(["train", "--bank", trained.parent / "bank.npz", "--output", estimator, "--task", "two_moons",
                      *TRAINING, "--ensemble", "2", "--num-negatives", "2", "--ratio-weighting", "0.5",
                      "--ema-decay", "0.9", "--quadratic", "--quiet"],
                     capsys)
    assert "trained 2 members" in out
    meta = io.load_metadata(estimator)
    training = meta["metadata"]["training"]
    assert meta["num_members"] == 2 and training["num_members"] == 2 and len(training["members"]) == 2
    assert training["num_negatives"] == 2 and training["ratio_weighting"] == 0.5 and training["ema_decay"] == 0.9
    assert training["quadratic"] is True and io.load_estimator(estimator).config.quadratic
    assert training["validation_loss"] < 2 * math.log(2)  # below chance (2 log 2): the ensemble learned
    ensemble = io.load_estimator(estimator)
    theta, x = jnp.array([[0.1, 0.2]]), jnp.array([[0.0, -0.1]])
    members = [float(ensemble.member(m).log_ratio(theta, x)[0]) for m in range(2)]
    assert members[0] != members[1]
    np.testing.assert_allclose(float(ensemble.log_ratio(theta, x)[0]), np.mean(members), rtol=1e-5)
    _run_ok(["sample", "--estimator", estimator, *SAMPLER, "--output", tmp_path / "s"], capsys)
    assert np.isfinite(np.load(tmp_path / "s" / "samples.npz")["samples"]).all()
    code, err = _error(["train", "--bank", trained.parent / "bank.npz", "--output", tmp_path / "bad.npz",
                        "--ratio-weighting", "2", "--quiet"], capsys)
    assert code == 2 and "expected an exponent in [0, 1], got '2'" in err
    code, err = _error(["train", "--bank", trained.parent / "bank.npz", "--output", tmp_path / "bad.npz",
                        "--ema-decay", "1", "--quiet"], capsys)
    assert code == 2 and "expected a decay in [0, 1), got '1'" in err


def test_independence_moves_are_recorded_and_can_be_turned_off(trained, tmp_path, capsys):
    """Default rwmh on 2 parameters: independence moves (p = 0.9) at thin 5; ``--independence-prob 0``
    is the plain random walk at thin 10. Both are written to summary.json; bad values are refused."""
    argv = ["sample", "--estimator", trained, *SAMPLER]
    _run_ok([*argv, "--output", tmp_path / "default"], capsys)
    default = _summary(tmp_path / "default")["sampler"]
    assert default["independence_prob"] == 0.9 and default["thin"] == 5
    _run_ok([*argv, "--independence-prob", "0", "--output", tmp_path / "plain"], capsys)
    plain = _summary(tmp_path / "plain")["sampler"]
    assert plain["independence_prob"] == 0.0 and plain["thin"] == 10
    code, err = _error([*argv, "--independence-prob", "1.5", "--output", tmp_path], capsys)
    assert code == 2 and "expected a probability in [0, 1], got '1.5'" in err
    code, err = _error([*argv, "--method", "hmc", "--independence-prob", "0.5", "--output", tmp_path], capsys)
    assert code == 2 and "independence_prob > 0 needs method='rwmh'" in err
