"""``aalr-jax diagnose``: outputs, numbers in diagnostics.json, and clear errors (exit 2)."""

import json

import jax
import numpy as np
import pytest

from aalr_jax import cli, io, simulate, tasks
from aalr_jax.nn import NetworkConfig, init_estimator, standardization_from

SMALL = ["--num-pairs", "20", "--num-samples", "100", "--num-chains", "4", "--num-warmup", "50",
         "--num-roc-thetas", "2", "--roc-samples", "200", "--roc-epochs", "20", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diagnose")
    bank = simulate(jax.random.PRNGKey(0), tasks.get("two_moons"), 1000, progress=False)
    config = NetworkConfig(theta_dim=2, x_shape=(2,), hidden_features=(16, 16))
    estimator = init_estimator(jax.random.PRNGKey(1), config, standardization_from(bank.theta, bank.x))
    io.save_estimator(folder / "estimator.npz", estimator, metadata={"task": "two_moons"})  # untrained is fine
    rng = np.random.default_rng(0)
    chains = rng.normal(size=(6, 40, 2)).astype(np.float32)
    chains[3:, :, 0] += 10.0  # two separated, well-mixed modes
    np.savez(folder / "samples.npz", chains=chains, acceptance_rate=np.full(6, 0.3), num_divergent=np.zeros(6))
    return folder


def test_diagnose_writes_plots_and_numbers(files, capsys):
    out = files / "out"
    code = cli.main(["diagnose", "--estimator", str(files / "estimator.npz"), "--samples",
                     str(files / "samples.npz"), "--output", str(out), *SMALL])
    stdout, stderr = capsys.readouterr()
    assert code == 0, stderr
    assert "coverage" in stdout and "ROC AUC" in stdout
    for name in ("coverage.png", "sbc.png", "roc.png", "traces.png", "diagnostics.json"):
        assert (out / name).stat().st_size > 0, name
    record = json.loads((out / "diagnostics.json").read_text())
    assert record["task"] == "two_moons" and record["pairs"]["num_pairs"] == 20
    assert len(record["coverage"]["coverage"]) == 19 and record["coverage"]["verdict"] in (
        "nominal", "conservative", "over-confident", "mixed")
    assert len(record["coverage_grid"]["coverage"]) == 19  # 2-D box prior: grid path too
    assert len(record["sbc"]["chi2_pvalue"]) == 2
    assert len(record["roc"]["auc"]) == 2 and record["roc"]["classifier"]["num_epochs"] == 20
    assert len(record["normalization"]["mean"]) == 10
    mcmc = record["mcmc_samples"]
    assert mcmc["num_modes"] == 2 and mcmc["chains_per_mode"] == [3, 3]
    assert set(record["timings"]) >= {"coverage", "roc", "normalization", "mcmc", "total"}


@pytest.mark.parametrize("argv, message", [
    (["--estimator", "missing.npz"], "estimator file not found"),
    (["--samples", "missing.npz"], "samples file not found"),
    (["--samples", "bad.npz"], "must hold 'chains' of shape"),
    (["--task", "slcp"], "but task slcp has"),
    (["--num-pairs", "0"], "expected a positive integer"),
])
def test_diagnose_bad_input_exits_2(files, capsys, argv, message):
    np.savez(files / "bad.npz", chains=np.zeros((4, 10, 5)))
    base = ["diagnose", "--estimator", str(files / "estimator.npz"), "--output", str(files / "bad_out")]
    args = [a if not a.endswith(".npz") or a == "missing.npz" else str(files / a) for a in argv]
    if argv[0] == "--estimator":
        base = ["diagnose", "--output", str(files / "bad_out")]
    code = cli.main(base + args + ["--quiet"])
    _, stderr = capsys.readouterr()
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
