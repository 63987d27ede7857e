"""``aalr-jax diagnose``: outputs, verdicts that must come out one way, and clear errors (exit 2).

The estimator under test has its output layer zeroed: its log-ratio is exactly 0, so its posterior
is the prior. That fixes every verdict in advance: HPD regions of a flat density contain every θ*
(coverage conservative by ties, in the sample-based and the grid estimate alike), SBC ranks of prior
draws against prior draws are uniform, E[r̂] = 1 exactly, and the ROC check must fail: the
"posterior" ignores x, so a classifier tells p(x|θ) from the marginal.
"""

import json

import jax
import numpy as np
import pytest

from aalr_jax import cli, io, simulate, tasks
from aalr_jax.nn import NetworkConfig, RatioEstimator, init_estimator, standardization_from

SMALL = ["--num-pairs", "20", "--num-samples", "100", "--num-chains", "4", "--num-warmup", "50",
         "--num-roc-thetas", "2", "--roc-samples", "400", "--roc-epochs", "200", "--quiet"]


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    folder = tmp_path_factory.mktemp("diagnose")
    bank = simulate(jax.random.PRNGKey(0), tasks.get("two_moons"), 1000, progress=False)
    config = NetworkConfig(theta_dim=2, x_shape=(2,), hidden_features=(16, 16))
    estimator = init_estimator(jax.random.PRNGKey(1), config, standardization_from(bank.theta, bank.x))
    flat = jax.tree_util.tree_map_with_path(
        lambda path, a: a * 0 if "out" in jax.tree_util.keystr(path) else a, estimator.params)
    estimator = RatioEstimator(config, flat, estimator.standardization)  # log r = 0: the posterior is the prior
    io.save_estimator(folder / "estimator.npz", estimator, metadata={"task": "two_moons"})
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
    # 4 chains of 25 draws per pair and 6 chains of 40 i.i.d. draws hold fewer than 400 effective
    # samples: the MCMC verdicts must fail too, and say so
    assert stdout.startswith("aalr-jax: two_moons: coverage conservative, failed: mcmc_pairs, roc, mcmc_samples;")
    for name in ("coverage.png", "sbc.png", "roc.png", "traces.png", "diagnostics.json"):
        assert (out / name).stat().st_size > 0, name
    record = json.loads((out / "diagnostics.json").read_text())
    assert record["task"] == "two_moons" and record["pairs"]["num_pairs"] == 20
    assert record["coverage"]["coverage"] == [1.0] * 19 and record["coverage"]["verdict"] == "conservative"
    assert record["coverage_grid"]["coverage"] == [1.0] * 19  # 2-D box prior: grid path too
    verdicts = record["verdicts"]
    assert verdicts["coverage"]["passed"] and verdicts["coverage"]["text"].startswith("conservative")
    assert "the sample-based coverage agrees" in verdicts["coverage"]["text"]
    assert "would be detected with probability" in verdicts["coverage"]["text"]
    assert verdicts["sbc"]["passed"] and record["sbc"]["uniform"]
    assert verdicts["normalization"]["passed"] and record["normalization"]["mean"] == [1.0] * 10
    assert not verdicts["roc"]["passed"] and min(record["roc"]["auc"]) > 0.7
    assert verdicts["roc"]["text"].startswith("failed: ROC AUC") and "--ensemble" in verdicts["roc"]["advice"]
    assert not verdicts["mcmc_samples"]["passed"] and "effective sample size" in verdicts["mcmc_samples"]["text"]
    for name, verdict in verdicts.items():
        assert f"  {name}: {verdict['text']}" in stdout
    assert len(record["sbc"]["chi2_pvalue"]) == 2
    assert len(record["roc"]["auc"]) == 2 and record["roc"]["classifier"]["num_epochs"] == 200
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
    (["--samples", "chains.npy"], "it holds one array, not the .npz archive that 'sample' writes"),
    (["--seed", "-1"], "expected a non-negative integer"),
])
def test_diagnose_bad_input_exits_2(files, capsys, argv, message):
    np.savez(files / "bad.npz", chains=np.zeros((4, 10, 5)))
    np.save(files / "chains.npy", np.zeros((4, 10, 2)))
    base = ["diagnose", "--estimator", str(files / "estimator.npz"), "--output", str(files / "bad_out")]
    args = [a if not a.endswith((".npz", ".npy")) or a == "missing.npz" else str(files / a) for a in argv]
    if argv[0] == "--estimator":
        base = ["diagnose", "--output", str(files / "bad_out")]
    code = cli.main(base + args + ["--quiet"])
    _, stderr = capsys.readouterr()
    assert code == 2
    assert message in stderr and "Traceback" not in stderr
