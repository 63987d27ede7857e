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

from aalr_jax.data import load_bank_metadata

from aalr_jax import cli, diagnostics, io

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
    _run_ok(["simulate", "--task", "two_moons", *BUDGET, "--output", folder, "--quiet"])
    _run_ok(["train", "--bank", folder, "--output", folder, *TRAINING, "--quiet"])  # task from the bank
    return folder / "estimator.npz"


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
    assert summary["outside_training"] is False  # the default observation is in the training data
    assert isinstance(summary["diagnostics"]["warnings"], list) and isinstance(summary["diagnostics"]["notes"], list)
    assert summary["versions"]["jax"] and summary["versions"]["aalr_jax"]
    assert summary["device"] in ("cpu", "gpu", "tpu", "cuda", "rocm")


def _check_samples(folder, x_obs):
    """samples.npz against summary.json: the summary's means, standard deviations and health numbers
    are those of the saved draws (recomputed here from the chains)."""
    with np.load(folder / "samples.npz") as f:
        assert {"samples", "chains", "acceptance_rate", "rhat", "ess", "x_obs", "outside_training"} <= set(f.files)
        samples, chains = f["samples"], f["chains"]
        assert samples.shape == (200, 2) and chains.shape == (4, 50, 2)
        assert np.all(np.abs(samples) <= 1.0)  # the prior's box: draws outside it would be a support bug
        np.testing.assert_allclose(f["x_obs"], x_obs, rtol=1e-6)
        # the draws are the chains interleaved, as documented
        np.testing.assert_array_equal(samples, np.swapaxes(chains, 0, 1).reshape(-1, 2)[:200])
    summary = _summary(folder)
    means = [summary["posterior"][k]["mean"] for k in ("parameter_1", "parameter_2")]
    stds = [summary["posterior"][k]["std"] for k in ("parameter_1", "parameter_2")]
    np.testing.assert_allclose(means, samples.mean(0), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(stds, samples.std(0), rtol=1e-5, atol=1e-6)
    report = diagnostics.mcmc_report(chains.astype(np.float32), acceptance_rate=np.load(folder / "samples.npz")["acceptance_rate"])
    np.testing.assert_allclose(summary["diagnostics"]["rhat"], report.rhat, rtol=1e-4)
    np.testing.assert_allclose(summary["diagnostics"]["within_mode_rhat"], report.mode_rhat, rtol=1e-4)
    return samples


def test_run_writes_every_output(run_dir):
    for name in OUTPUTS:
        assert (run_dir / name).stat().st_size > 0, name
    summary = _summary(run_dir)
    _check_summary(summary)
    assert summary["timings"]["simulate"] > 0 and summary["timings"]["train"] > 0
    assert summary["reference_posterior"] is True and summary["observation"] == "default"
    _check_samples(run_dir, [-0.6396706, 0.16234657])
    assert (run_dir / "corner.png").read_bytes()[:4] == b"\x89PNG"
    metadata = io.load_metadata(run_dir / "estimator.npz")["metadata"]
    assert metadata["task"] == "two_moons" and metadata["num_simulations"] == 2000 and metadata["seed"] == 0
    assert metadata["training"] == summary["training"]
    assert metadata["prior"] == {"type": "Independent", "base": {"type": "Uniform", "params": {
        "high": [1.0, 1.0], "low": [-1.0, -1.0]}}, "event_shape": [2]}


def test_simulate_train_sample_through_files(trained, run_dir, tmp_path, capsys):
    bank = trained.parent / "bank.npz"
    with np.load(bank) as f:
        assert f["theta"].shape == (2000, 2) and f["x"].shape == (2000, 2)
    assert load_bank_metadata(bank)["task"] == "two_moons"  # `train` read it: no --task was given
    assert io.load_metadata(trained)["metadata"]["task"] == "two_moons"
    # fit chose the quadratic terms on held-out loss: the file records both candidates and the choice
    training = io.load_metadata(trained)["metadata"]["training"]
    record = training["choices"]["quadratic"]
    losses = record["validation_loss"]
    assert record["chosen"] is (losses["True"] < losses["False"]) and set(losses) == {"False", "True"}
    assert training["quadratic"] is record["chosen"] is io.load_estimator(trained).config.quadratic
    assert training["ratio_weighting"] == 0.5  # fit's default α
    # fit chose the number of networks (4 trained on 1,800 simulations) by held-out loss: the file
    # records the choice and its estimator holds that many
    members = training["choices"]["members"]
    assert training["num_members"] == members["chosen"] == getattr(io.load_estimator(trained), "num_members", 1)
    assert set(members["validation_loss"]) == {"1", "2", "3", "4"} and "trained 4 networks" in members["reason"]
    assert members["chosen"] == 1 + int(np.argmin([members["validation_loss"][str(m)] for m in (1, 2, 3, 4)]))
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
        (["train", "--bank", trained.parent / "bank.npz", "--task", "slcp", "--output", tmp_path / "e"],
         "simulated from task 'two_moons', not 'slcp'"),
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


def test_no_arguments_print_help_and_options_alone_mean_run(monkeypatch, capsys):
    seen = {}
    monkeypatch.setattr(cli, "_plan_run", lambda args: seen.update(vars(args)) or (lambda: 0))
    assert cli.main([]) == 0  # bare `aalr-jax`: help, nothing runs
    assert not seen and "usage: aalr-jax" in capsys.readouterr().out
    assert cli.main(["--task", "slcp", "--hidden", "8,4"]) == 0
    assert seen["task"] == "slcp" and seen["hidden"] == (8, 4) and seen["num_simulations"] == 20_000
    assert seen["output"] == "aalr_output" and (seen["method"], seen["num_samples"]) == ("auto", 10_000)
    assert seen["seed"] == 0 and not seen["quiet"] and not seen["iid"] and not seen["overwrite"]


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


def test_an_iid_task_samples_its_default_observation_without_iid(tmp_path):
    """weinberg's default observation is a set of 100 i.i.d. events: `run --task weinberg` plans an
    i.i.d. posterior of that set without --iid (it stopped with a shape error before Task.iid)."""
    args = cli.build_parser().parse_args(["run", "--task", "weinberg", "--output", str(tmp_path / "w"), "--quiet"])
    work = cli._plan_run(args)
    assert callable(work) and (tmp_path / "w").is_dir()
    from aalr_jax import tasks

    plan = cli._sampling_plan(args, tasks.get("weinberg"), (1,))
    assert plan["iid"] is True and plan["x_obs"].shape == (100, 1)
    plan = cli._sampling_plan(args, tasks.get("two_moons"), (2,))
    assert plan["iid"] is False and plan["x_obs"].shape == (2,)


def test_every_task_default_observation_matches_its_iid_flag():
    from aalr_jax import tasks

    for name in tasks.names():
        task = tasks.get(name)
        if task.observation is None:
            continue  # simulated from true_theta: one draw of x_shape by construction
        shape = np.shape(task.observation)
        expected = shape[1:] if task.iid else shape
        assert tuple(expected) == tuple(task.x_shape), (name, shape, task.iid)


def test_train_an_ensemble_then_sample_with_it(trained, tmp_path, capsys):
    """--ensemble 2: the file holds two members (each the network `train` makes alone), the run
    records each member's training (here with 2 negatives per simulation, ratio weighting ½, the
    parameters' moving average and the quadratic terms in θ), and `sample` reads the ensemble back;
    a weighting outside [0, 1] and a decay of 1 are refused."""
    estimator = tmp_path / "ensemble" / "estimator.npz"
    out, _ = _run_ok(["train", "--bank", trained.parent / "bank.npz", "--output", estimator.parent, "--task", "two_moons",
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
    code, err = _error(["train", "--bank", trained.parent / "bank.npz", "--output", tmp_path / "bad",
                        "--ratio-weighting", "2", "--quiet"], capsys)
    assert code == 2 and "expected an exponent in [0, 1], got '2'" in err
    code, err = _error(["train", "--bank", trained.parent / "bank.npz", "--output", tmp_path / "bad",
                        "--ema-decay", "1", "--quiet"], capsys)
    assert code == 2 and "expected a decay in [0, 1), got '1'" in err


def test_time_budget_stops_training_and_is_recorded(trained, tmp_path, capsys):
    """--time-budget: a budget shorter than one epoch trains one epoch and says why it stopped;
    a non-positive budget is a usage error."""
    bank = trained.parent / "bank.npz"
    _run_ok(["train", "--bank", bank, "--output", tmp_path / "t", "--max-epochs", "50", "--patience", "50",
             "--time-budget", "1e-6", "--quiet"], capsys)
    training = io.load_metadata(tmp_path / "t" / "estimator.npz")["metadata"]["training"]
    assert (training["epochs"], training["stop_reason"], training["stopped_early"]) == (1, "time_budget", True)
    code, err = _error(["train", "--bank", bank, "--output", tmp_path / "bad", "--time-budget", "0", "--quiet"],
                       capsys)
    assert code == 2 and "expected a positive number of seconds, got '0'" in err


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


# ----------------------------------------------------------------------------- bad input loses no work


def _forbid_work(monkeypatch):
    """Make every expensive step fail loudly: a command that reaches one has not validated first."""
    def forbidden(*args, **kwargs):
        raise AssertionError("work started before the options were checked")

    monkeypatch.setattr(cli, "_simulate", forbidden)
    monkeypatch.setattr(cli, "_train", forbidden)
    monkeypatch.setattr(cli, "_sample_and_write", forbidden)
    monkeypatch.setattr(cli, "_diagnose", forbidden)


def test_bad_options_after_a_run_change_nothing(run_dir, monkeypatch, capsys):
    """The second run of the issue (another task, HMC with independence moves) used to simulate,
    train and overwrite estimator.npz before refusing the sampler options."""
    before = {name: (run_dir / name).read_bytes() for name in OUTPUTS}
    _forbid_work(monkeypatch)
    code, err = _error(["run", "--output", run_dir, "--task", "gaussian_linear", "--method", "hmc",
                        "--independence-prob", "0.5", "--quiet"], capsys)
    assert code == 2 and "independence_prob > 0 needs method='rwmh'" in err
    code, err = _error(["run", "--output", run_dir, "--task", "gaussian_linear", "--quiet"], capsys)
    assert code == 2 and "holds results of task 'two_moons'" in err and "--overwrite" in err
    assert {name: (run_dir / name).read_bytes() for name in OUTPUTS} == before


def test_output_paths_are_checked_before_any_work(trained, tmp_path, monkeypatch, capsys):
    _forbid_work(monkeypatch)
    blocker = tmp_path / "file"
    blocker.write_text("not a folder")
    bank = trained.parent / "bank.npz"
    cases = [
        (["train", "--bank", bank, "--output", tmp_path / "nodir" / "e.npz"], "looks like a file name"),
        (["train", "--bank", bank, "--output", blocker], "is a file; --output names a folder"),
        (["sample", "--estimator", trained, "--output", blocker / "sub"], "cannot create the output folder"),
        (["simulate", "--output", blocker / "sub"], "cannot create the output folder"),
        (["diagnose", "--estimator", trained, "--output", blocker], "is a file"),
    ]
    for argv, message in cases:
        code, err = _error([*argv, "--quiet"], capsys)
        assert code == 2 and message in err, (argv, err)
    assert not (tmp_path / "nodir").exists() and blocker.read_text() == "not a folder"


def test_outputs_replace_symlinks_and_follow_the_umask(trained, tmp_path, capsys):
    out = tmp_path / "out"
    out.mkdir()
    victim = tmp_path / "victim.txt"
    victim.write_text("precious")
    (out / "summary.json").symlink_to(victim)
    (out / "samples.npz").symlink_to(victim)
    old = os.umask(0o022)
    try:
        code, err = _error(["sample", "--estimator", trained, *SAMPLER, "--output", out], capsys)
        assert code == 2 and "holds summary.json, which is not a readable aalr-jax result" in err
        _run_ok(["sample", "--estimator", trained, *SAMPLER, "--output", out, "--overwrite"], capsys)
        _run_ok(["simulate", "--num-simulations", "50", "--output", tmp_path / "bank", "--quiet"], capsys)
    finally:
        os.umask(old)
    assert victim.read_text() == "precious"
    for name in ("summary.json", "samples.npz"):
        assert not (out / name).is_symlink() and (out / name).is_file()
    assert _summary(out)["task"] == "two_moons"
    assert (tmp_path / "bank" / "bank.npz").stat().st_mode & 0o777 == 0o644  # not 0600
    assert sorted(p.name for p in out.iterdir()) == ["corner.png", "samples.npz", "summary.json"]  # no temp file


def test_observation_outside_the_training_data_is_flagged(trained, tmp_path, capsys):
    """x_obs = [1e20, 0] gave draws on the prior's corners with R-hat 1.00 and no word of warning."""
    path = tmp_path / "far.csv"
    path.write_text("1e20,0\n")
    _, err = _run_ok(["sample", "--estimator", trained, "--observation", path, *SAMPLER, "--output", tmp_path / "o"],
                     capsys)
    assert err.count("outside the range of the training simulations") == 1  # one line, even with --quiet
    summary = _summary(tmp_path / "o")
    assert summary["outside_training"] is True and summary["diagnostics"]["outside_training"] is True
    assert any("outside the estimator's training data" in w for w in summary["diagnostics"]["warnings"])


def test_failures_are_one_line_with_the_right_exit_status(trained, tmp_path, monkeypatch, capsys):
    code, err = _error(["run", "--seed", "1180591620717411303424", "--output", tmp_path], capsys)
    assert code == 2 and "--seed" in err and "OverflowError" not in err
    foreign = tmp_path / "foreign"
    foreign.mkdir()
    io.save_estimator(foreign / "estimator.npz", io.load_estimator(trained), metadata={"task": ["two_moons"]})
    code, err = _error(["sample", "--estimator", foreign, "--output", tmp_path / "s", "--quiet"], capsys)
    assert code == 2 and "records task ['two_moons'] (list), not a task name; pass --task" in err
    assert "unhashable" not in err

    import aalr_jax.data

    def broken(*args, **kwargs):
        raise ValueError("3 of 3 simulations returned non-finite values")

    monkeypatch.setattr(aalr_jax.data, "simulate", broken)  # a failure during the work: exit 1
    code, err = _error(["simulate", "--num-simulations", "3", "--output", tmp_path / "b", "--quiet"], capsys)
    assert code == 1 and err == "aalr-jax: error: 3 of 3 simulations returned non-finite values\n"
    code = cli.main(["simulate", "--num-simulations", "3", "--output", str(tmp_path / "b"), "--quiet", "--debug"])
    err = capsys.readouterr().err
    assert code == 1 and "Traceback" in err and err.rstrip().endswith("non-finite values")


def test_embedding_choices_and_constants_match_the_library(trained, monkeypatch, capsys, tmp_path):
    from aalr_jax import nn, sampling

    assert cli.METHODS == sampling.METHODS and set(cli.EMBEDDINGS) == set(nn.EMBEDDINGS)
    _forbid_work(monkeypatch)
    code, err = _error(["train", "--bank", trained.parent, "--embedding", "cnn", "--output", tmp_path, "--quiet"], capsys)
    assert code == 2 and "--embedding cnn" in err and "(H, W)" in err
    code, err = _error(["train", "--bank", trained.parent, "--embedding", "nope", "--output", tmp_path], capsys)
    assert code == 2 and "invalid choice: 'nope'" in err


def test_help_does_not_import_jax():
    code = ("import sys; from aalr_jax import cli; "
            "codes = [cli.main([]), cli.main(['run', '--help']), cli.main(['diagnose', '--help'])]; "
            "print(codes, sorted(m for m in ('jax', 'flax', 'blackjax') if m in sys.modules))")
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().splitlines()[-1] == "[0, 0, 0] []"


def test_sampling_a_flat_ratio_recovers_the_prior(trained, tmp_path, capsys):
    """Independent truth for the whole `sample` path: with the output layer zeroed, log r = 0 and the
    posterior is the prior U(-1, 1)²: mean 0 and standard deviation 1/√3 per parameter, within
    Monte Carlo error scaled by the run's own effective sample size."""
    import jax

    estimator = io.load_estimator(trained)  # one network or an ensemble, as fit chose
    flat = jax.tree_util.tree_map_with_path(
        lambda path, a: a * 0 if "out" in jax.tree_util.keystr(path) else a, estimator)
    folder = tmp_path / "flat"
    folder.mkdir()
    io.save_estimator(folder / "estimator.npz", flat, metadata={"task": "two_moons"})
    _run_ok(["sample", "--estimator", folder, *SAMPLER, "--output", tmp_path / "o"], capsys)
    samples = np.load(tmp_path / "o" / "samples.npz")["samples"]
    ess = np.asarray(_summary(tmp_path / "o")["diagnostics"]["ess_bulk"])
    assert ess.min() > 20
    sd = 1 / math.sqrt(3)
    assert np.all(np.abs(samples.mean(0)) < 5 * sd / np.sqrt(ess)), (samples.mean(0), ess)
    np.testing.assert_allclose(samples.std(0), sd, rtol=0.25)


# ----------------------------------------------------------------------------- several processes

PROCESS_VARIABLES = ("AALR_JAX_COORDINATOR", "AALR_JAX_NUM_PROCESSES", "AALR_JAX_PROCESS_ID")


@pytest.fixture
def no_process_variables(monkeypatch):
    for variable in PROCESS_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    return monkeypatch


@pytest.mark.parametrize("command", ["simulate", "train", "sample"])
def test_process_options_are_listed_with_their_variables(command, capsys):
    assert cli.main([command, "--help"]) == 0
    out = " ".join(capsys.readouterr().out.split())
    for text in ("--coordinator HOST:PORT", "--num-processes N", "--process-id I", *PROCESS_VARIABLES):
        assert text in out, text


def test_process_settings_from_flags_else_environment(no_process_variables):
    parser = cli.build_parser()
    args = parser.parse_args(["simulate"])
    assert cli._process_settings(args, {}) is None  # nothing set: one process, nothing started
    args = parser.parse_args(["simulate", "--coordinator", "h:1", "--num-processes", "4", "--process-id", "3"])
    assert cli._process_settings(args, {}) == {"coordinator_address": "h:1", "num_processes": 4, "process_id": 3}
    environ = {"AALR_JAX_COORDINATOR": "e:2", "AALR_JAX_NUM_PROCESSES": "2", "AALR_JAX_PROCESS_ID": "1"}
    args = parser.parse_args(["simulate"])
    assert cli._process_settings(args, environ) == {"coordinator_address": "e:2", "num_processes": 2, "process_id": 1}
    args = parser.parse_args(["simulate", "--process-id", "0"])  # a flag wins over its variable
    assert cli._process_settings(args, environ)["process_id"] == 0


def test_bad_process_settings_are_usage_errors(trained, tmp_path, no_process_variables, capsys):
    import jax

    monkeypatch = no_process_variables
    _forbid_work(monkeypatch)
    started = []  # stands in for jax.distributed: this process becomes process 1 of 2
    monkeypatch.setattr("aalr_jax.sharding.initialize_distributed", lambda **kw: started.append(kw) or True)
    monkeypatch.setattr(jax, "process_index", lambda *a: 1)
    monkeypatch.setattr(jax, "process_count", lambda *a: 2)
    out = ["--output", tmp_path, "--quiet"]
    code, err = _error(["simulate", "--num-processes", "2", "--process-id", "2", *out], capsys)
    assert code == 2 and "--process-id: expected a process index in [0, 2) (--num-processes 2), got 2" in err
    code, err = _error(["sample", "--estimator", trained, "--process-id", "-1", *out], capsys)
    assert code == 2 and "--process-id" in err
    monkeypatch.setenv("AALR_JAX_NUM_PROCESSES", "2")
    monkeypatch.setenv("AALR_JAX_PROCESS_ID", "5")
    code, err = _error(["train", "--bank", trained.parent, *out], capsys)
    assert code == 2 and "AALR_JAX_PROCESS_ID: expected a process index in [0, 2)" in err
    monkeypatch.setenv("AALR_JAX_PROCESS_ID", "one")
    code, err = _error(["simulate", *out], capsys)
    assert code == 2 and "AALR_JAX_PROCESS_ID: expected an integer, got 'one'" in err
    monkeypatch.setenv("AALR_JAX_PROCESS_ID", "1")
    code, err = _error(["run", *out], capsys)  # run and diagnose run in one process
    assert code == 2 and "'run' runs in one process" in err
    code, err = _error(["simulate", "--store", tmp_path / "b.zarr", *out], capsys)
    assert code == 2 and "run that command in one process" in err
    assert not started or all(kw["process_id"] == 1 for kw in started)


def test_flags_start_jax_distributed_and_simulate_writes_this_process_part(tmp_path, no_process_variables, capsys):
    """One process stands in for process 1 of 2: the flags reach initialize_distributed, and simulate
    writes its half of the simulations, with its own key, as bank.process-1-of-2.npz."""
    import jax

    monkeypatch = no_process_variables
    started = []
    monkeypatch.setattr("aalr_jax.sharding.initialize_distributed", lambda **kw: started.append(kw) or True)
    monkeypatch.setattr(jax, "process_index", lambda *a: 1)
    monkeypatch.setattr(jax, "process_count", lambda *a: 2)
    monkeypatch.setenv("AALR_JAX_COORDINATOR", "host:1234")
    _run_ok(["simulate", "--num-simulations", "40", "--num-processes", "2", "--process-id", "1",
             "--output", tmp_path, "--quiet"], capsys)
    assert started == [{"coordinator_address": "host:1234", "num_processes": 2, "process_id": 1}]
    part = tmp_path / "bank.process-1-of-2.npz"
    assert not (tmp_path / "bank.npz").exists()
    assert load_bank_metadata(part)["process"] == {"index": 1, "count": 2, "rows": [20, 40], "num_simulations": 40}
    from aalr_jax.data import load_bank

    assert load_bank(part).num_simulations == 20
    code, err = _error(["simulate", "--num-simulations", "41", "--num-processes", "2", "--process-id", "1",
                        "--output", tmp_path, "--quiet"], capsys)
    assert code == 2 and "--num-simulations 41: expected a multiple of the number of processes (2)" in err


def test_train_and_sample_take_this_process_share(trained, tmp_path, no_process_variables, capsys):
    """Process 1 of 2 (set directly): train passes its rows of the bank to fit and writes nothing;
    sample runs its half of the chains and draws and writes its own files."""
    from aalr_jax.data import load_bank

    monkeypatch = no_process_variables
    monkeypatch.setattr(cli, "_start_processes", lambda args: setattr(args, "process", (1, 2)))
    seen = []
    monkeypatch.setattr(cli, "_train", lambda args, bank, task, timings: seen.append(bank) or (None, {}))
    _run_ok(["train", "--bank", trained.parent, *TRAINING, "--output", tmp_path / "t", "--quiet"], capsys)
    whole = load_bank(trained.parent / "bank.npz")
    np.testing.assert_array_equal(seen[0].theta, whole.theta[1000:2000])
    assert not (tmp_path / "t" / "estimator.npz").exists()

    out = tmp_path / "s"
    _run_ok(["sample", "--estimator", trained, *SAMPLER, "--output", out], capsys)
    assert sorted(os.listdir(out)) == ["corner.process-1-of-2.png", "samples.process-1-of-2.npz",
                                       "summary.process-1-of-2.json"]
    with np.load(out / "samples.process-1-of-2.npz") as data:
        assert data["chains"].shape[0] == 2 and data["samples"].shape[0] == 100
    summary = json.loads((out / "summary.process-1-of-2.json").read_text())
    assert summary["process"] == {"index": 1, "count": 2} and summary["sampler"]["num_chains"] == 2


@pytest.mark.parametrize("flags, value", [([], None), (["--quadratic"], True), (["--no-quadratic"], False)])
def test_quadratic_flag_leaves_the_choice_to_fit_unless_given(flags, value):
    """No flag passes quadratic=None (fit chooses); --quadratic and --no-quadratic fix it."""
    for command in (["train", "--bank", "b"], ["run"]):
        args = cli.build_parser().parse_args([*command, *flags])
        assert args.quadratic is value
