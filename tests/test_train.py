"""Training (aalr_jax.train): parameter averaging by hand, the epoch, fit's options and checks,
and the end-to-end pipeline against analytic posteriors. The loss pieces are in test_losses.py."""

import functools
from typing import NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
import optax
import pytest

from aalr_jax import fit, fit_ensemble, priors, sample_posterior, simulate
from aalr_jax.data import SimulationBank, split_bank
from aalr_jax.losses import LossConfig, pair_logits
from aalr_jax.nn import NetworkConfig, RatioEnsemble, RatioEstimator, init_estimator, standardization_from
from aalr_jax.tasks import gaussian_linear
from aalr_jax.train import TrainHistory, build_trainer, default_ema_decay, evaluate, param_average


def test_default_ratio_weighting_recovers_a_narrow_posterior_component():
    """x ~ ½ N(θ, 1) + ½ N(θ, 0.05²), θ ~ U(-10, 10): half the posterior's mass lies within 0.1 of x,
    where r ≈ 40-80 and the plain loss is nearly flat. Posterior mass of |θ - x| < 0.1 by quadrature
    of p(θ) r̂ against the exact likelihood: the plain loss (α = 0) loses more than half of it
    (0.20-0.24 of 0.52 over four seeds when written), fit's default α = ½ keeps most (0.38-0.41)."""
    import numpyro.distributions as dist

    narrow = 0.05
    prior = priors.box_uniform([-10.0], [10.0])

    def simulator(key, theta):
        k1, k2 = jax.random.split(key)
        return theta + jnp.where(jax.random.bernoulli(k1), 1.0, narrow) * jax.random.normal(k2, theta.shape)

    bank = simulate(jax.random.PRNGKey(2), (prior, simulator), 10_000, progress=False)
    x0 = jnp.array([1.3])
    grid = jnp.linspace(-10.0, 10.0, 4001)[:, None]  # spacing 0.005
    inside = jnp.abs(grid[:, 0] - x0[0]) < 2 * narrow
    mass = lambda log_r: float(jnp.sum(jnp.where(inside, jax.nn.softmax(log_r), 0.0)))
    exact = mass(jnp.logaddexp(dist.Normal(grid[:, 0], 1.0).log_prob(x0[0]),
                               dist.Normal(grid[:, 0], narrow).log_prob(x0[0])))
    plain, weighted = (mass(fit(jax.random.PRNGKey(2), bank, max_epochs=100, num_members=1, progress=False,
                                **kwargs).estimator.log_ratio(grid, x0))  # one network per objective
                       for kwargs in ({"ratio_weighting": 0.0}, {}))
    assert 0.5 < exact < 0.53
    assert exact - plain > 0.2, (plain, exact)
    assert abs(weighted - exact) < 0.65 * abs(plain - exact), (plain, weighted, exact)


def test_param_average_by_hand():
    """update: a ← β a + (1 − β) p; read: a / (1 − β^t) = Σ_s (1 − β) β^(t−s) p_s / (1 − β^t)."""
    beta, rng = 0.7, np.random.default_rng(0)
    iterates = [{"w": rng.normal(size=(2, 3)), "b": rng.normal(size=3)} for _ in range(5)]
    average = param_average(beta)
    state = average.init(jax.tree.map(jnp.asarray, iterates[0]))
    assert int(state.count) == 0 and np.all(np.asarray(state.mean["w"]) == 0.0)
    for p in iterates:
        state = average.update(state, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), p))
    weights = np.array([(1 - beta) * beta ** (4 - t) for t in range(5)]) / (1 - beta**5)
    assert int(state.count) == 5 and np.isclose(weights.sum(), 1.0)
    for name in ("w", "b"):
        expected = sum(w * p[name] for w, p in zip(weights, iterates))
        np.testing.assert_allclose(average.read(state)[name], expected, rtol=1e-5, atol=1e-6)
    # β = 0 reads out the last iterate exactly
    zero = param_average(0.0)
    last = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), iterates[-1])
    np.testing.assert_array_equal(zero.read(zero.update(zero.init(last), last))["w"], last["w"])


def test_trainer_averages_the_iterates_of_its_epochs():
    """With one step per epoch the iterates p_1..p_T are the plain (β = 0) run's (the average never
    feeds back); the averaging trainer's estimator holds their debiased average."""
    theta = jax.random.normal(jax.random.PRNGKey(0), (64, 1))
    x = theta + 0.3 * jax.random.normal(jax.random.PRNGKey(1), (64, 1))
    bank = SimulationBank(theta, x)
    config = NetworkConfig(theta_dim=1, x_shape=(1,), hidden_features=(8,))
    estimator = init_estimator(jax.random.PRNGKey(2), config, standardization_from(theta, x))
    beta, optimizer = 0.7, optax.sgd(0.5)
    plain, averaging = build_trainer(optimizer, 64), build_trainer(optimizer, 64, ema_decay=beta)
    state, state_avg, iterates = plain.init(estimator), averaging.init(estimator), []
    for t in range(5):
        state, info = plain.epoch(jax.random.PRNGKey(10 + t), state, bank)
        state_avg, _ = averaging.epoch(jax.random.PRNGKey(10 + t), state_avg, bank)
        iterates.append(state.estimator.params)
    # α = ½ by default: the objective is weighted, the reported loss is the plain one
    assert float(info.objective) > float(info.loss) > 0
    weights = np.array([(1 - beta) * beta ** (4 - t) for t in range(5)]) / (1 - beta**5)
    expected = jax.tree.map(lambda *ps: sum(w * np.asarray(p) for w, p in zip(weights, ps)), *iterates)
    jax.tree.map(lambda a, b: np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6),
                 averaging.estimator(state_avg).params, expected)
    assert int(state_avg.average.count) == 5
    jax.tree.map(np.testing.assert_array_equal, state_avg.estimator.params, state.estimator.params)
    jax.tree.map(np.testing.assert_array_equal, plain.estimator(state).params, state.estimator.params)


def test_default_ema_decay_follows_the_schedule_and_history_records_the_choices():
    """β = 1 − 1/w, w = min(1000, steps // 10): 0.999 for long schedules, a tenth of a short one, none
    below 20 steps; fit records the β, batch size and learning rate it used (15 epochs of
    900 // 64 = 14 steps: w = 21). The train loss is the plain one, on the validation loss's footing,
    and the weighted objective (α = ½ by default) is kept apart."""
    assert default_ema_decay(52_500) == 0.999 and default_ema_decay(10_000) == 0.999
    assert default_ema_decay(4200) == 1 - 1 / 420 and default_ema_decay(100) == 0.9
    assert default_ema_decay(19) == 0.0
    bank = simulate(jax.random.PRNGKey(0), gaussian_linear.make(dim=2), 1000, progress=False)
    history = fit(jax.random.PRNGKey(0), bank, max_epochs=15, progress=False).history
    assert (history.ema_decay, history.batch_size, history.learning_rate) == (1 - 1 / 21, 64, 1e-3)
    assert np.all(history.train_objective > history.train_loss + 0.3)
    assert abs(history.train_loss[-1] - history.validation_loss[-1]) < 0.1, history
    plain = fit(jax.random.PRNGKey(0), bank, max_epochs=3, ema_decay=0.0, ratio_weighting=0.0,
                optimizer=optax.adam(1e-3), progress=False).history
    assert (plain.ema_decay, plain.batch_size, plain.learning_rate) == (0.0, 64, None)
    np.testing.assert_array_equal(plain.train_loss, plain.train_objective)  # α = 0, K = 1, λ = 0


class _GaussianLinearLogRatio(NamedTuple):
    """The exact log r(x|θ) of gaussian_linear (any dimension): its AALR loss is the Bayes loss."""

    def embed(self, x):
        return x

    def head(self, theta, x):
        evidence = -0.5 * jnp.sum(x**2 / 0.2 + jnp.log(2 * jnp.pi * 0.2), axis=-1)
        return jnp.vectorize(gaussian_linear.log_likelihood, signature="(d),(d)->()")(theta, x) - evidence


def test_parameter_average_lowers_the_excess_loss_of_noisy_training():
    """Adam at a constant 1e-2 with batches of 128 ends in minibatch noise; averaging the iterates
    (β = 0.99, about the last 100 steps) must at least halve the excess loss over the Bayes loss on
    fresh pairs (Bayes loss 0.9165; when written, over four training seeds, plain 0.935-0.945,
    averaged 0.922-0.927: 0.29-0.35 of the plain excess)."""
    task = gaussian_linear.make(dim=3)
    bank = simulate(jax.random.PRNGKey(0), task, 10_000, progress=False)
    test = simulate(jax.random.PRNGKey(5), task, 20_000, progress=False)
    bayes = evaluate(_GaussianLinearLogRatio(), test)
    plain, averaged_ = (evaluate(fit(jax.random.PRNGKey(1), bank, max_epochs=30, patience=30, batch_size=128,
                                     optimizer=optax.adam(1e-2), ema_decay=beta, num_members=1,
                                     progress=False).estimator, test)  # one network's iterates against their average
                        for beta in (0.0, 0.99))
    assert averaged_ - bayes < 0.5 * (plain - bayes), (plain, averaged_, bayes)


@pytest.mark.slow
def test_quadratic_form_undoes_the_shrinkage_of_posterior_means():
    """10-D gaussian_linear (posterior mean x/2): a plain SELU network's posterior means fall short of
    x/2 at the 20 most extreme of 200 fresh observations (the θ-x coupling flattens where data thin
    out); the quadratic terms in θ must cut that shortfall by a quarter and the excess loss over the
    Bayes loss on fresh pairs by a fifth. When written (training seeds 1-3): shortfall of the slope
    0.051-0.058 plain, 0.024-0.035 quadratic; excess loss 0.017-0.018 plain, 0.011-0.013 quadratic."""
    task = gaussian_linear.make(dim=10)
    bank = simulate(jax.random.PRNGKey(0), task, 50_000, progress=False)
    test = simulate(jax.random.PRNGKey(5), task, 20_000, progress=False)
    bayes = evaluate(_GaussianLinearLogRatio(), test)
    x = np.asarray(simulate(jax.random.PRNGKey(9), task, 200, progress=False).x)
    far = jnp.asarray(x[np.argsort(-np.linalg.norm(x, axis=1))[:20]])
    proposal = jnp.sqrt(0.05) * jax.random.normal(jax.random.PRNGKey(5), (4000, 10))

    def slope(estimator):
        """Importance-sampled posterior means m(x) from the exact posterior N(x/2, 0.05 I) (weights
        r̂/r), and the least-squares slope of m on x (exactly 1/2 for the true ratio)."""
        def mean(xo):
            theta = xo / 2 + proposal
            log_w = estimator.log_ratio(theta, jnp.broadcast_to(xo, theta.shape)) + jnp.sum((xo - theta) ** 2, -1) / 0.2
            return jax.nn.softmax(log_w) @ theta
        m = jax.lax.map(mean, far)
        return float(jnp.sum(m * far) / jnp.sum(far * far))

    shortfall, excess = {}, {}
    for quadratic in (False, True):
        estimator = fit(jax.random.PRNGKey(1), bank, max_epochs=60, patience=60, quadratic=quadratic,
                        num_members=1, progress=False).estimator  # one network: its terms are the subject
        shortfall[quadratic], excess[quadratic] = 0.5 - slope(estimator), evaluate(estimator, test) - bayes
    assert 0.04 < shortfall[False] and shortfall[True] < 0.75 * shortfall[False], shortfall
    assert excess[True] < 0.8 * excess[False], excess


@pytest.fixture(scope="module")
def gl3():
    """3-D gaussian_linear, 20k simulations, trained once for the tests below."""
    task = gaussian_linear.make(dim=3)
    bank = simulate(jax.random.PRNGKey(0), task, 20_000, progress=False)
    result = fit(jax.random.PRNGKey(1), bank, max_epochs=60, patience=10, progress=False)
    return task, bank, result


def test_learned_log_ratio_matches_exact(gl3):
    """log r(x|θ) = log N(x; θ, 0.1 I) - log N(x; 0, 0.2 I) on joint draws."""
    task, _, (estimator, _) = gl3
    test = simulate(jax.random.PRNGKey(7), task, 2000, progress=False)
    theta, x = np.asarray(test.theta), np.asarray(test.x)
    exact = (-((x - theta) ** 2).sum(1) / 0.2 + (x**2).sum(1) / 0.4) + 1.5 * np.log(2.0)
    learned = np.asarray(estimator.log_ratio(test.theta, test.x))
    assert np.corrcoef(exact, learned)[0, 1] > 0.95
    assert np.median(np.abs(exact - learned)) < 0.3


def test_end_to_end_gaussian_linear_posterior(gl3):
    task, _, (estimator, _) = gl3
    for i, x_obs in enumerate([task.default_observation, jnp.array([0.3, -0.4, 0.1])]):
        mean, cov = gaussian_linear.analytic_posterior(x_obs)
        std = np.sqrt(np.diag(np.asarray(cov)))
        for method in ("rwmh", "hmc"):
            r = sample_posterior(jax.random.PRNGKey(i), estimator, task.prior, x_obs, method=method,
                                 num_samples=5000, num_chains=20, num_warmup=300)
            s = np.asarray(r.samples)
            assert np.all(np.abs(s.mean(0) - np.asarray(mean)) < 0.2 * std), (method, s.mean(0), mean)
            np.testing.assert_allclose(s.std(0), std, rtol=0.2)
            assert np.all(np.asarray(r.rhat) < 1.01)


def test_ensemble_averages_members_and_recovers_the_posterior(gl3):
    """Three members on one split: the ensemble's logit is their mean, its validation loss is that
    of the mean logit, it matches the exact log-ratio, and its posterior is the analytic one."""
    task, bank, _ = gl3
    result = fit_ensemble(jax.random.PRNGKey(2), bank, 3, max_epochs=60, patience=10, progress=False)
    ensemble = result.estimator
    assert ensemble.num_members == 3 and len(result.histories) == 3
    test = simulate(jax.random.PRNGKey(7), task, 2000, progress=False)
    members = np.stack([np.asarray(ensemble.member(m).log_ratio(test.theta, test.x)) for m in range(3)])
    assert np.ptp(members, axis=0).mean() > 1e-3  # the members differ
    np.testing.assert_allclose(ensemble.log_ratio(test.theta, test.x), members.mean(0), rtol=1e-5, atol=1e-5)
    # every member was selected on the same validation bank, the one the ensemble is scored on
    _, val = split_bank(jax.random.split(jax.random.PRNGKey(2))[0], bank, 0.1)
    for m, history in enumerate(result.histories):
        np.testing.assert_allclose(evaluate(ensemble.member(m), val), history.validation_loss.min(), rtol=1e-5)
    np.testing.assert_allclose(result.validation_loss, evaluate(ensemble, val), rtol=1e-6)
    theta, x = np.asarray(test.theta), np.asarray(test.x)
    exact = (-((x - theta) ** 2).sum(1) / 0.2 + (x**2).sum(1) / 0.4) + 1.5 * np.log(2.0)
    assert np.median(np.abs(exact - np.asarray(ensemble.log_ratio(test.theta, test.x)))) < 0.3
    x_obs = jnp.array([0.3, -0.4, 0.1])
    mean, cov = gaussian_linear.analytic_posterior(x_obs)
    std = np.sqrt(np.diag(np.asarray(cov)))
    r = sample_posterior(jax.random.PRNGKey(4), ensemble, task.prior, x_obs, num_samples=5000, num_chains=20,
                         num_warmup=300)
    s = np.asarray(r.samples)
    assert np.all(np.abs(s.mean(0) - np.asarray(mean)) < 0.2 * std)
    np.testing.assert_allclose(s.std(0), std, rtol=0.2)
    with pytest.raises(ValueError, match="num_members must be a positive integer"):
        fit_ensemble(jax.random.PRNGKey(0), bank, 0)


def test_early_stopping_keeps_best_parameters(gl3):
    _, bank, (estimator, history) = gl3
    assert len(history.train_loss) == len(history.validation_loss) >= history.best_epoch + 1
    assert history.best_epoch == int(np.argmin(history.validation_loss))
    assert history.validation_loss[0] > history.validation_loss[history.best_epoch]
    # the returned estimator is the best one: re-evaluating it on the same split gives the best loss
    refit = fit(jax.random.PRNGKey(1), SimulationBank(bank.theta[:4000], bank.x[:4000]),
                max_epochs=8, patience=2, num_members=1, progress=False)  # one network's early stopping
    train_val = refit.history.validation_loss
    _, val = split_bank(jax.random.split(jax.random.PRNGKey(1), 3)[0], SimulationBank(bank.theta[:4000], bank.x[:4000]), 0.1)
    np.testing.assert_allclose(evaluate(refit.estimator, val), train_val.min(), rtol=1e-5)
    if refit.history.stopped_early:
        assert len(train_val) - 1 - refit.history.best_epoch == 2


def test_time_budget_stops_before_the_epoch_that_would_overrun_it(small_bank):
    """Each stop is named in the history; the budget stops training once the mean epoch time says
    the next epoch would end past it, and never before the first epoch (one network: the rule that
    stops each of fit's trainings)."""
    key = jax.random.PRNGKey(2)
    fit_ = functools.partial(fit, num_members=1, quadratic=False, progress=False)
    full = fit_(key, small_bank, max_epochs=6, patience=100).history
    assert (full.stop_reason, len(full.train_loss), full.stopped_early) == ("max_epochs", 6, False)
    patient = fit_(key, small_bank, max_epochs=50, patience=1).history
    assert patient.stop_reason == "patience" and len(patient.train_loss) - 1 - patient.best_epoch == 1
    tiny = fit_(key, small_bank, max_epochs=6, patience=100, time_budget=1e-6).history
    assert (tiny.stop_reason, len(tiny.train_loss), tiny.stopped_early) == ("time_budget", 1, True)
    # the same first epoch as without a budget (same schedule): the budget only decides when to stop
    np.testing.assert_allclose(tiny.train_loss, full.train_loss[:1], rtol=1e-6)
    per_epoch = full.seconds / 6
    budget = 3.5 * per_epoch + 0.05
    timed = fit_(key, small_bank, max_epochs=10_000, patience=10_000, time_budget=budget).history
    assert timed.stop_reason == "time_budget" and len(timed.train_loss) < 10_000
    # it stops within the epoch after the mean time says the budget is near (CI load varies: margin)
    assert timed.seconds <= budget + 3 * timed.seconds / len(timed.train_loss) + 0.2, (timed.seconds, budget)
    # fit's own choices (the two quadratic candidates, then 4 networks here) share one budget of 10 s,
    # compilation included: five trainings that each took the whole of it would last about 50 s
    shared = fit(key, small_bank, max_epochs=10_000, patience=10_000, time_budget=10.0, progress=False).history
    members = shared.choices["members"]
    assert shared.stop_reason == "time_budget" and len(members["seconds"]) == 4
    assert len(shared.choices["quadratic"]["seconds"]) == 2
    assert shared.seconds == pytest.approx(sum(members["seconds"]))
    assert shared.seconds < 20.0 and sum(members["seconds"][1:]) < 10.0, members["seconds"]


def test_fit_accepts_any_optax_transformation_and_is_reproducible():
    task = gaussian_linear.make(dim=2)
    bank = simulate(jax.random.PRNGKey(0), task, 2000, progress=False)
    opt = optax.chain(optax.clip_by_global_norm(1.0), optax.sgd(1e-2, momentum=0.9))
    a = fit(jax.random.PRNGKey(3), bank, optimizer=opt, max_epochs=3, progress=False)
    b = fit(jax.random.PRNGKey(3), bank, optimizer=opt, max_epochs=3, progress=False)
    np.testing.assert_array_equal(a.history.train_loss, b.history.train_loss)
    assert a.history.train_loss[-1] < a.history.train_loss[0]


def _imbalance(estimator, bank):
    """|mean σ(f_joint) + mean σ(f_marginal) − 1| on a bank (θ rolled by one)."""
    lj, lm = pair_logits(estimator, bank.theta, bank.x)
    return abs(float(jax.nn.sigmoid(lj).mean() + jax.nn.sigmoid(lm).mean()) - 1.0)


def test_balanced_training_is_more_balanced_than_plain_training():
    """λ = 100 against λ = 0, trained the same way (default α = ½, 5 epochs): the balanced
    classifier's imbalance on 40,000 fresh pairs is at most half the plain one's (when written,
    training seeds 3-5: plain 0.007-0.013, balanced 0.0001-0.003; the two means' noise is ~0.003)."""
    task = gaussian_linear.make(dim=2)
    bank = simulate(jax.random.PRNGKey(0), task, 3000, progress=False)
    test = simulate(jax.random.PRNGKey(9), task, 40_000, progress=False)
    gap = {balance: _imbalance(fit(jax.random.PRNGKey(3), bank, loss=LossConfig(balance=balance), max_epochs=5,
                                   num_members=1, progress=False).estimator, test)  # one network per objective
           for balance in (0.0, 100.0)}
    assert gap[100.0] < 0.5 * gap[0.0] and gap[0.0] > 0.005, gap


def test_large_x_trains_as_the_same_data_in_other_units():
    """x · 1e20 (squares beyond float32) standardises to the same z(x): the same validation losses."""
    bank = simulate(jax.random.PRNGKey(0), gaussian_linear.make(dim=2), 1000, progress=False)
    large = SimulationBank(bank.theta, bank.x * 1e20)
    runs = [fit(jax.random.PRNGKey(1), b, max_epochs=3, progress=False).history.validation_loss for b in (bank, large)]
    np.testing.assert_allclose(runs[1], runs[0], rtol=1e-3)
    assert runs[1].min() < 0.9 * 2 * np.log(2)  # learns: 2 log 2 is a classifier that ignores x


@pytest.fixture(scope="module")
def small_bank():
    return simulate(jax.random.PRNGKey(0), gaussian_linear.make(dim=2), 1000, progress=False)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(batch_size=5000), r"batch_size=5000 is larger than the 900 training simulations"),
        (dict(max_epochs=0), "max_epochs must be a positive integer, got 0"),
        (dict(patience=-2), "patience must be a positive integer, got -2"),
        (dict(validation_fraction=1.5), r"validation_fraction must be a finite number in \(0, 1\), got 1.5"),
        (dict(learning_rate=-1), r"learning_rate must be a finite number in \(0, inf\), got -1.0"),
        (dict(learning_rate=float("inf")), r"learning_rate must be a finite number in \(0, inf\), got inf"),
        (dict(learning_rate=1e-3, optimizer=optax.adam(1e-3)), "either optimizer or learning_rate, not both"),
        (dict(balance=-1.0), r"balance must be a finite number in \[0, inf\), got -1.0"),
        (dict(balance=float("nan")), r"balance must be a finite number in \[0, inf\), got nan"),
        (dict(loss=LossConfig(balance=float("nan"))), r"balance must be a finite number in \[0, inf\), got nan"),
        (dict(num_negatives=0), "num_negatives must be a positive integer, got 0"),
        (dict(ratio_weighting=1.5), r"ratio_weighting must be a finite number in \[0, 1\], got 1.5"),
        (dict(ema_decay=1.0), r"ema_decay must be a finite number in \[0, 1\), got 1.0"),
        (dict(ema_decay=float("nan")), r"ema_decay must be a finite number in \[0, 1\), got nan"),
        (dict(time_budget=0), r"time_budget must be a finite number in \(0, inf\), got 0"),
        (dict(batch_size=64, num_negatives=64), r"num_negatives must be smaller than batch_size \(64\), got 64"),
        (dict(activation="sigmoid"), "activation must be one of"),
        (dict(quadratic=1), "quadratic must be True, False or None \\(fit chooses\\), got 1"),
        (dict(theta_bound=float("nan")), "theta_bound must be a positive finite number or None, got nan"),
        (dict(network=NetworkConfig(theta_dim=3)), r"network.theta_dim is 3 but the bank has 2"),
    ],
)
def test_fit_refuses_bad_values_before_training(small_bank, kwargs, match):
    with pytest.raises(ValueError, match=match):
        fit(jax.random.PRNGKey(0), small_bank, progress=False, **kwargs)


def test_fit_refuses_bad_arguments_by_name(small_bank):
    key = jax.random.PRNGKey(0)
    theta, x = np.asarray(small_bank.theta), np.asarray(small_bank.x)
    cases = [
        (TypeError, "rng_key must be a JAX PRNG key, got the integer 0", dict(rng_key=0)),
        (TypeError, r"bank must be a SimulationBank\(theta, x\), got dict",
         dict(bank={"theta": theta, "x": x})),
        (TypeError, "bank.x must be real, got complex", dict(bank=SimulationBank(theta, x + 1j))),
        (TypeError, "bank.theta must be an array of real numbers", dict(bank=SimulationBank(theta.astype(str), x))),
        (ValueError, "bank.theta must not be empty", dict(bank=SimulationBank(np.zeros((0, 2)), np.zeros((0, 2))))),
        (ValueError, "bank.theta must not be empty", dict(bank=SimulationBank(small_bank.theta[:0], small_bank.x[:0]))),
        (ValueError, r"bank.x must have at least 2 dimension\(s\)", dict(bank=SimulationBank(theta, small_bank.x[:, 0]))),
        (ValueError, r"bank must hold theta \(n, d\) and x \(n, ...\) with the same n",
         dict(bank=SimulationBank(theta, x[:-1]))),
        (ValueError, "bank contains non-finite values", dict(bank=SimulationBank(theta, np.full_like(x, np.nan)))),
        (ValueError, r"validation_bank must hold theta \(n, d\) and x \(n, ...\) with the same n",
         dict(validation_bank=SimulationBank(theta[:10], x[:9]))),
        (ValueError, r"validation_bank must have the shapes of bank",
         dict(validation_bank=SimulationBank(theta[:10], np.ones((10, 3))))),
        (TypeError, "unexpected keyword argument 'hidden'", dict(hidden=(8,))),
        (TypeError, "network must be a NetworkConfig", dict(network={"hidden_features": (8,)})),
        (TypeError, "optimizer must be an optax.GradientTransformation", dict(optimizer="adam")),
    ]
    for error, match, kwargs in cases:
        args = {"rng_key": key, "bank": small_bank} | kwargs
        with pytest.raises(error, match=match):
            fit(args.pop("rng_key"), args.pop("bank"), progress=False, **args)
    with pytest.raises(TypeError, match="unexpected keyword argument 'hidden'"):
        fit_ensemble(key, small_bank, 2, hidden=(8,), progress=False)
    with pytest.raises(ValueError, match="num_members must be a positive integer, got 0"):
        fit_ensemble(key, small_bank, 0)


def test_flat_options_and_configs_build_the_same_estimator(small_bank):
    """The flat keywords are the fields of NetworkConfig and LossConfig, applied on top of them."""
    kwargs = dict(max_epochs=2, progress=False)
    flat = fit(jax.random.PRNGKey(1), small_bank, hidden_features=[16, 16], activation="elu", quadratic=True,
               num_negatives=2, ratio_weighting=0.0, **kwargs)
    grouped = fit(jax.random.PRNGKey(1), small_bank, network=NetworkConfig(hidden_features=(16, 16), activation="elu",
                                                                         quadratic=True),
                  loss=LossConfig(ratio_weighting=0.0, num_negatives=2), **kwargs)
    assert flat.estimator.config == grouped.estimator.config == NetworkConfig(2, (2,), (16, 16), "elu", quadratic=True)
    np.testing.assert_array_equal(flat.history.validation_loss, grouped.history.validation_loss)


def test_validation_takes_a_fraction_or_a_bank(small_bank):
    """validation= is a held-out fraction or a bank; the flat validation_fraction= / validation_bank=
    are the same thing by name, and giving both forms is refused (one network: the split is fit's
    first step, whatever it trains after)."""
    kwargs = dict(max_epochs=1, hidden_features=(8,), num_members=1, quadratic=False, progress=False)
    held = SimulationBank(small_bank.theta[:100], small_bank.x[:100])
    rest = SimulationBank(small_bank.theta[100:], small_bank.x[100:])
    runs = [fit(jax.random.PRNGKey(1), small_bank, validation=0.2, **kwargs),
            fit(jax.random.PRNGKey(1), small_bank, validation_fraction=0.2, **kwargs),
            fit(jax.random.PRNGKey(1), rest, validation=held, **kwargs),
            fit(jax.random.PRNGKey(1), rest, validation_bank=held, **kwargs)]
    for a, b in (runs[:2], runs[2:]):
        np.testing.assert_array_equal(a.history.validation_loss, b.history.validation_loss)
    assert runs[0].history.batch_size == 64 and runs[2].history.batch_size == 64
    with pytest.raises(TypeError, match="give either validation or the flat validation_fraction"):
        fit(jax.random.PRNGKey(1), small_bank, validation=held, validation_fraction=0.2, **kwargs)
    with pytest.raises(TypeError, match="validation must be a fraction in \\(0, 1\\) or a SimulationBank"):
        fit(jax.random.PRNGKey(1), small_bank, validation="10%", **kwargs)
    with pytest.raises(ValueError, match=r"validation must be a finite number in \(0, 1\), got 1.5"):
        fit(jax.random.PRNGKey(1), small_bank, validation=1.5, **kwargs)
    with pytest.raises(ValueError, match="validation must have the shapes of bank"):
        fit_ensemble(jax.random.PRNGKey(1), small_bank, 2, validation=SimulationBank(held.theta, held.x[:, :1]),
                     max_epochs=1, progress=False)


def _same_params(a, b) -> bool:
    return all(np.array_equal(u, v) for u, v in zip(jax.tree.leaves(a.params), jax.tree.leaves(b.params)))


def test_fit_chooses_the_quadratic_terms_by_held_out_loss(small_bank):
    """By default fit trains the network without and with the quadratic terms and keeps the lower
    held-out loss: the kept estimator is, parameter for parameter, what fit returns when told the
    winning setting, and the history records both candidates' losses and times."""
    key = jax.random.PRNGKey(4)
    auto = fit(key, small_bank, max_epochs=20, num_members=1, progress=False)
    given = {q: fit(key, small_bank, max_epochs=20, quadratic=q, num_members=1, progress=False) for q in (False, True)}
    losses = {q: float(np.min(r.history.validation_loss)) for q, r in given.items()}
    winner = min(losses, key=losses.get)
    record = auto.history.choices["quadratic"]
    assert record["chosen"] is winner and auto.estimator.config.quadratic is winner
    assert record["validation_loss"] == {str(q): loss for q, loss in losses.items()}
    assert losses[False] != losses[True]  # the terms change training: the comparison is not a tie
    assert _same_params(auto.estimator, given[winner].estimator)
    np.testing.assert_array_equal(auto.history.validation_loss, given[winner].history.validation_loss)
    assert auto.history.seconds == pytest.approx(sum(record["seconds"].values()))
    assert all(r.history.choices is None for r in given.values())  # nothing was left to choose


def test_fit_trains_one_network_above_the_cpu_size_limit(small_bank, monkeypatch):
    """Above the size limit on a CPU only the network without the terms trains (the same as
    quadratic=False), and the history says why; on an accelerator both are tried at any size."""
    import aalr_jax.train as train

    monkeypatch.setattr(train, "AUTO_MAX_TRAIN_CPU", 100)
    key = jax.random.PRNGKey(5)
    auto = fit(key, small_bank, max_epochs=5, progress=False)
    plain = fit(key, small_bank, max_epochs=5, quadratic=False, progress=False)
    record = auto.history.choices["quadratic"]
    assert record["chosen"] is False and list(record["validation_loss"]) == ["False"]
    assert "above 100" in record["reason"] and _same_params(auto.estimator, plain.estimator)
    assert train.quadratic_candidates(True, 10**6) == ((True,), None)
    monkeypatch.setattr(train.jax, "default_backend", lambda: "gpu")
    assert train.quadratic_candidates(None, 10**6)[0] == (False, True)


def test_fit_ensemble_members_share_the_first_members_choice(small_bank):
    """The first member chooses the quadratic terms; the others train with its choice, so the
    members stack into one architecture."""
    result = fit_ensemble(jax.random.PRNGKey(6), small_bank, 3, max_epochs=5, progress=False)
    first = result.histories[0].choices["quadratic"]["chosen"]
    assert result.estimator.config.quadratic is first
    assert [h.choices for h in result.histories[1:]] == [None, None]


def test_networks_trained_together_take_the_steps_they_take_alone(small_bank, monkeypatch):
    """On an accelerator fit trains its networks after the first at once (vmap over their states).
    Each must take the steps it takes alone (the CPU's path, one after the other; on this small
    bank a CPU also trains 4), stop by its own
    patience while the others go on, and be frozen there: the same histories, stops, best epochs,
    parameters (up to float order) and choice of how many to keep."""
    from aalr_jax import train as train_module

    histories = {"alone": [], "together": []}
    train_alone, train_together = train_module._train, train_module._train_together
    monkeypatch.setattr(train_module, "_train", lambda *a, **k: histories["alone"].append(train_alone(*a, **k))
                        or histories["alone"][-1])
    kwargs = dict(quadratic=False, max_epochs=40, patience=2, progress=False)
    alone = fit(jax.random.PRNGKey(2), small_bank, **kwargs)
    monkeypatch.setattr(train_module.jax, "default_backend", lambda: "gpu")  # an accelerator's plan and path
    monkeypatch.setattr(train_module, "_train_together",
                        lambda *a, **k: histories["together"].extend(train_together(*a, **k)) or histories["together"])
    together = fit(jax.random.PRNGKey(2), small_bank, **kwargs)
    assert len(histories["alone"]) == 5 and len(histories["together"]) == 3  # networks 1-3 of 4, at once
    epochs = []
    for a, b in zip(histories["alone"][1:4], histories["together"], strict=True):
        assert (len(b.history.validation_loss), b.history.best_epoch, b.history.stop_reason) == \
            (len(a.history.validation_loss), a.history.best_epoch, a.history.stop_reason)
        np.testing.assert_allclose(b.history.validation_loss, a.history.validation_loss, rtol=1e-4)
        np.testing.assert_allclose(b.history.train_loss, a.history.train_loss, rtol=1e-4)
        for x, y in zip(jax.tree.leaves(a.estimator), jax.tree.leaves(b.estimator), strict=True):
            np.testing.assert_allclose(y, x, rtol=1e-3, atol=1e-4)
        epochs.append(len(b.history.validation_loss))
    assert len(set(epochs)) > 1 and min(epochs) < 40, epochs  # some stopped while others trained on
    chosen, reference = together.history.choices["members"], alone.history.choices["members"]
    assert chosen["chosen"] == reference["chosen"] and chosen["best_epochs"] == reference["best_epochs"]
    np.testing.assert_allclose(list(chosen["validation_loss"].values()), list(reference["validation_loss"].values()),
                               rtol=1e-4)


def test_history_describes_the_training_and_the_choices():
    """The line printed by the notebooks: epochs, seconds and best loss of the first network, and
    what fit chose, read from the history's own fields."""
    val = np.array([0.5, 0.3, 0.31])
    one = TrainHistory(np.zeros(3), val, 1, True, 12.34)
    assert one.describe() == "3 epochs in 12.3 s, best validation loss 0.3000 at epoch 1"
    members = {"chosen": 2, "reason": "r", "validation_loss": {"1": 0.3, "2": 0.2875, "3": 0.29},
               "seconds": [10.0, 11.0, 12.0], "best_epochs": [1, 2, 2]}
    quadratic = {"chosen": True, "reason": "r", "validation_loss": {"False": 0.32, "True": 0.3},
                 "seconds": {"False": 5.0, "True": 5.0}}
    several = one._replace(seconds=33.0, choices={"members": members, "quadratic": quadratic})
    assert several.describe() == ("3 networks in 33 s, kept the average of the first 2 (validation loss 0.2875); "
                                  "the first: 3 epochs, best validation loss 0.3000 at epoch 1; quadratic terms kept")
    alone = several._replace(choices={"members": members | {"chosen": 1},
                                      "quadratic": quadratic | {"chosen": False}})
    assert "kept the first alone (validation loss 0.3000)" in alone.describe()
    assert alone.describe().endswith("quadratic terms dropped")


def test_fit_chooses_the_number_of_networks_by_held_out_loss(small_bank):
    """By default fit trains several networks on one split (4 on a small bank) and keeps the first m
    whose averaged logit has the lowest held-out loss. The networks are those of num_members=4
    (the first is fit's single network) and the recorded losses those of the prefixes' ensembles,
    evaluated here on the same validation bank."""
    train_bank, held = split_bank(jax.random.PRNGKey(0), small_bank, 0.2)
    key, kwargs = jax.random.PRNGKey(7), dict(validation=held, max_epochs=4, quadratic=False, progress=False)
    one = fit(key, train_bank, num_members=1, **kwargs)
    four = fit(key, train_bank, num_members=4, **kwargs)
    assert isinstance(four.estimator, RatioEnsemble) and four.estimator.num_members == 4
    assert _same_params(four.estimator.member(0), one.estimator)
    assert not _same_params(four.estimator.member(1), one.estimator)  # its own initialisation and order
    prefix = lambda m: RatioEnsemble.stack([four.estimator.member(i) for i in range(m)])
    losses = [evaluate(one.estimator, held)] + [evaluate(prefix(m), held) for m in (2, 3, 4)]
    # averaging is never worse than the average member (the loss is convex in the logit)
    assert losses[3] <= np.mean([evaluate(four.estimator.member(i), held) for i in range(4)]) + 1e-6

    auto = fit(key, train_bank, **kwargs)
    record = auto.history.choices["members"]
    np.testing.assert_allclose([record["validation_loss"][str(m)] for m in (1, 2, 3, 4)], losses, rtol=1e-6)
    chosen = int(np.argmin(losses)) + 1
    assert record["chosen"] == chosen and len(record["seconds"]) == 4 and "trained 4" in record["reason"]
    kept = [auto.estimator] if chosen == 1 else [auto.estimator.member(i) for i in range(chosen)]
    assert all(_same_params(k, four.estimator.member(i)) for i, k in enumerate(kept))
    assert auto.history.seconds == pytest.approx(sum(record["seconds"]))


def test_fit_trains_as_many_networks_as_the_work_on_a_cpu_allows(small_bank, monkeypatch):
    """On a CPU fit trains another network while the epochs × training simulations of those so far,
    plus one more like the first, stay within AUTO_MEMBERS_WORK_CPU × max_epochs: the count follows
    the first network's epochs, counted here by hand from the history. A learned embedding trains
    one network; an accelerator 4 at any size. A number given is trained as asked, a bad one
    refused by name."""
    import aalr_jax.train as train

    def count(epochs, cap, most=4):  # the rule, by hand: network k+1 trains if (e_1 + ... + e_k + e_1) n <= cap
        k = 1
        while k < most and (sum(epochs[:k]) + epochs[0]) * 900 <= cap:
            k += 1
        return k

    key = jax.random.PRNGKey(8)
    auto = lambda **kw: fit(key, small_bank, quadratic=False, progress=False, **kw).history.choices["members"]
    # every network trains all 6 epochs: (6 + 6) x 900 = 10,800 and (12 + 6) x 900 = 16,200 against 6 x W
    for work, expected in ((1000, 1), (2000, 2), (3600, 4)):
        monkeypatch.setattr(train, "AUTO_MEMBERS_WORK_CPU", work)
        record = auto(max_epochs=6, patience=100)
        assert record["epochs"] == [6] * expected and len(record["validation_loss"]) == expected
        assert ("one network" if expected == 1 else f"trained {expected} networks") in record["reason"]
    # one budget, 1000 x 30 epochs: a first network that trains all 30 leaves no room for a second;
    # one that stops early (patience 1) leaves room for more
    monkeypatch.setattr(train, "AUTO_MEMBERS_WORK_CPU", 1000)
    full, early = auto(max_epochs=30, patience=100), auto(max_epochs=30, patience=1)
    assert full["epochs"] == [30] and "CPU" in full["reason"]
    assert early["epochs"][0] < 16 and len(early["epochs"]) == count(early["epochs"], 30_000) > 1
    given = fit(key, small_bank, max_epochs=30, patience=1, quadratic=False, num_members=len(early["epochs"]),
                progress=False)
    assert given.estimator.num_members == len(early["epochs"]) and given.history.choices is None
    assert train.member_candidates(3, 10**6) == (3, None, None)
    assert train.member_candidates(None, 1000, "cnn").most == 1  # a learned embedding costs many MLPs
    monkeypatch.setattr(train.jax, "default_backend", lambda: "gpu")
    assert train.member_candidates(None, 10**6).most == train.member_candidates(None, 10**6, "cnn").most == \
        train.AUTO_MEMBERS_MAX
    for bad in (0, 1.5, "2"):
        with pytest.raises((ValueError, TypeError), match="num_members"):
            fit(key, small_bank, num_members=bad, progress=False)
