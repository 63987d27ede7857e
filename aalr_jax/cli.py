"""Command-line interface: ``aalr-jax [run|simulate|train|sample|diagnose] ...`` (``python -m aalr_jax`` too).

``aalr-jax`` with no arguments runs the whole pipeline on the default task (two moons): simulate a
bank, train a ratio estimator, sample the posterior of the task's default observation, and write
``samples.npz``, ``estimator.npz``, ``corner.png`` and ``summary.json`` into ``aalr_output/``.
The steps also run one at a time through files: ``simulate`` → ``train`` → ``sample``.
``diagnose`` judges a saved estimator (expected coverage, SBC, the ROC diagnostic, the normalisation
check, and MCMC health and traces of a ``samples.npz``) and writes PNGs and ``diagnostics.json``.

Bad input (missing files, wrong observation shape, unknown task ...) is reported as
``aalr-jax: error: <message>`` on stderr with exit status 2, without a traceback.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import zipfile

import jax
import numpy as np

import aalr_jax
from aalr_jax import diagnostics, io, plotting, priors, tasks
from aalr_jax.data import load_bank, save_bank, simulate
from aalr_jax.store import is_store_path, load_bank as load_any_bank
from aalr_jax.sampling import METHODS, default_thin, resolve_independence, resolve_method, sample_posterior
from aalr_jax.train import DEFAULT_RATIO_WEIGHTING, fit, fit_ensemble

__all__ = ["build_parser", "load_observation", "main"]

PROG = "aalr-jax"
COMMANDS = ("run", "simulate", "train", "sample", "diagnose")
DEFAULT_TASK = "two_moons"
DEFAULT_OUTPUT = "aalr_output"
DEFAULT_DIAGNOSE_OUTPUT = "aalr_diagnostics"


# ----------------------------------------------------------------------------- argument groups


def _int_at_least(minimum: int, what: str):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum:
            raise argparse.ArgumentTypeError(f"expected a {what} integer, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")


def _in_unit_interval(what: str, include_one: bool = True):
    def parse(text: str) -> float:
        try:
            value = float(text)
        except ValueError:
            value = -1.0
        if not (0.0 <= value <= 1.0 if include_one else 0.0 <= value < 1.0):
            raise argparse.ArgumentTypeError(f"expected {what} in [0, {'1]' if include_one else '1)'}, got {text!r}")
        return value

    return parse


_probability = _in_unit_interval("a probability")
_exponent = _in_unit_interval("an exponent")
_decay = _in_unit_interval("a decay", include_one=False)


def _widths(text: str) -> tuple:
    try:
        return tuple(_positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        message = f"expected comma-separated positive widths such as 128,128,128, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _add_task(parser, *, default: str | None, help: str) -> None:
    parser.add_argument("--task", choices=tasks.names(), default=default, help=help)


def _add_simulation_options(group) -> None:
    group.add_argument("--num-simulations", type=_positive_int, default=20_000, metavar="N",
                       help="number of (θ, x) pairs drawn from the prior and the simulator (default: %(default)s)")


def _add_training_options(parser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--max-epochs", type=_positive_int, default=300, metavar="E",
                       help="upper bound on training epochs (default: %(default)s)")
    group.add_argument("--patience", type=_positive_int, default=50, metavar="P",
                       help="stop after this many epochs without a lower validation loss (default: %(default)s)")
    group.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                       help="simulations per minibatch (default: n_train // 16 clipped to [64, 512])")
    group.add_argument("--hidden", type=_widths, default=(128, 128, 128), metavar="W1,W2,...",
                       help="widths of the network's hidden layers (default: 128,128,128)")
    group.add_argument("--quadratic", action="store_true",
                       help="add learned quadratic terms in θ to the network's logit: they hold the θ-x coupling "
                            "of likelihoods that are near-Gaussian in θ, which the MLP alone flattens (default: off)")
    group.add_argument("--ensemble", type=_positive_int, default=1, metavar="M",
                       help="train M networks on one split and average their logits (default: %(default)s)")
    group.add_argument("--num-negatives", type=_positive_int, default=1, metavar="K",
                       help="independent θ per simulation in each training batch (default: %(default)s)")
    group.add_argument("--ratio-weighting", type=_exponent, default=DEFAULT_RATIO_WEIGHTING, metavar="ALPHA",
                       help="weight each training pair's loss by (1 + r)^ALPHA, r the current ratio estimate: "
                            "it sharpens posteriors much narrower than the prior; 0 is the plain AALR loss "
                            "(default: %(default)s)")
    group.add_argument("--ema-decay", type=_decay, default=None, metavar="BETA",
                       help="validate and keep the moving average of the parameters over the optimizer's "
                            "steps, a <- BETA*a + (1-BETA)*params; 0 keeps the iterates (default: 0.999, "
                            "about the last 1,000 steps, or a tenth of a shorter schedule)")


def _add_sampling_options(parser) -> None:
    group = parser.add_argument_group("posterior sampling")
    group.add_argument("--observation", metavar="FILE",
                       help="observed data: .npy, .npz (array 'x_obs', else the first array) or .csv "
                            "(comma-separated numbers); default: the task's default observation")
    group.add_argument("--iid", action="store_true",
                       help="the observation holds n i.i.d. draws of one θ, shape (n, *x_shape): "
                            "their log-ratios are summed")
    group.add_argument("--method", choices=METHODS, default="auto",
                       help="MCMC kernel: random-walk Metropolis-Hastings, HMC or NUTS; auto: rwmh up to "
                            "4 parameters, hmc beyond (default: %(default)s)")
    group.add_argument("--num-samples", type=_positive_int, default=10_000, metavar="S",
                       help="posterior draws to keep (default: %(default)s)")
    group.add_argument("--num-chains", type=_positive_int, default=100, metavar="C",
                       help="independent MCMC chains (default: %(default)s)")
    group.add_argument("--num-warmup", type=_non_negative_int, default=500, metavar="W",
                       help="adaptation steps per chain, discarded (default: %(default)s)")
    group.add_argument("--thin", type=_positive_int, default=None, metavar="K",
                       help="keep every K-th MCMC step after warm-up (default: 5 for rwmh with independence "
                            "moves, 10 without, 3 for hmc, 1 for nuts)")
    group.add_argument("--independence-prob", type=_probability, default=None, metavar="P",
                       help="rwmh only: probability of an independence move, proposed from a kernel density of "
                            "all chains' warm-up positions; 0 for the plain random walk (default: 0.9 up to 4 "
                            "parameters, else 0)")


def _add_common_options(parser) -> None:
    parser.add_argument("--seed", type=int, default=0, help="seed of the PRNG key (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Amortized approximate likelihood ratio (AALR) inference in JAX. "
                    "Without a command, runs 'run' with its defaults.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {aalr_jax.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,simulate,train,sample,diagnose}")

    run = sub.add_parser("run", help="simulate, train and sample in one go (the default)",
                         description="Simulate a bank, train a ratio estimator and sample the posterior of an "
                                     "observation; writes samples.npz, estimator.npz, corner.png and summary.json.")
    _add_task(run, default=DEFAULT_TASK, help="built-in task (default: %(default)s)")
    _add_simulation_options(run.add_argument_group("simulation"))
    _add_training_options(run)
    _add_sampling_options(run)
    run.add_argument("--output", default=DEFAULT_OUTPUT, metavar="DIR",
                     help="folder for the outputs, created if needed (default: %(default)s)")
    _add_common_options(run)
    run.set_defaults(handler=_cmd_run)

    simulate_ = sub.add_parser("simulate", help="draw a simulation bank and save it (.npz)",
                               description="Draw θ from the task's prior and x from its simulator; "
                                           "save the bank as .npz.")
    _add_task(simulate_, default=DEFAULT_TASK, help="built-in task (default: %(default)s)")
    _add_simulation_options(simulate_)
    simulate_.add_argument("--output", metavar="BANK.npz", help="file to write the bank to (or --store)")
    _add_cluster_options(simulate_)
    _add_common_options(simulate_)
    simulate_.set_defaults(handler=_cmd_simulate)

    train = sub.add_parser("train", help="train a ratio estimator on a saved bank",
                           description="Train a ratio estimator on a bank written by 'simulate' and save it.")
    train.add_argument("--bank", required=True, metavar="BANK.npz|BANK.zarr",
                       help="simulation bank written by 'simulate' (a .zarr store streams its minibatches)")
    train.add_argument("--output", required=True, metavar="ESTIMATOR.npz", help="file to write the estimator to")
    _add_task(train, default=None,
              help="task the bank was simulated from; checked against the bank and stored in the estimator's "
                   "metadata so that 'sample' finds it")
    _add_training_options(train)
    _add_common_options(train)
    train.set_defaults(handler=_cmd_train)

    sample = sub.add_parser("sample", help="sample the posterior of an observation with a saved estimator",
                            description="Sample the posterior of an observation with an estimator written by "
                                        "'train' or 'run'; writes samples.npz, corner.png and summary.json.")
    sample.add_argument("--estimator", required=True, metavar="ESTIMATOR.npz",
                        help="estimator written by 'train' or 'run'")
    _add_task(sample, default=None, help="task (prior, labels, default observation); default: the estimator's metadata")
    _add_sampling_options(sample)
    sample.add_argument("--output", required=True, metavar="DIR", help="folder for the outputs, created if needed")
    _add_common_options(sample)
    sample.set_defaults(handler=_cmd_sample)

    diagnose = sub.add_parser(
        "diagnose", help="judge a saved estimator: coverage, SBC, ROC, normalisation, MCMC health",
        description="Expected HPD coverage and SBC over (θ*, x) pairs from the task's joint (one batched "
                    "sampling run), the paper's ROC diagnostic, the normalisation check E_p(θ)[r̂(x|θ)] = 1, "
                    "and, with --samples, MCMC health and trace plots of a 'sample' run. Writes coverage.png, "
                    "sbc.png, roc.png, traces.png and diagnostics.json.")
    diagnose.add_argument("--estimator", required=True, metavar="ESTIMATOR.npz",
                          help="estimator written by 'train' or 'run'")
    _add_task(diagnose, default=None, help="task (prior and simulator); default: the estimator's metadata")
    diagnose.add_argument("--num-pairs", type=_positive_int, default=200, metavar="N",
                          help="(θ*, x) pairs from the joint for coverage and SBC (default: %(default)s)")
    diagnose.add_argument("--samples", metavar="SAMPLES.npz",
                          help="samples.npz written by 'sample' or 'run': MCMC health and trace plots")
    group = diagnose.add_argument_group("posterior sampling of the pairs")
    group.add_argument("--method", choices=METHODS, default="auto",
                       help="MCMC kernel; auto: rwmh up to 4 parameters, hmc beyond (default: %(default)s)")
    group.add_argument("--num-samples", type=_positive_int, default=1000, metavar="S",
                       help="posterior draws per pair (default: %(default)s)")
    group.add_argument("--num-chains", type=_positive_int, default=10, metavar="C",
                       help="chains per pair (default: %(default)s)")
    group.add_argument("--num-warmup", type=_non_negative_int, default=300, metavar="W",
                       help="adaptation steps per chain (default: %(default)s)")
    group = diagnose.add_argument_group("ROC diagnostic")
    group.add_argument("--num-roc-thetas", type=_positive_int, default=3, metavar="T",
                       help="test parameters: the task's true θ and T-1 prior draws (default: %(default)s)")
    group.add_argument("--roc-samples", type=_int_at_least(4, "at least 4"), default=4096, metavar="M",
                       help="simulations per class and test parameter, half held out (default: %(default)s)")
    group.add_argument("--roc-epochs", type=_positive_int, default=1000, metavar="E",
                       help="full-batch Adam steps of the ROC classifier, an MLP 64x64 (default: %(default)s)")
    diagnose.add_argument("--output", default=DEFAULT_DIAGNOSE_OUTPUT, metavar="DIR",
                          help="folder for the outputs, created if needed (default: %(default)s)")
    _add_common_options(diagnose)
    diagnose.set_defaults(handler=_cmd_diagnose)
    return parser


# ----------------------------------------------------------------------------- helpers


def _key(args, phase: str) -> jax.Array:
    """The PRNG key of a phase; the same in 'run' and in the separate commands, so they agree."""
    phases = ("simulate", "train", "sample", "diagnose")
    return jax.random.fold_in(jax.random.PRNGKey(args.seed), phases.index(phase))


def _say(args, message: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


@contextlib.contextmanager
def _phase(args, timings: dict, name: str, message: str):
    """Time a phase into ``timings[name]`` (seconds) and report it on stderr."""
    _say(args, f"{message} ...")
    start = time.perf_counter()
    yield
    timings[name] = time.perf_counter() - start
    _say(args, f"{name} done in {timings[name]:.1f} s")


def _require_file(path: str, what: str) -> None:
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{what} file not found: {path}")


def load_observation(path: str) -> np.ndarray:
    """An observation from ``.npy``, ``.npz`` (key ``x_obs``, else the first array) or ``.csv``."""
    _require_file(path, "observation")
    ext = os.path.splitext(path)[1].lower()
    try:
        if ext == ".npy":
            x = np.load(path, allow_pickle=False)
        elif ext == ".npz":
            with np.load(path, allow_pickle=False) as data:
                if not data.files:
                    raise ValueError("the archive holds no array")
                x = data["x_obs" if "x_obs" in data.files else data.files[0]]
        elif ext == ".csv":
            x = np.loadtxt(path, delimiter=",", dtype=np.float64)
        else:
            raise ValueError("unsupported extension; use .npy, .npz or .csv")
        x = np.asarray(x, dtype=np.float32)
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read observation {path}: {err}") from None
    if not np.isfinite(x).all():
        raise ValueError(f"observation {path} contains non-finite values")
    return x


def _observation(args, task, x_shape: tuple) -> tuple[np.ndarray, bool]:
    """``(x_obs, is_default)``: the observation to condition on, checked against ``x_shape``."""
    x_shape = tuple(x_shape)
    is_default = args.observation is None
    if is_default:
        x, source = np.asarray(task.default_observation, np.float32), f"the default observation of {task.name}"
    else:
        x, source = load_observation(args.observation), f"observation {args.observation}"
    if args.iid:  # (n, *x_shape); one observation counts as n = 1
        x = x[None] if x.shape == x_shape else x
        ok = x.ndim == len(x_shape) + 1 and x.shape[1:] == x_shape
        expected = f"(n, {', '.join(map(str, x_shape))}) with --iid"
    else:  # x_shape; a leading axis of length 1 is dropped
        x = x[0] if x.shape == (1,) + x_shape else x
        ok, expected = x.shape == x_shape, f"{x_shape}"
    if not ok:
        hint = ""
        if not args.iid and x.ndim == len(x_shape) + 1 and x.shape[1:] == x_shape:
            hint = f"; to condition on these {x.shape[0]} observations as one i.i.d. set, pass --iid"
        raise ValueError(f"{source} has shape {x.shape}, but task {task.name} expects {expected}{hint}")
    return x, is_default


def _check_compatible(task, theta_dim: int, x_shape: tuple, what: str) -> None:
    if theta_dim != task.theta_dim or tuple(x_shape) != tuple(task.x_shape):
        raise ValueError(
            f"{what} has θ of dimension {theta_dim} and x of shape {tuple(x_shape)}, but task {task.name} has "
            f"θ of dimension {task.theta_dim} and x of shape {tuple(task.x_shape)}"
        )


def _json_number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _training_record(history) -> dict:
    return {
        "epochs": int(len(history.train_loss)),
        "best_epoch": int(history.best_epoch),
        "best_validation_loss": _json_number(history.validation_loss[history.best_epoch]),
        "stopped_early": bool(history.stopped_early),
    }


def _train(args, bank, task_name, timings) -> tuple:
    """Fit an estimator and build its metadata."""
    with _phase(args, timings, "train", f"training on {bank.num_simulations} simulations"):
        options = dict(hidden_features=args.hidden, batch_size=args.batch_size, max_epochs=args.max_epochs,
                       patience=args.patience, num_negatives=args.num_negatives,
                       ratio_weighting=args.ratio_weighting, ema_decay=args.ema_decay, quadratic=args.quadratic,
                       progress=not args.quiet)
        if args.ensemble == 1:
            result = fit(_key(args, "train"), bank, **options)
            histories = [result.history]
            training = _training_record(result.history)
        else:
            result = fit_ensemble(_key(args, "train"), bank, args.ensemble, **options)
            histories = result.histories
            training = {"num_members": args.ensemble, "validation_loss": _json_number(result.validation_loss),
                        "members": [_training_record(h) for h in result.histories]}
        jax.block_until_ready(result.estimator)
    training["num_negatives"] = args.num_negatives
    training["ratio_weighting"] = args.ratio_weighting
    training["ema_decay"] = histories[0].ema_decay  # the β used (fit's default when not given)
    training["quadratic"] = args.quadratic
    metadata = {"task": task_name, "num_simulations": bank.num_simulations, "seed": args.seed, "training": training}
    return result.estimator, metadata


def _sample_and_write(args, task, estimator, x_obs, is_default, timings, extra: dict, start: float) -> dict:
    """Sample the posterior of ``x_obs``; write samples.npz, corner.png and summary.json to ``args.output``."""
    key_sample, key_reference = jax.random.split(_key(args, "sample"))
    method = resolve_method(args.method, task.theta_dim)
    independence_prob = resolve_independence(method, task.theta_dim, args.independence_prob)
    message = f"sampling {args.num_samples} draws with {method} ({args.num_chains} chains)"
    with _phase(args, timings, "sample", message):
        post = sample_posterior(key_sample, estimator, task.prior, x_obs, method=method,
                                num_samples=args.num_samples, num_chains=args.num_chains,
                                num_warmup=args.num_warmup, thin=args.thin, iid=args.iid,
                                independence_prob=independence_prob)
        post = jax.tree.map(np.asarray, post)

    reference = None
    if task.reference_posterior is not None and (not args.iid or x_obs.shape[0] == 1):
        with _phase(args, timings, "reference", "drawing reference posterior samples"):
            try:
                x_ref = x_obs[0] if args.iid else x_obs
                reference = np.asarray(task.reference_posterior(key_reference, x_ref, args.num_samples))
            except Exception as err:  # a reference is a bonus: never fail the run for it
                _say(args, f"warning: no reference posterior ({err})")

    os.makedirs(args.output, exist_ok=True)
    with _phase(args, timings, "write", "writing outputs"):
        np.savez(os.path.join(args.output, "samples.npz"), samples=post.samples, chains=post.chains,
                 acceptance_rate=post.acceptance_rate, rhat=post.rhat, ess=post.ess, x_obs=x_obs,
                 num_divergent=post.num_divergent, step_size=post.step_size)
        labels = list(task.parameter_labels)
        fig = plotting.corner(post.samples, labels=labels, truth=task.true_theta if is_default else None,
                              reference=reference, title=f"{task.name}: {method}, {len(post.samples)} samples")
        plotting.save_figure(fig, os.path.join(args.output, "corner.png"))
    timings["total"] = time.perf_counter() - start

    # mode-aware health: chains never jump between separated modes, so across-chain R-hat alone misleads
    draws = post.chains.shape[-2]
    health = None
    if draws >= diagnostics.mcmc.MIN_DRAWS:
        report = diagnostics.mcmc_report(post, labels=list(task.parameter_labels))
        health = _report_record(report)
        for problem in report.warnings:
            _say(args, f"warning: {problem}")
    else:
        _say(args, f"warning: {draws} draw(s) per chain: no MCMC health report (it needs at least "
                   f"{diagnostics.mcmc.MIN_DRAWS}; "
                   "use fewer chains or more samples)")
    mean, std = post.samples.mean(0), post.samples.std(0)
    summary = {
        "task": task.name,
        **extra,
        "method": method,
        "seed": args.seed,
        "observation": args.observation or "default",
        "iid": bool(args.iid),
        "sampler": {"num_samples": args.num_samples, "num_chains": args.num_chains,
                    "num_warmup": args.num_warmup,
                    "thin": args.thin if args.thin is not None else default_thin(method, independence_prob),
                    "independence_prob": independence_prob},
        "timings": {name: round(seconds, 3) for name, seconds in timings.items()},
        "posterior": {
            label: {"mean": _json_number(m), "std": _json_number(s)} for label, m, s in zip(labels, mean, std)
        },
        "diagnostics": health,
        "reference_posterior": reference is not None,
        "versions": {"aalr_jax": aalr_jax.__version__, "jax": jax.__version__},
        "device": jax.devices()[0].platform,
    }
    with open(os.path.join(args.output, "summary.json"), "w") as f:
        json.dump(summary, f, indent=2)
        f.write("\n")
    return summary


def _print_result(summary: dict, output: str) -> None:
    posterior = summary["posterior"]
    means = ", ".join(f"{k}={v['mean']:.3g}±{v['std']:.2g}" for k, v in posterior.items())
    means = f" {means}" if len(posterior) <= 4 else ""
    print(f"{PROG}: {summary['task']} posterior{means} in {summary['timings']['total']:.1f} s; "
          f"outputs in {os.path.abspath(output)}")


# ----------------------------------------------------------------------------- commands


def _cmd_run(args) -> int:
    start, timings = time.perf_counter(), {}
    task = tasks.get(args.task)
    x_obs, is_default = _observation(args, task, task.x_shape)  # before any expensive work
    os.makedirs(args.output, exist_ok=True)
    with _phase(args, timings, "simulate", f"simulating {args.num_simulations} {task.name} simulations"):
        bank = simulate(_key(args, "simulate"), task, args.num_simulations, progress=not args.quiet)
        jax.block_until_ready(bank)
    estimator, metadata = _train(args, bank, task.name, timings)
    io.save_estimator(os.path.join(args.output, "estimator.npz"), estimator, metadata=metadata)
    extra = {"budget": args.num_simulations, "training": metadata["training"]}
    summary = _sample_and_write(args, task, estimator, x_obs, is_default, timings, extra, start)
    _print_result(summary, args.output)
    return 0


def _cmd_simulate(args) -> int:
    task, timings = tasks.get(args.task), {}
    if args.store or args.scheduler or args.workers:
        return _simulate_on_cluster(args, task)
    if args.output is None:
        raise ValueError("simulate needs --output BANK.npz or --store BANK.zarr")
    with _phase(args, timings, "simulate", f"simulating {args.num_simulations} {task.name} simulations"):
        bank = simulate(_key(args, "simulate"), task, args.num_simulations, progress=not args.quiet)
        save_bank(args.output, bank)
    print(f"{PROG}: wrote {bank.num_simulations} simulations to {os.path.abspath(args.output)}")
    return 0


def _cmd_train(args) -> int:
    if is_store_path(args.bank):
        bank = load_any_bank(args.bank)  # a Zarr store, read lazily
    else:
        _require_file(args.bank, "bank")
        bank = load_bank(args.bank)
    if args.task is not None:
        _check_compatible(tasks.get(args.task), bank.theta.shape[1], bank.x.shape[1:], f"bank {args.bank}")
    estimator, metadata = _train(args, bank, args.task, {})
    io.save_estimator(args.output, estimator, metadata=metadata)
    t = metadata["training"]
    if "members" in t:
        epochs = ", ".join(str(m["epochs"]) for m in t["members"])
        done = f"trained {t['num_members']} members ({epochs} epochs), ensemble validation loss {t['validation_loss']:.4f}"
    else:
        done = f"trained {t['epochs']} epochs (best {t['best_epoch']}, validation loss {t['best_validation_loss']:.4f})"
    print(f"{PROG}: {done}; wrote {os.path.abspath(args.output)}")
    return 0


def _estimator_and_task(args) -> tuple:
    """``(estimator, task, metadata)`` from ``--estimator`` and ``--task`` (or the estimator's metadata)."""
    _require_file(args.estimator, "estimator")
    metadata = io.load_metadata(args.estimator).get("metadata") or {}
    name = args.task or metadata.get("task")
    if name is None:
        raise ValueError(f"estimator {args.estimator} does not name its task; pass --task ({', '.join(tasks.names())})")
    task = tasks.get(name)
    estimator = io.load_estimator(args.estimator)
    _check_compatible(task, estimator.theta_dim, estimator.x_shape, f"estimator {args.estimator}")
    return estimator, task, metadata


def _cmd_sample(args) -> int:
    start, timings = time.perf_counter(), {}
    estimator, task, metadata = _estimator_and_task(args)
    x_obs, is_default = _observation(args, task, estimator.x_shape)
    extra = {"budget": metadata.get("num_simulations"), "training": metadata.get("training"),
             "estimator": os.path.abspath(args.estimator)}
    summary = _sample_and_write(args, task, estimator, x_obs, is_default, timings, extra, start)
    _print_result(summary, args.output)
    return 0


def _load_samples(path: str, theta_dim: int) -> dict:
    """Chains ``(C, S, d)`` and per-chain statistics of a samples.npz written by 'sample' or 'run'."""
    _require_file(path, "samples")
    try:
        with np.load(path, allow_pickle=False) as data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (ValueError, OSError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read samples {path}: {err}") from None
    chains = arrays.get("chains")
    if chains is None or chains.ndim != 3 or chains.shape[2] != theta_dim or chains.shape[1] < 4:
        shape = None if chains is None else chains.shape
        raise ValueError(f"samples {path} must hold 'chains' of shape (C, S >= 4, {theta_dim}) as written by "
                         f"'sample', got {shape}")
    if not np.isfinite(chains).all():
        raise ValueError(f"samples {path} contain non-finite chains")
    return {"chains": chains, "acceptance_rate": arrays.get("acceptance_rate"),
            "num_divergent": arrays.get("num_divergent")}


def _numbers(values) -> list:
    return [_json_number(v) for v in np.ravel(values)]


def _report_record(report) -> dict:
    return {
        "rhat": _numbers(report.rhat), "ess_bulk": _numbers(report.ess_bulk), "ess_tail": _numbers(report.ess_tail),
        "num_modes": report.num_modes, "chains_per_mode": [int(c) for c in report.mode_chains],
        "within_mode_rhat": _numbers(report.mode_rhat), "within_mode_ess_bulk": _numbers(report.mode_ess_bulk),
        "within_mode_ess_tail": _numbers(report.mode_ess_tail),
        "mean_acceptance": _json_number(np.nanmean(report.acceptance_rate))
        if np.isfinite(report.acceptance_rate).any() else None,
        "num_divergent": report.num_divergent, "num_stuck": int(report.stuck.sum()),
        "warnings": list(report.warnings), "notes": list(report.notes),
    }


def _cmd_diagnose(args) -> int:
    start, timings = time.perf_counter(), {}
    estimator, task, metadata = _estimator_and_task(args)
    loaded = _load_samples(args.samples, task.theta_dim) if args.samples else None  # fail before any work
    labels = list(task.parameter_labels)
    key_pairs, key_sample, key_roc, key_norm = jax.random.split(_key(args, "diagnose"), 4)
    record = {"task": task.name, "estimator": os.path.abspath(args.estimator), "seed": args.seed,
              "budget": metadata.get("num_simulations")}
    os.makedirs(args.output, exist_ok=True)
    figures = {}

    n, method = args.num_pairs, resolve_method(args.method, task.theta_dim)
    with _phase(args, timings, "coverage", f"sampling the posteriors of {n} pairs ({method}, "
                                           f"{args.num_chains} chains each)"):
        bank = simulate(key_pairs, task, n, progress=False)
        post = sample_posterior(key_sample, estimator, task.prior, bank.x, method=method,
                                num_samples=args.num_samples, num_chains=args.num_chains,
                                num_warmup=args.num_warmup)
        credibility = diagnostics.sample_credibility(estimator, task.prior, bank.x, bank.theta, post.samples)
        coverage = diagnostics.coverage_from_credibility(credibility)
        num_draws = min(args.num_samples, 100)
        sbc = diagnostics.sbc(np.asarray(bank.theta), np.asarray(post.samples), num_draws=num_draws)
        health = diagnostics.mcmc_report(post, labels=labels, rank_normalized=False)
    as_record = lambda c: {"levels": _numbers(c.levels), "coverage": _numbers(c.coverage),
                           "lower": _numbers(c.lower), "upper": _numbers(c.upper), "verdict": c.verdict,
                           "conservative": c.conservative, "confidence": c.confidence}
    record["pairs"] = {"num_pairs": n, "sampler": {"method": method, "num_samples": args.num_samples,
                                                    "num_chains": args.num_chains, "num_warmup": args.num_warmup}}
    record["coverage"] = as_record(coverage)
    record["sbc"] = {"num_draws": num_draws, "chi2_pvalue": _numbers(sbc.chi2_pvalue),
                     "ks_pvalue": _numbers(sbc.ks_pvalue), "dispersion": _numbers(sbc.dispersion),
                     "uniform": sbc.uniform, "labels": labels}
    record["mcmc_pairs"] = {
        "observations_with_warnings": int(sum(not r.ok for r in health)),
        "median_max_rhat": _json_number(np.median([np.nanmax(r.rhat) for r in health])),
        "median_max_within_mode_rhat": _json_number(np.median([np.nanmax(r.mode_rhat) for r in health])),
        "observations_by_num_modes": {str(m): int(c) for m, c in zip(*np.unique([r.num_modes for r in health],
                                                                                 return_counts=True))},
    }
    figures["coverage.png"] = plotting.coverage_plot(coverage, title=f"{task.name}: expected HPD coverage, "
                                                                     f"{coverage.verdict} ({n} pairs)")
    figures["sbc.png"] = plotting.sbc_plot(sbc, labels=labels, title=f"{task.name}: SBC ranks ({n} pairs)")

    if task.theta_dim <= 2 and priors.box_bounds(task.prior.support) is not None:
        with _phase(args, timings, "coverage_grid", "expected coverage by grid integration"):
            grid = diagnostics.grid_credibility(estimator, task.prior, bank.x, bank.theta)
            record["coverage_grid"] = as_record(diagnostics.coverage_from_credibility(grid))

    with _phase(args, timings, "roc", f"ROC diagnostic at {args.num_roc_thetas} parameters"):
        extra = np.asarray(task.prior.sample(key_roc, (args.num_roc_thetas - 1,)))
        theta = np.concatenate([np.asarray(task.true_theta, np.float32)[None], extra])
        roc = diagnostics.roc_diagnostic(key_roc, estimator, task, theta, num_samples=args.roc_samples,
                                        num_epochs=args.roc_epochs)
    record["roc"] = {"theta": np.asarray(roc.theta).tolist(), "auc": _numbers(roc.auc),
                     "auc_std": _numbers(roc.auc_std), "weight_ess": _numbers(roc.weight_ess),
                     "classifier": {"hidden_features": list(roc.hidden_features), "num_epochs": roc.num_epochs,
                                    "num_train_per_class": roc.num_train, "num_test_per_class": roc.num_test}}
    figures["roc.png"] = plotting.roc_plot(roc)

    with _phase(args, timings, "normalization", "normalisation check"):
        x_check = np.concatenate([np.asarray(task.default_observation, np.float32)[None], np.asarray(bank.x[:9])])
        norm = diagnostics.normalization_check(key_norm, estimator, task.prior, x_check)
    record["normalization"] = {"observations": "default observation, then the first pairs' x",
                               "mean": _numbers(norm.mean), "stderr": _numbers(norm.stderr),
                               "num_prior_samples": norm.num_samples}

    if loaded is not None:
        with _phase(args, timings, "mcmc", f"MCMC health of {args.samples}"):
            report = diagnostics.mcmc_report(loaded["chains"], acceptance_rate=loaded["acceptance_rate"],
                                             num_divergent=loaded["num_divergent"], labels=labels)
        record["mcmc_samples"] = {"file": os.path.abspath(args.samples), **_report_record(report)}
        figures["traces.png"] = plotting.trace_plot(loaded["chains"], labels=labels, mode_labels=report.mode_labels,
                                                    title=f"{task.name}: traces of {args.samples}")
        for message in report.warnings:
            _say(args, f"warning: {message}")

    with _phase(args, timings, "write", "writing outputs"):
        for name, fig in figures.items():
            plotting.save_figure(fig, os.path.join(args.output, name))
    timings["total"] = time.perf_counter() - start
    record["timings"] = {name: round(seconds, 3) for name, seconds in timings.items()}
    record["versions"] = {"aalr_jax": aalr_jax.__version__, "jax": jax.__version__}
    record["device"] = jax.devices()[0].platform
    with open(os.path.join(args.output, "diagnostics.json"), "w") as f:
        json.dump(record, f, indent=2)
        f.write("\n")
    aucs = ", ".join(f"{a:.3f}±{s:.3f}" for a, s in zip(roc.auc, roc.auc_std))
    print(f"{PROG}: {task.name}: coverage {coverage.verdict}, SBC {'uniform' if sbc.uniform else 'not uniform'}, "
          f"ROC AUC {aucs}, E[r̂] {norm.mean[0]:.3f}±{norm.stderr[0]:.3f}; outputs in {os.path.abspath(args.output)}")
    return 0


# ----------------------------------------------------------------------------- clusters and stores


def _add_cluster_options(parser) -> None:
    group = parser.add_argument_group("cluster and store (aalr_jax.distributed)")
    group.add_argument("--store", metavar="BANK.zarr",
                       help="write the bank chunk by chunk to a Zarr store; the same command resumes an interrupted run")
    group.add_argument("--scheduler", metavar="ADDRESS",
                       help="Dask scheduler to run the simulations on, e.g. tcp://host:8786 (default: a local cluster)")
    group.add_argument("--workers", type=_positive_int, default=None, metavar="N",
                       help="worker processes of the local Dask cluster (default: the machine's cores)")
    group.add_argument("--chunk-size", type=_positive_int, default=None, metavar="C",
                       help="simulations per Dask task and per Zarr chunk (default: chosen from n and the workers)")


def _simulate_on_cluster(args, task) -> int:
    """``simulate`` on Dask (a LocalCluster or ``--scheduler``), into ``--store`` and/or ``--output``."""
    if args.scheduler and args.workers:
        raise ValueError("--workers sizes a local cluster; with --scheduler the cluster has its own workers")
    if not (args.store or args.output):
        raise ValueError("simulate needs --output BANK.npz or --store BANK.zarr")
    if args.store and not is_store_path(args.store):
        raise ValueError(f"--store expects a path ending in .zarr, got {args.store!r}")
    bank = simulate(_key(args, "simulate"), task, args.num_simulations, backend="dask", store=args.store,
                    client=args.scheduler, workers=args.workers, chunk_size=args.chunk_size,
                    progress=not args.quiet)
    if args.output:
        save_bank(args.output, bank.to_memory() if args.store else bank)
    where = ", ".join(os.path.abspath(p) for p in (args.store, args.output) if p)
    print(f"{PROG}: wrote {bank.num_simulations} simulations to {where}")
    return 0


# ----------------------------------------------------------------------------- entry point


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status."""
    argv = list(sys.argv[1:] if argv is None else argv)
    if not argv or (argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version")):
        argv = ["run"] + argv  # `aalr-jax` and `aalr-jax --task slcp` mean `aalr-jax run ...`
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors (argparse already printed)
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    try:
        return args.handler(args)
    except KeyError as err:
        message = err.args[0] if err.args else repr(err)
    except (ValueError, TypeError, OSError) as err:
        message = str(err)
    print(f"{PROG}: error: {message}", file=sys.stderr)
    return 2


if __name__ == "__main__":
    raise SystemExit(main())
