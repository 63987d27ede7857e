"""Command-line interface: ``aalr-jax [run|simulate|train|sample|diagnose] ...`` (``python -m aalr_jax`` too).

``aalr-jax run`` runs the whole pipeline on a task (default: two moons): simulate a bank, train a
ratio estimator, sample the posterior of the task's default observation, and write
``estimator.npz``, ``samples.npz``, ``corner.png`` and ``summary.json`` into the ``--output``
folder. The steps also run one at a time through files: ``simulate`` writes ``FOLDER/bank.npz``,
``train`` ``FOLDER/estimator.npz``, ``sample`` the samples, plot and summary; ``diagnose`` judges an
estimator (expected coverage, SBC, the ROC diagnostic, the normalisation check, and MCMC health and
traces of a ``samples.npz``), states each verdict with its evidence and power, and writes PNGs and
``diagnostics.json``. ``--output`` names a folder for every command. Banks and estimators record
their task and prior, so ``train`` and ``sample`` need no ``--task``; ``--bank`` and ``--estimator``
take the file or the folder that holds it. Bare ``aalr-jax`` prints this help.

Every command checks all its options, inputs and output paths (creating the output folder, and
refusing a folder that holds another task's results unless ``--overwrite``) before any simulation,
training or sampling starts. Failures are one line, ``aalr-jax: error: <message>`` on stderr,
without a traceback (``--debug`` shows it): exit status 2 for usage errors (bad options, inputs or
output paths, found before any work), 1 for failures during the work. Outputs are written
atomically (:mod:`aalr_jax.files`). An observation outside the estimator's training data
(:mod:`aalr_jax.ood`) is warned about and recorded as ``outside_training`` in ``summary.json``.

``simulate``, ``train`` and ``sample`` also run as one command in several processes (hosts):
``--coordinator HOST:PORT``, ``--num-processes N`` and ``--process-id I`` (or the variables
``AALR_JAX_COORDINATOR``, ``AALR_JAX_NUM_PROCESSES``, ``AALR_JAX_PROCESS_ID``) start
``jax.distributed`` before any JAX work (:func:`aalr_jax.sharding.initialize_distributed`). Process
``I`` of ``N`` takes the contiguous share ``[I·n/N, (I+1)·n/N)`` of the work
(:func:`aalr_jax.sharding.process_rows`; ``n`` must be a multiple of ``N``): ``simulate`` draws its
share of ``--num-simulations`` with its own key (the phase's key folded with ``I``) and writes
``bank.process-I-of-N.npz``; ``train`` passes its rows of the bank (that part file when the
``--bank`` folder holds it, else its rows of the whole bank) to ``fit`` and only process 0 writes
``estimator.npz``; ``sample`` runs its share of ``--num-chains`` and ``--num-samples`` with its own
key and writes ``samples``, ``corner`` and ``summary`` named ``NAME.process-I-of-N.EXT``: every
part is a posterior sample of the same observation from independent chains, and together they hold
the requested chains and draws. Nothing is gathered across processes. ``run`` and ``diagnose`` run
in one process.

JAX and the numerical modules are imported only when a command runs, so ``--help`` is immediate.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import sys
import time
import traceback
import warnings

__all__ = ["UsageError", "build_parser", "load_observation", "main"]

PROG = "aalr-jax"
COMMANDS = ("run", "simulate", "train", "sample", "diagnose")
DEFAULT_TASK = "two_moons"
DEFAULT_OUTPUT = "aalr_output"
DEFAULT_DIAGNOSE_OUTPUT = "aalr_diagnostics"
#: aalr_jax.sampling.METHODS and the keys of aalr_jax.nn.EMBEDDINGS, spelled out so that building
#: the parser imports no JAX (tests check them against those modules).
METHODS = ("auto", "rwmh", "hmc", "nuts")
EMBEDDINGS = ("flatten", "cnn", "resnet", "conv1d", "resnet1d")
MAX_SEED = 2**32 - 1  # PRNGKey keeps 32 bits of a seed: larger ones would collide
BANK_FILE, ESTIMATOR_FILE = "bank.npz", "estimator.npz"
SAMPLES_FILE, SUMMARY_FILE, CORNER_FILE = "samples.npz", "summary.json", "corner.png"
DIAGNOSTICS_FILE = "diagnostics.json"
RESULT_FILES = (BANK_FILE, ESTIMATOR_FILE, SUMMARY_FILE, DIAGNOSTICS_FILE)  # files that name their task
FILE_EXTENSIONS = (".npz", ".npy", ".json", ".png", ".pdf", ".csv")
PROCESS_COMMANDS = ("simulate", "train", "sample")  # the commands that split their work over processes
PROCESS_VARIABLES = {"coordinator": "AALR_JAX_COORDINATOR", "num_processes": "AALR_JAX_NUM_PROCESSES",
                     "process_id": "AALR_JAX_PROCESS_ID"}  # read by aalr_jax.sharding.initialize_distributed


class UsageError(ValueError):
    """A bad option, input or output path, found before any work (exit status 2)."""


# ----------------------------------------------------------------------------- argument types


def _int_at_least(minimum: int, what: str, maximum: int | None = None):
    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            value = minimum - 1
        if value < minimum or (maximum is not None and value > maximum):
            bound = "" if maximum is None else f" up to {maximum}"
            raise argparse.ArgumentTypeError(f"expected a {what} integer{bound}, got {text!r}")
        return value

    return parse


_positive_int = _int_at_least(1, "positive")
_non_negative_int = _int_at_least(0, "non-negative")
_seed = _int_at_least(0, "non-negative", MAX_SEED)


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


def _seconds(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        value = -1.0
    if not (value > 0 and math.isfinite(value)):
        raise argparse.ArgumentTypeError(f"expected a positive number of seconds, got {text!r}")
    return value


def _widths(text: str) -> tuple:
    try:
        return tuple(_positive_int(part) for part in text.split(","))
    except argparse.ArgumentTypeError:
        message = f"expected comma-separated positive widths such as 128,128,128, got {text!r}"
        raise argparse.ArgumentTypeError(message) from None


def _task_names() -> list:
    from aalr_jax import tasks  # the registry imports no JAX

    return tasks.names()


# ----------------------------------------------------------------------------- argument groups


def _add_task(parser, *, default: str | None, help: str) -> None:
    parser.add_argument("--task", choices=_task_names(), default=default, help=help)


def _add_output(parser, *, default: str, writes: str) -> None:
    parser.add_argument("--output", default=default, metavar="DIR",
                        help=f"folder for the outputs ({writes}), created if needed (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace the results of another task in the --output folder (refused otherwise)")


def _add_simulation_options(group) -> None:
    group.add_argument("--num-simulations", type=_positive_int, default=20_000, metavar="N",
                       help="number of (θ, x) pairs drawn from the prior and the simulator (default: %(default)s)")


def _add_training_options(parser) -> None:
    group = parser.add_argument_group("training")
    group.add_argument("--max-epochs", type=_positive_int, default=300, metavar="E",
                       help="upper bound on training epochs (default: %(default)s)")
    group.add_argument("--patience", type=_positive_int, default=50, metavar="P",
                       help="stop after this many epochs without a lower validation loss (default: %(default)s)")
    group.add_argument("--time-budget", type=_seconds, default=None, metavar="SECONDS",
                       help="stop training before the epoch that would end past this many seconds, keeping the "
                            "best network so far (shared equally by the networks fit chooses to train, per network with "
                            "--ensemble M; default: no limit)")
    group.add_argument("--batch-size", type=_positive_int, default=None, metavar="B",
                       help="simulations per minibatch (default: n_train // 16 clipped to [64, 512])")
    group.add_argument("--hidden", type=_widths, default=(128, 128, 128), metavar="W1,W2,...",
                       help="widths of the network's hidden layers (default: 128,128,128)")
    group.add_argument("--embedding", choices=EMBEDDINGS, default="flatten",
                       help="network that embeds x before the head: flatten (identity), cnn or resnet for "
                            "images (H, W[, C]), conv1d or resnet1d for series (T[, C]) (default: %(default)s)")
    group.add_argument("--quadratic", action=argparse.BooleanOptionalAction, default=None,
                       help="add (or, with --no-quadratic, leave out) learned quadratic terms in θ in the network's "
                            "logit: they hold the θ-x coupling of likelihoods that are near-Gaussian in θ, which the "
                            "MLP alone flattens (default: fit trains both and keeps the lower held-out loss, up to "
                            "50,000 training simulations on a CPU; without them above)")
    group.add_argument("--ensemble", type=_positive_int, default=None, metavar="M",
                       help="train M networks on one split and average their logits (default: fit trains up to 4, "
                            "on a CPU while their epochs x training simulations stay within those of one network's "
                            "full schedule on 100,000, one with a learned embedding, and keeps the first m with the "
                            "lowest held-out loss)")
    group.add_argument("--num-negatives", type=_positive_int, default=1, metavar="K",
                       help="independent θ per simulation in each training batch (default: %(default)s)")
    group.add_argument("--ratio-weighting", type=_exponent, default=None, metavar="ALPHA",
                       help="weight each training pair's loss by (1 + r)^ALPHA, r the current ratio estimate: "
                            "it sharpens posteriors much narrower than the prior; 0 is the plain AALR loss "
                            "(default: fit's, 1/2)")
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
                       help="the observation holds n i.i.d. draws of one θ, shape (n, *x_shape): their "
                            "log-ratios are summed (default: on for tasks whose default observation is such "
                            "a set, e.g. weinberg)")
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
    parser.add_argument("--seed", type=_seed, default=0,
                        help=f"seed of the PRNG key, 0 to {MAX_SEED} (default: %(default)s)")
    parser.add_argument("--quiet", action="store_true", help="no progress bars or progress messages")
    parser.add_argument("--debug", action="store_true", help="show the traceback of a failure")


def _add_process_options(parser) -> None:
    """``--coordinator``, ``--num-processes``, ``--process-id``: one command run in several processes."""
    group = parser.add_argument_group(
        "several processes (jax.distributed)",
        "Run the same command once per process (host), each with its --process-id: simulate and sample "
        "split the simulations or the chains, and every process writes its own part, "
        "NAME.process-I-of-N.EXT; train gives each process its rows of the bank, and process 0 writes "
        "the estimator. With neither these options nor the variables set, the command runs in one process.")
    group.add_argument("--coordinator", metavar="HOST:PORT",
                       help="address of process 0, which every process connects to "
                            f"(default: ${PROCESS_VARIABLES['coordinator']})")
    group.add_argument("--num-processes", type=_positive_int, default=None, metavar="N",
                       help=f"number of processes (default: ${PROCESS_VARIABLES['num_processes']})")
    group.add_argument("--process-id", type=_non_negative_int, default=None, metavar="I",
                       help=f"this process's index in [0, N) (default: ${PROCESS_VARIABLES['process_id']})")


def _add_input(parser, flag: str, *, written_by: str, task_help: str) -> None:
    """The saved input of a command (``--bank`` or ``--estimator``: the file or its folder) and ``--task``."""
    name = flag[2:]
    parser.add_argument(flag, required=True, metavar=name.upper(),
                        help=f"{name}.npz written by {written_by}, or the folder that holds it")
    _add_task(parser, default=None, help=task_help)


def _finish(parser, handler, *, default: str, writes: str) -> None:
    """The options every command shares (output folder, seed, verbosity) and its handler."""
    _add_output(parser, default=default, writes=writes)
    _add_common_options(parser)
    parser.set_defaults(handler=handler)


def _add_run_parser(sub) -> None:
    run = sub.add_parser("run", help="simulate, train and sample in one go",
                         description="Simulate a bank, train a ratio estimator and sample the posterior of an "
                                     "observation; writes estimator.npz, samples.npz, corner.png and summary.json.")
    _add_task(run, default=DEFAULT_TASK, help="built-in task (default: %(default)s)")
    _add_simulation_options(run.add_argument_group("simulation"))
    _add_training_options(run)
    _add_sampling_options(run)
    _finish(run, _plan_run, default=DEFAULT_OUTPUT, writes="estimator.npz, samples.npz, corner.png, summary.json")


def _add_simulate_parser(sub) -> None:
    simulate_ = sub.add_parser("simulate", help="draw a simulation bank and save it (FOLDER/bank.npz)",
                               description="Draw θ from the task's prior and x from its simulator; save the "
                                           "bank, with its task and prior, as FOLDER/bank.npz.")
    _add_task(simulate_, default=DEFAULT_TASK, help="built-in task (default: %(default)s)")
    _add_simulation_options(simulate_)
    _add_cluster_options(simulate_)
    _add_process_options(simulate_)
    _finish(simulate_, _plan_simulate, default=DEFAULT_OUTPUT, writes="bank.npz (or the --store)")


def _add_step_parsers(sub) -> None:
    """'train' and 'sample': the commands that read one saved input and write one step's outputs."""
    steps = (
        ("train", "train a ratio estimator on a saved bank (FOLDER/estimator.npz)",
         "Train a ratio estimator on a bank written by 'simulate' and save it, with its task, as "
         "FOLDER/estimator.npz.", "--bank", "'simulate'",
         "task the bank was simulated from; default: the bank's record (checked against it)",
         _add_training_options, _plan_train, "estimator.npz"),
        ("sample", "sample the posterior of an observation with a saved estimator",
         "Sample the posterior of an observation with an estimator written by 'train' or 'run'; writes "
         "samples.npz, corner.png and summary.json.", "--estimator", "'train' or 'run'",
         "task (prior, labels, default observation); default: the estimator's record",
         _add_sampling_options, _plan_sample, "samples.npz, corner.png, summary.json"),
    )
    for name, help_, description, flag, written_by, task_help, add_options, handler, writes in steps:
        step = sub.add_parser(name, help=help_, description=description)
        _add_input(step, flag, written_by=written_by, task_help=task_help)
        add_options(step)
        _add_process_options(step)
        _finish(step, handler, default=DEFAULT_OUTPUT, writes=writes)


def _add_diagnose_parser(sub) -> None:
    diagnose = sub.add_parser(
        "diagnose", help="judge a saved estimator: coverage, SBC, ROC, normalisation, MCMC health",
        description="Expected HPD coverage and SBC over (θ*, x) pairs from the task's joint (one batched "
                    "sampling run), the paper's ROC diagnostic, the normalisation check E_p(θ)[r̂(x|θ)] = 1, "
                    "and, with --samples, MCMC health and trace plots of a 'sample' run; each verdict states "
                    "its evidence and its power. Writes coverage.png, sbc.png, roc.png, traces.png and "
                    "diagnostics.json.")
    _add_input(diagnose, "--estimator", written_by="'train' or 'run'",
               task_help="task (prior and simulator); default: the estimator's record")
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
    _finish(diagnose, _plan_diagnose, default=DEFAULT_DIAGNOSE_OUTPUT,
            writes="coverage.png, sbc.png, roc.png, traces.png, diagnostics.json")


def build_parser() -> argparse.ArgumentParser:
    """The ``aalr-jax`` parser: one subcommand per step; each command's handler plans its work."""
    import aalr_jax

    parser = argparse.ArgumentParser(
        prog=PROG,
        description="Amortized approximate likelihood ratio (AALR) inference in JAX. "
                    "Options without a command mean 'run'.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {aalr_jax.__version__}")
    sub = parser.add_subparsers(dest="command", metavar="{run,simulate,train,sample,diagnose}")
    _add_run_parser(sub)
    _add_simulate_parser(sub)
    _add_step_parsers(sub)
    _add_diagnose_parser(sub)
    return parser


# ----------------------------------------------------------------------------- helpers


def _key(args, phase: str):
    """The PRNG key of a phase; the same in 'run' and in the separate commands, so they agree."""
    import jax

    phases = ("simulate", "train", "sample", "diagnose")
    return jax.random.fold_in(jax.random.PRNGKey(args.seed), phases.index(phase))


def _processes(args) -> tuple:
    """``(index, count)`` of this process (``(0, 1)`` unless several processes were started)."""
    return getattr(args, "process", (0, 1))


def _process_key(args, phase: str):
    """The phase's key, folded with this process's index when there are several processes."""
    import jax

    index, count = _processes(args)
    key = _key(args, phase)
    return key if count == 1 else jax.random.fold_in(key, index)


def _part(name: str, args) -> str:
    """The file ``name`` this process writes: ``name`` itself in one process, else
    ``stem.process-I-of-N.ext`` for process ``I`` of ``N``."""
    index, count = _processes(args)
    if count == 1:
        return name
    stem, ext = os.path.splitext(name)
    return f"{stem}.process-{index}-of-{count}{ext}"


def _process_share(what: str, n: int, args) -> slice:
    """This process's contiguous rows of ``n`` (:func:`aalr_jax.sharding.process_rows`); ``what``
    names ``n`` in the error when it does not split evenly over the processes."""
    index, count = _processes(args)
    if count == 1:
        return slice(0, n)
    if n % count:
        raise UsageError(f"{what} {n}: expected a multiple of the number of processes ({count}), so that "
                         "each process takes an equal share")
    from aalr_jax.sharding import process_rows

    return process_rows(n, index, count)


def _say(args, message: str) -> None:
    if not args.quiet:
        print(f"{PROG}: {message}", file=sys.stderr, flush=True)


def _warn(message: str) -> None:
    """A warning that matters for the result: printed even with --quiet."""
    print(f"{PROG}: warning: {message}", file=sys.stderr, flush=True)


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


def _input_file(path: str, default_name: str, what: str) -> str:
    """``path``, or ``path/default_name`` when ``path`` is a folder; it must be a file."""
    if os.path.isdir(path):
        inner = os.path.join(path, default_name)
        if not os.path.isfile(inner):
            raise FileNotFoundError(f"{what} folder {path} holds no {default_name}")
        return inner
    _require_file(path, what)
    return path


def load_observation(path: str):
    """An observation from ``.npy``, ``.npz`` (key ``x_obs``, else the first array) or ``.csv``."""
    import zipfile

    import numpy as np

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
            x = np.loadtxt(path, delimiter=",", dtype=np.float64, ndmin=1)
        else:
            raise ValueError("unsupported extension; use .npy, .npz or .csv")
        if np.iscomplexobj(x) or not (np.issubdtype(x.dtype, np.number) or x.dtype == bool):
            raise ValueError(f"it holds {x.dtype} values, not real numbers")
        x = np.asarray(x, dtype=np.float32)
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read observation {path}: {err}") from None
    if not np.isfinite(x).all():
        raise ValueError(f"observation {path} contains non-finite values (or values beyond float32's range)")
    return x


def _observation(args, task, x_shape: tuple, iid: bool) -> tuple:
    """``(x_obs, is_default)``: the observation to condition on, checked against ``x_shape``."""
    import numpy as np

    x_shape = tuple(x_shape)
    is_default = args.observation is None
    if is_default:
        x, source = np.asarray(task.default_observation, np.float32), f"the default observation of {task.name}"
    else:
        x, source = load_observation(args.observation), f"observation {args.observation}"
    if iid:  # (n, *x_shape); one observation counts as n = 1
        x = x[None] if x.shape == x_shape else x
        ok = x.ndim == len(x_shape) + 1 and x.shape[1:] == x_shape and x.shape[0] >= 1
        expected = f"(n, {', '.join(map(str, x_shape))}) with --iid"
    else:  # x_shape; a leading axis of length 1 is dropped
        x = x[0] if x.shape == (1,) + x_shape else x
        ok, expected = x.shape == x_shape, f"{x_shape}"
    if not ok:
        hint = ""
        if not iid and x.ndim == len(x_shape) + 1 and x.shape[1:] == x_shape:
            hint = f"; to condition on these {x.shape[0]} observations as one i.i.d. set, pass --iid"
        raise ValueError(f"{source} has shape {x.shape}, but task {task.name} expects {expected}{hint}")
    return x, is_default


def _check_compatible(task, theta_dim: int, x_shape: tuple, what: str) -> None:
    if theta_dim != task.theta_dim or tuple(x_shape) != tuple(task.x_shape):
        raise ValueError(
            f"{what} has θ of dimension {theta_dim} and x of shape {tuple(x_shape)}, but task {task.name} has "
            f"θ of dimension {task.theta_dim} and x of shape {tuple(task.x_shape)}"
        )


def _task(name, source: str):
    """The built-in task ``name`` as recorded in ``source``; a clear error for anything else."""
    from aalr_jax import tasks

    if name is None:
        raise UsageError(f"{source} does not name its task; pass --task ({', '.join(tasks.names())})")
    if not isinstance(name, str):
        raise UsageError(f"{source} records task {name!r} ({type(name).__name__}), not a task name; pass --task")
    if name not in tasks.names():
        raise UsageError(f"{source} records task {name!r}, which is not a built-in task; pass --task "
                         f"({', '.join(tasks.names())})")
    return tasks.get(name)


def _json_number(value):
    value = float(value)
    return value if math.isfinite(value) else None


def _numbers(values) -> list:
    import numpy as np

    return [_json_number(v) for v in np.ravel(values)]


def _write_json(path: str, record: dict) -> None:
    from aalr_jax.files import atomic_write_bytes

    atomic_write_bytes(path, (json.dumps(record, indent=2) + "\n").encode("utf-8"))


# ----------------------------------------------------------------------------- validation before work


def _resolve_sampler(method: str, dim: int, *, independence_prob=None, thin=None) -> dict:
    """The sampler settings the run will use, checked by the sampling module without running it.

    The one place that asks the sampling module to validate options: ``method`` resolved for
    ``dim`` parameters, the independence-move probability and the thinning.
    """
    from aalr_jax.samplers import resolve_sampler

    sampler = resolve_sampler(method, dim, **({} if independence_prob is None else
                                               {"independence_prob": independence_prob}))
    thin = sampler.default_thin if thin is None else thin
    return {"method": sampler.name, "independence_prob": float(getattr(sampler, "independence_prob", 0.0)),
            "thin": int(thin)}


def _check_training(args, num_simulations: int, x_shape: tuple) -> None:
    """The training options against the bank's size and the observation shape, before any work."""
    from aalr_jax import nn
    from aalr_jax.train import default_batch_size

    num_train = num_simulations - math.ceil(0.1 * num_simulations)  # fit's split: a tenth held out
    if num_train < 1 or num_simulations - num_train < 2:
        raise UsageError(f"{num_simulations} simulations are too few to train on: fit holds out a tenth "
                         "(at least 2) for validation; simulate at least 20")
    batch_size = default_batch_size(num_train) if args.batch_size is None else args.batch_size
    if batch_size > num_train:
        raise UsageError(f"--batch-size {batch_size} is larger than the {num_train} training simulations "
                         f"(of {num_simulations}, a tenth held out); simulate more or lower --batch-size")
    if args.num_negatives >= batch_size:
        raise UsageError(f"num_negatives must be smaller than batch_size ({batch_size}), got {args.num_negatives}")
    try:  # the embedding's layout check: parameter shapes only, nothing is computed
        nn.parameter_template(nn.NetworkConfig(theta_dim=1, x_shape=tuple(int(s) for s in x_shape),
                                               embedding=args.embedding, quadratic=False))
    except ValueError as err:
        raise UsageError(f"--embedding {args.embedding}: {err}") from None


def _recorded_task(path: str):
    """The task a result file records; ``...`` when it cannot be read."""
    name = os.path.basename(path)
    try:
        if name.endswith(".json"):
            with open(path, encoding="utf-8") as f:
                record = json.load(f)
            return record.get("task") if isinstance(record, dict) else ...
        if name == BANK_FILE:
            from aalr_jax.data import load_bank_metadata

            return load_bank_metadata(path).get("task")
        from aalr_jax import io

        metadata = io.load_metadata(path).get("metadata")
        return metadata.get("task") if isinstance(metadata, dict) else None
    except (OSError, ValueError, UnicodeDecodeError):
        return ...


def _prepare_output(args, task_name: str, writes: tuple) -> str:
    """Create the ``--output`` folder and check that the command may write ``writes`` into it."""
    folder = args.output
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise UsageError(f"--output {folder} is a file; --output names a folder (this command writes "
                         f"{', '.join(writes)} into it)")
    if not os.path.exists(folder) and os.path.splitext(folder)[1].lower() in FILE_EXTENSIONS:
        raise UsageError(f"--output {folder} looks like a file name; --output names a folder (this command writes "
                         f"{', '.join(writes)} into it)")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as err:
        raise UsageError(f"cannot create the output folder {folder}: {err.strerror or err}") from None
    if not os.access(folder, os.W_OK | os.X_OK):
        raise UsageError(f"cannot write into the output folder {folder}: permission denied")
    for name in writes:
        target = os.path.join(folder, name)
        if os.path.isdir(target) and not os.path.islink(target):
            raise UsageError(f"cannot write {target}: it is a folder")
    if not args.overwrite:
        for name in RESULT_FILES:
            path = os.path.join(folder, name)
            if not os.path.isfile(path):
                continue
            recorded = _recorded_task(path)
            if recorded is ...:
                raise UsageError(f"{folder} holds {name}, which is not a readable aalr-jax result; pass "
                                 "--overwrite to replace it, or choose another --output")
            if recorded is not None and recorded != task_name:
                raise UsageError(f"{folder} holds results of task {recorded!r} ({name}), not {task_name!r}; pass "
                                 "--overwrite to replace them, or choose another --output")
    return folder


def _estimator_and_task(args) -> tuple:
    """``(path, estimator, task, metadata)`` from ``--estimator`` and ``--task`` (or the estimator's record)."""
    from aalr_jax import io

    path = _input_file(args.estimator, ESTIMATOR_FILE, "estimator")
    header = io.load_metadata(path)
    metadata = header.get("metadata") or {}
    if not isinstance(metadata, dict):
        raise UsageError(f"estimator {path}: its metadata must be a JSON object, got {type(metadata).__name__}")
    task = _task(args.task or metadata.get("task"), f"estimator {path}")
    estimator = io.load_estimator(path)
    _check_compatible(task, estimator.theta_dim, estimator.x_shape, f"estimator {path}")
    return path, estimator, task, metadata


def _sampling_plan(args, task, estimator_x_shape) -> dict:
    """Observation and sampler settings of 'run' and 'sample', checked."""
    iid = bool(args.iid or task.iid)
    x_obs, is_default = _observation(args, task, estimator_x_shape, iid)
    sampler = _resolve_sampler(args.method, task.theta_dim, independence_prob=args.independence_prob,
                               thin=args.thin)
    return {"iid": iid, "x_obs": x_obs, "is_default": is_default, "sampler": sampler}


# ----------------------------------------------------------------------------- work


def _training_record(history) -> dict:
    return {
        "epochs": int(len(history.train_loss)),
        "best_epoch": int(history.best_epoch),
        "best_validation_loss": _json_number(history.validation_loss[history.best_epoch]),
        "stopped_early": bool(history.stopped_early),
        "stop_reason": history.stop_reason,
        "choices": history.choices,
    }


def _train(args, bank, task, timings) -> tuple:
    """Fit an estimator and build its metadata (task, prior, training)."""
    import jax

    from aalr_jax.data import describe_prior
    from aalr_jax.train import DEFAULT_RATIO_WEIGHTING, fit, fit_ensemble

    ratio_weighting = DEFAULT_RATIO_WEIGHTING if args.ratio_weighting is None else args.ratio_weighting
    with _phase(args, timings, "train", f"training on {bank.num_simulations} simulations"):
        options = dict(hidden_features=args.hidden, embedding=args.embedding, batch_size=args.batch_size,
                       max_epochs=args.max_epochs, patience=args.patience, num_negatives=args.num_negatives,
                       ratio_weighting=ratio_weighting, ema_decay=args.ema_decay, quadratic=args.quadratic,
                       progress=not args.quiet, time_budget=args.time_budget)
        if args.ensemble in (None, 1):  # None: fit chooses the number of networks
            result = fit(_key(args, "train"), bank, num_members=args.ensemble, **options)
            histories = [result.history]
            training = _training_record(result.history)
            training["num_members"] = getattr(result.estimator, "num_members", 1)
        else:
            result = fit_ensemble(_key(args, "train"), bank, args.ensemble, **options)
            histories = result.histories
            training = {"num_members": args.ensemble, "validation_loss": _json_number(result.validation_loss),
                        "members": [_training_record(h) for h in result.histories]}
        jax.block_until_ready(result.estimator)
    training["num_negatives"] = args.num_negatives
    training["ratio_weighting"] = ratio_weighting
    training["ema_decay"] = histories[0].ema_decay  # the β used (fit's default when not given)
    training["quadratic"] = bool(result.estimator.config.quadratic)  # given, or chosen by fit
    training["embedding"] = args.embedding
    metadata = {"task": task.name, "prior": describe_prior(task.prior), "num_simulations": bank.num_simulations,
                "seed": args.seed, "training": training}
    return result.estimator, metadata


def _report_record(report) -> dict:
    import numpy as np

    return {
        "rhat": _numbers(report.rhat), "ess_bulk": _numbers(report.ess_bulk), "ess_tail": _numbers(report.ess_tail),
        "num_modes": report.num_modes, "chains_per_mode": [int(c) for c in report.mode_chains],
        "within_mode_rhat": _numbers(report.mode_rhat), "within_mode_ess_bulk": _numbers(report.mode_ess_bulk),
        "within_mode_ess_tail": _numbers(report.mode_ess_tail),
        "mean_acceptance": _json_number(np.nanmean(report.acceptance_rate))
        if np.isfinite(report.acceptance_rate).any() else None,
        "num_divergent": report.num_divergent, "num_stuck": int(report.stuck.sum()),
        "outside_training": bool(report.outside_training),
        "warnings": list(report.warnings), "notes": list(report.notes),
    }


def _outside_training(estimator, x_obs, iid: bool) -> bool:
    """Whether the observation lies outside the estimator's training data; warns in one line if so."""
    from aalr_jax import ood

    outside = bool(ood.outside_training_data(estimator, x_obs, iid=iid))
    if outside:
        _warn("the observation lies outside the range of the training simulations: the estimated ratio there "
              "is an extrapolation and the posterior cannot be trusted (recorded as outside_training)")
    return outside


def _run_sampler(args, task, estimator, plan: dict, key, timings):
    """The posterior draws of ``plan``'s observation, as NumPy arrays; refuses non-finite draws."""
    import jax
    import numpy as np

    from aalr_jax import ood
    from aalr_jax.sampling import sample_posterior

    sampler = plan["sampler"]
    message = f"sampling {args.num_samples} draws with {sampler['method']} ({args.num_chains} chains)"
    with _phase(args, timings, "sample", message), warnings.catch_warnings():
        warnings.simplefilter("ignore", ood.OutOfDistributionWarning)  # reported before, once
        post = sample_posterior(key, estimator, task.prior, plan["x_obs"], method=sampler["method"],
                                num_samples=args.num_samples, num_chains=args.num_chains,
                                num_warmup=args.num_warmup, thin=sampler["thin"], iid=plan["iid"],
                                independence_prob=sampler["independence_prob"])
        post = jax.tree.map(np.asarray, post)
    if not np.isfinite(post.samples).all():
        raise ValueError("the sampler returned non-finite draws; the estimator's log-ratio is not finite on the "
                         "prior's support (retrain it)")
    return post


def _reference_samples(args, task, plan: dict, key, timings):
    """``(num_samples, d)`` draws of the task's exact posterior at the observation, or ``None``.

    ``None`` when the task has no reference posterior, for an i.i.d. set of more than one
    observation, or when drawing fails (said on stderr: a reference is a bonus).
    """
    import numpy as np

    x_obs, iid = plan["x_obs"], plan["iid"]
    if task.reference_posterior is None or (iid and x_obs.shape[0] != 1):
        return None
    with _phase(args, timings, "reference", "drawing reference posterior samples"):
        try:
            return np.asarray(task.reference_posterior(key, x_obs[0] if iid else x_obs, args.num_samples))
        except Exception as err:  # a reference is a bonus: never fail the run for it
            _say(args, f"warning: no reference posterior ({type(err).__name__}: {err})")
    return None


def _write_samples(args, task, post, plan: dict, outside: bool, reference, timings) -> None:
    """samples.npz (draws, chains and their statistics) and corner.png into ``--output``."""
    import numpy as np

    from aalr_jax import plotting
    from aalr_jax.files import atomic_write

    with _phase(args, timings, "write", "writing outputs"):
        arrays = dict(samples=post.samples, chains=post.chains, acceptance_rate=post.acceptance_rate,
                      rhat=post.rhat, ess=post.ess, x_obs=plan["x_obs"], num_divergent=post.num_divergent,
                      step_size=post.step_size, outside_training=np.asarray(outside))
        atomic_write(os.path.join(args.output, _part(SAMPLES_FILE, args)), lambda f: np.savez(f, **arrays))
        title = f"{task.name}: {plan['sampler']['method']}, {len(post.samples)} samples"
        fig = plotting.corner(post.samples, labels=list(task.parameter_labels),
                              truth=task.true_theta if plan["is_default"] else None, reference=reference, title=title)
        plotting.save_figure(fig, os.path.join(args.output, _part(CORNER_FILE, args)))


def _health_record(args, post, labels: list, outside: bool):
    """The mode-aware MCMC health record of the run (``None`` below the draws it needs); warns.

    Chains of HMC, NUTS and the plain random walk do not jump between separated modes (RWMH's
    independence moves do, yet slowly), so across-chain R-hat alone misleads.
    """
    import numpy as np

    from aalr_jax import diagnostics

    draws = post.chains.shape[-2]
    if draws < diagnostics.mcmc.MIN_DRAWS:
        _say(args, f"warning: {draws} draw(s) per chain: no MCMC health report (it needs at least "
                   f"{diagnostics.mcmc.MIN_DRAWS}; use fewer chains or more samples)")
        return None
    report = diagnostics.mcmc_report(post, labels=labels, outside_training=np.asarray(outside))
    for problem in report.warnings:
        if problem != diagnostics.mcmc.OUTSIDE_TRAINING_WARNING:  # already said once
            _say(args, f"warning: {problem}")
    return _report_record(report)


def _summary(args, task, post, plan: dict, extra: dict, outside: bool, health, reference, timings) -> dict:
    """summary.json's record: settings, timings, posterior mean and std per parameter, health, versions."""
    import jax

    import aalr_jax

    labels = list(task.parameter_labels)
    mean, std = post.samples.mean(0), post.samples.std(0)
    sampler = plan["sampler"]
    return {
        "task": task.name,
        **extra,
        "method": sampler["method"],
        "seed": args.seed,
        "observation": args.observation or "default",
        "iid": plan["iid"],
        "outside_training": outside,
        "sampler": {"num_samples": args.num_samples, "num_chains": args.num_chains,
                    "num_warmup": args.num_warmup, "thin": sampler["thin"],
                    "independence_prob": sampler["independence_prob"]},
        "timings": {name: round(seconds, 3) for name, seconds in timings.items()},
        "posterior": {
            label: {"mean": _json_number(m), "std": _json_number(s)} for label, m, s in zip(labels, mean, std)
        },
        "diagnostics": health,
        "reference_posterior": reference is not None,
        "versions": {"aalr_jax": aalr_jax.__version__, "jax": jax.__version__},
        "device": jax.devices()[0].platform,
    }


def _sample_and_write(args, task, estimator, plan: dict, timings, extra: dict, start: float) -> dict:
    """Sample the posterior of the observation; write samples.npz, corner.png and summary.json."""
    import jax

    outside = _outside_training(estimator, plan["x_obs"], plan["iid"])
    key_sample, key_reference = jax.random.split(_process_key(args, "sample"))
    post = _run_sampler(args, task, estimator, plan, key_sample, timings)
    reference = _reference_samples(args, task, plan, key_reference, timings)
    _write_samples(args, task, post, plan, outside, reference, timings)
    timings["total"] = time.perf_counter() - start
    health = _health_record(args, post, list(task.parameter_labels), outside)
    summary = _summary(args, task, post, plan, extra, outside, health, reference, timings)
    _write_json(os.path.join(args.output, _part(SUMMARY_FILE, args)), summary)
    return summary


def _print_result(summary: dict, output: str) -> None:
    posterior = summary["posterior"]
    means = ", ".join(f"{k}={v['mean']:.3g}±{v['std']:.2g}" for k, v in posterior.items())
    means = f" {means}" if len(posterior) <= 4 else ""
    flag = " (observation outside the training data)" if summary.get("outside_training") else ""
    print(f"{PROG}: {summary['task']} posterior{means}{flag} in {summary['timings']['total']:.1f} s; "
          f"outputs in {os.path.abspath(output)}")


def _simulate(args, task, timings):
    """The bank of ``--num-simulations`` (this process's share of them, with its own key)."""
    import jax

    from aalr_jax.data import simulate

    rows = _process_share("--num-simulations", args.num_simulations, args)
    n = rows.stop - rows.start
    with _phase(args, timings, "simulate", f"simulating {n} {task.name} simulations"):
        bank = simulate(_process_key(args, "simulate"), task, n, progress=not args.quiet)
        jax.block_until_ready(bank)
    return bank


# ----------------------------------------------------------------------------- commands
# Each _plan_* checks everything the command needs and returns the work as a function of no
# arguments; main runs it only when the plan succeeded.


def _plan_run(args):
    from aalr_jax import tasks

    task = tasks.get(args.task)
    plan = _sampling_plan(args, task, task.x_shape)
    _check_training(args, args.num_simulations, task.x_shape)
    folder = _prepare_output(args, task.name, (ESTIMATOR_FILE, SAMPLES_FILE, CORNER_FILE, SUMMARY_FILE))

    def work() -> int:
        from aalr_jax import io

        start, timings = time.perf_counter(), {}
        bank = _simulate(args, task, timings)
        estimator, metadata = _train(args, bank, task, timings)
        io.save_estimator(os.path.join(folder, ESTIMATOR_FILE), estimator, metadata=metadata)
        extra = {"budget": args.num_simulations, "training": metadata["training"]}
        summary = _sample_and_write(args, task, estimator, plan, timings, extra, start)
        _print_result(summary, folder)
        return 0

    return work


def _plan_simulate(args):
    from aalr_jax import tasks

    task = tasks.get(args.task)
    if args.store or args.scheduler or args.workers or args.chunk_size:
        if _processes(args)[1] > 1:
            raise UsageError("--store, --scheduler, --workers and --chunk-size simulate on Dask, which spreads "
                             "the simulations over its own workers: run that command in one process")
        return _plan_simulate_on_cluster(args, task)
    rows = _process_share("--num-simulations", args.num_simulations, args)
    folder = _prepare_output(args, task.name, (_part(BANK_FILE, args),))

    def work() -> int:
        from aalr_jax.data import describe_prior, save_bank

        bank = _simulate(args, task, {})
        path = os.path.join(folder, _part(BANK_FILE, args))
        metadata = {"task": task.name, "prior": describe_prior(task.prior), "seed": args.seed}
        if _processes(args)[1] > 1:
            metadata["process"] = {"index": _processes(args)[0], "count": _processes(args)[1],
                                   "rows": [rows.start, rows.stop], "num_simulations": args.num_simulations}
        save_bank(path, bank, metadata=metadata)
        print(f"{PROG}: wrote {bank.num_simulations} {task.name} simulations to {os.path.abspath(path)}")
        return 0

    return work


def _bank_input(args) -> tuple:
    """``(path, bank, recorded task)`` of ``--bank``: a Zarr store, a bank file, or a folder that holds
    bank.npz or, in several processes, this process's part bank.process-I-of-N.npz."""
    from aalr_jax.data import load_bank, load_bank_metadata

    if _is_store(args.bank):
        return _stored_bank(args.bank)
    part = os.path.join(args.bank, _part(BANK_FILE, args))
    path = part if _processes(args)[1] > 1 and os.path.isfile(part) else _input_file(args.bank, BANK_FILE, "bank")
    return path, load_bank(path), load_bank_metadata(path).get("task")


def _local_bank(args, path: str, bank) -> tuple:
    """``(this process's rows, the number of simulations over all processes)``.

    One process: the whole bank. Several: a part file written by ``simulate`` in several processes
    is this process's rows already; a whole bank (file or store) gives its
    :func:`~aalr_jax.sharding.process_rows`.
    """
    from aalr_jax.types import SimulationBank

    index, count = _processes(args)
    if count == 1:
        return bank, bank.num_simulations
    if os.path.basename(path) == _part(BANK_FILE, args):
        return bank, bank.num_simulations * count
    if not isinstance(bank, SimulationBank):  # a store: its valid rows, in memory
        bank = bank.to_memory()
    rows = _process_share(f"--bank {path} holds", bank.num_simulations, args)
    return SimulationBank(bank.theta[rows], bank.x[rows]), bank.num_simulations


def _plan_train(args):
    from aalr_jax import tasks

    path, bank, recorded = _bank_input(args)
    if args.task is not None and recorded is not None and recorded != args.task:
        raise UsageError(f"bank {path} was simulated from task {recorded!r}, not {args.task!r}")
    task = tasks.get(args.task) if args.task is not None else _task(recorded, f"bank {path}")
    _check_compatible(task, bank.theta.shape[1], bank.x.shape[1:], f"bank {path}")
    bank, num_simulations = _local_bank(args, path, bank)
    _check_training(args, num_simulations, bank.x.shape[1:])
    folder = _prepare_output(args, task.name, (ESTIMATOR_FILE,))

    def work() -> int:
        from aalr_jax import io

        estimator, metadata = _train(args, bank, task, {})
        index, count = _processes(args)
        if index != 0:  # process 0 writes the estimator
            print(f"{PROG}: process {index} of {count} trained on its {bank.num_simulations} rows; process 0 "
                  "writes the estimator")
            return 0
        metadata["num_simulations"] = num_simulations
        out = os.path.join(folder, ESTIMATOR_FILE)
        io.save_estimator(out, estimator, metadata=metadata)
        t = metadata["training"]
        if "members" in t:
            epochs = ", ".join(str(m["epochs"]) for m in t["members"])
            done = (f"trained {t['num_members']} members ({epochs} epochs), ensemble validation loss "
                    f"{t['validation_loss']:.4f}")
        else:
            done = (f"trained {t['epochs']} epochs (best {t['best_epoch']}, validation loss "
                    f"{t['best_validation_loss']:.4f})")
            chosen = (t.get("choices") or {}).get("members")
            if chosen and len(chosen["seconds"]) > 1:
                done = (f"trained {len(chosen['seconds'])} networks and kept the average of the first "
                        f"{chosen['chosen']} (validation loss {chosen['validation_loss'][str(chosen['chosen'])]:.4f})")
        print(f"{PROG}: {done}; wrote {os.path.abspath(out)}")
        return 0

    return work


def _chain_share(args):
    """``args`` with this process's share of ``--num-chains`` and ``--num-samples`` (the same in one process)."""
    index, count = _processes(args)
    if count == 1:
        return args
    chains = _process_share("--num-chains", args.num_chains, args)
    samples = _process_share("--num-samples", args.num_samples, args)
    return argparse.Namespace(**{**vars(args), "num_chains": chains.stop - chains.start,
                                 "num_samples": samples.stop - samples.start})


def _plan_sample(args):
    path, estimator, task, metadata = _estimator_and_task(args)
    plan = _sampling_plan(args, task, estimator.x_shape)
    args = _chain_share(args)
    folder = _prepare_output(args, task.name, tuple(_part(name, args) for name in (SAMPLES_FILE, CORNER_FILE,
                                                                                  SUMMARY_FILE)))

    def work() -> int:
        start, timings = time.perf_counter(), {}
        extra = {"budget": metadata.get("num_simulations"), "training": metadata.get("training"),
                 "estimator": os.path.abspath(path)}
        if _processes(args)[1] > 1:
            extra["process"] = {"index": _processes(args)[0], "count": _processes(args)[1]}
        summary = _sample_and_write(args, task, estimator, plan, timings, extra, start)
        _print_result(summary, folder)
        return 0

    return work


def _load_samples(path: str, theta_dim: int) -> dict:
    """Chains ``(C, S, d)`` and per-chain statistics of a samples.npz written by 'sample' or 'run'."""
    import zipfile

    import numpy as np

    _require_file(path, "samples")
    try:
        data = np.load(path, allow_pickle=False)
        if not isinstance(data, np.lib.npyio.NpzFile):
            raise ValueError("it holds one array, not the .npz archive that 'sample' writes")
        with data:
            arrays = {k: np.asarray(data[k]) for k in data.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as err:
        raise ValueError(f"cannot read samples {path}: {err}") from None
    chains = arrays.get("chains")
    if (chains is None or chains.ndim != 3 or chains.shape[2] != theta_dim or chains.shape[1] < 4
            or not np.issubdtype(chains.dtype, np.number) or np.iscomplexobj(chains)):
        shape = None if chains is None else chains.shape
        raise ValueError(f"samples {path} must hold 'chains' of shape (C, S >= 4, {theta_dim}) as written by "
                         f"'sample', got {shape}")
    if not np.isfinite(chains).all():
        raise ValueError(f"samples {path} contain non-finite chains")
    outside = arrays.get("outside_training")
    return {"chains": chains, "acceptance_rate": arrays.get("acceptance_rate"),
            "num_divergent": arrays.get("num_divergent"),
            "outside_training": None if outside is None else bool(np.asarray(outside).any())}


def _plan_diagnose(args):
    from aalr_jax import priors

    path, estimator, task, metadata = _estimator_and_task(args)
    loaded = _load_samples(args.samples, task.theta_dim) if args.samples else None
    sampler = _resolve_sampler(args.method, task.theta_dim)
    grid = task.theta_dim <= 2 and priors.box_bounds(task.prior.support) is not None
    folder = _prepare_output(args, task.name, ("coverage.png", "sbc.png", "roc.png", "traces.png", DIAGNOSTICS_FILE))

    def work() -> int:
        return _diagnose(args, path, estimator, task, metadata, loaded, sampler, grid, folder)

    return work


def _coverage_record(c) -> dict:
    """The JSON record of a :class:`~aalr_jax.diagnostics.CoverageResult`."""
    return {"levels": _numbers(c.levels), "coverage": _numbers(c.coverage), "lower": _numbers(c.lower),
            "upper": _numbers(c.upper), "verdict": c.verdict, "conservative": c.conservative,
            "confidence": c.confidence}


def _pair_posteriors(args, estimator, task, sampler: dict, keys: tuple, timings) -> tuple:
    """``(bank, coverage, sbc, health)``: ``--num-pairs`` (θ*, x) from the joint, their posteriors
    sampled in one batched run, expected coverage, SBC ranks and each posterior's MCMC report."""
    import numpy as np

    from aalr_jax import diagnostics, ood
    from aalr_jax.data import simulate
    from aalr_jax.sampling import sample_posterior

    key_pairs, key_sample = keys
    n, method = args.num_pairs, sampler["method"]
    with _phase(args, timings, "coverage", f"sampling the posteriors of {n} pairs ({method}, "
                                           f"{args.num_chains} chains each)"), warnings.catch_warnings():
        warnings.simplefilter("ignore", ood.OutOfDistributionWarning)  # pairs come from the joint
        bank = simulate(key_pairs, task, n, progress=False)
        post = sample_posterior(key_sample, estimator, task.prior, bank.x, method=method,
                                num_samples=args.num_samples, num_chains=args.num_chains,
                                num_warmup=args.num_warmup, thin=sampler["thin"],
                                independence_prob=sampler["independence_prob"])
        credibility = diagnostics.sample_credibility(estimator, task.prior, bank.x, bank.theta, post.samples)
        coverage = diagnostics.coverage_from_credibility(credibility)
        sbc = diagnostics.sbc(np.asarray(bank.theta), np.asarray(post.samples), num_draws=min(args.num_samples, 100))
        health = diagnostics.mcmc_report(post, labels=list(task.parameter_labels), rank_normalized=False)
    return bank, coverage, sbc, health


def _pairs_records(args, sampler: dict, coverage, sbc, health, labels: list) -> dict:
    """diagnostics.json's ``pairs``, ``coverage``, ``sbc`` and ``mcmc_pairs`` records."""
    import numpy as np

    modes, counts = np.unique([r.num_modes for r in health], return_counts=True)
    return {
        "pairs": {"num_pairs": args.num_pairs, "sampler": {"num_samples": args.num_samples,
                                                           "num_chains": args.num_chains,
                                                           "num_warmup": args.num_warmup, **sampler}},
        "coverage": _coverage_record(coverage),
        "sbc": {"num_draws": min(args.num_samples, 100), "chi2_pvalue": _numbers(sbc.chi2_pvalue),
                "ks_pvalue": _numbers(sbc.ks_pvalue), "dispersion": _numbers(sbc.dispersion),
                "uniform": sbc.uniform, "labels": labels},
        "mcmc_pairs": {
            "observations_with_warnings": int(sum(not r.ok for r in health)),
            "median_max_rhat": _json_number(np.median([np.nanmax(r.rhat) for r in health])),
            "median_max_within_mode_rhat": _json_number(np.median([np.nanmax(r.mode_rhat) for r in health])),
            "observations_by_num_modes": {str(m): int(c) for m, c in zip(modes, counts)},
        },
    }


def _diagnose_pairs(args, estimator, task, sampler: dict, keys: tuple, use_grid: bool, timings) -> tuple:
    """``(records, verdicts, figures, headline, pairs)`` of coverage (by samples, and by grid
    integration when ``use_grid``), SBC and the pair posteriors' MCMC health; ``pairs`` is the
    bank of (θ*, x) from the joint, ``headline`` the coverage label the summary line states."""
    from aalr_jax import diagnostics, plotting
    from aalr_jax.diagnostics import verdicts

    labels = list(task.parameter_labels)
    bank, coverage, sbc, health = _pair_posteriors(args, estimator, task, sampler, keys, timings)
    record = _pairs_records(args, sampler, coverage, sbc, health, labels)
    found = {"mcmc_pairs": verdicts.mcmc_verdict(health, what="pair posteriors")}
    sample_verdict = verdicts.coverage_verdict(coverage, method=f"{args.num_samples} posterior draws per pair")
    grid_verdict, grid_label = None, None
    if use_grid:
        with _phase(args, timings, "coverage_grid", "expected coverage by grid integration"):
            grid = diagnostics.coverage_from_credibility(
                diagnostics.grid_credibility(estimator, task.prior, bank.x, bank.theta))
        record["coverage_grid"] = _coverage_record(grid)
        grid_verdict = verdicts.coverage_verdict(grid, method="grid integration on the prior box")
        grid_label = grid.verdict
    found["coverage"] = verdicts.reconcile_coverage(sample_verdict, grid_verdict, coverage.verdict, grid_label)
    found["sbc"] = verdicts.sbc_verdict(sbc, labels)
    n = args.num_pairs
    figures = {"coverage.png": plotting.coverage_plot(coverage, title=f"{task.name}: expected HPD coverage, "
                                                                      f"{coverage.verdict} ({n} pairs)"),
               "sbc.png": plotting.sbc_plot(sbc, labels=labels, title=f"{task.name}: SBC ranks ({n} pairs)")}
    return record, found, figures, grid_label or coverage.verdict, bank


def _diagnose_roc(args, estimator, task, key, timings) -> tuple:
    """``(record, verdict, figure)`` of the ROC diagnostic at the true θ and ``--num-roc-thetas`` - 1 prior draws."""
    import numpy as np

    from aalr_jax import diagnostics, plotting
    from aalr_jax.diagnostics import verdicts

    with _phase(args, timings, "roc", f"ROC diagnostic at {args.num_roc_thetas} parameters"):
        extra = np.asarray(task.prior.sample(key, (args.num_roc_thetas - 1,)))
        theta = np.concatenate([np.asarray(task.true_theta, np.float32)[None], extra])
        roc = diagnostics.roc_diagnostic(key, estimator, task, theta, num_samples=args.roc_samples,
                                        num_epochs=args.roc_epochs)
    record = {"theta": np.asarray(roc.theta).tolist(), "auc": _numbers(roc.auc),
              "auc_std": _numbers(roc.auc_std), "weight_ess": _numbers(roc.weight_ess),
              "classifier": {"hidden_features": list(roc.hidden_features), "num_epochs": roc.num_epochs,
                             "num_train_per_class": roc.num_train, "num_test_per_class": roc.num_test}}
    return record, verdicts.roc_verdict(roc), plotting.roc_plot(roc)


def _diagnose_normalization(args, estimator, task, pair_x, key, timings) -> tuple:
    """``(record, verdict)`` of E_p(θ)[r̂(x|θ)] = 1 at the default observation and the first 9 pairs' x."""
    import numpy as np

    from aalr_jax import diagnostics
    from aalr_jax.diagnostics import verdicts

    with _phase(args, timings, "normalization", "normalisation check"):
        default = np.asarray(task.default_observation, np.float32)
        default = default[0] if task.iid else default
        x_check = np.concatenate([default[None], np.asarray(pair_x[:9])])
        norm = diagnostics.normalization_check(key, estimator, task.prior, x_check)
    record = {"observations": "default observation, then the first pairs' x",
              "mean": _numbers(norm.mean), "stderr": _numbers(norm.stderr), "num_prior_samples": norm.num_samples}
    return record, verdicts.normalization_verdict(norm)


def _diagnose_samples(args, task, loaded: dict, timings) -> tuple:
    """``(record, verdict, trace figure)`` of the MCMC health of the run in ``--samples``."""
    from aalr_jax import diagnostics, plotting
    from aalr_jax.diagnostics import verdicts

    labels = list(task.parameter_labels)
    with _phase(args, timings, "mcmc", f"MCMC health of {args.samples}"):
        report = diagnostics.mcmc_report(loaded["chains"], acceptance_rate=loaded["acceptance_rate"],
                                         num_divergent=loaded["num_divergent"], labels=labels,
                                         outside_training=loaded["outside_training"])
    record = {"file": os.path.abspath(args.samples), **_report_record(report)}
    figure = plotting.trace_plot(loaded["chains"], labels=labels, mode_labels=report.mode_labels,
                                 title=f"{task.name}: traces of {args.samples}")
    return record, verdicts.mcmc_verdict([report], what="run of --samples"), figure


def _print_verdicts(task, headline: str, found: dict, folder: str) -> None:
    failed = [name for name, v in found.items() if not v.passed]
    status = "all checks passed" if not failed else f"failed: {', '.join(failed)}"
    print(f"{PROG}: {task.name}: coverage {headline}, {status}; outputs in {os.path.abspath(folder)}")
    for name, v in found.items():
        print(f"  {name}: {v.text}")
        if v.advice:
            print(f"    next: {v.advice}")


def _diagnose(args, path, estimator, task, metadata, loaded, sampler, use_grid, folder) -> int:
    """Run every check, write the figures and diagnostics.json, print the verdicts."""
    import jax

    import aalr_jax
    from aalr_jax import plotting

    start, timings = time.perf_counter(), {}
    key_pairs, key_sample, key_roc, key_norm = jax.random.split(_key(args, "diagnose"), 4)
    record = {"task": task.name, "estimator": os.path.abspath(path), "seed": args.seed,
              "budget": metadata.get("num_simulations")}
    pairs, found, figures, headline, bank = _diagnose_pairs(args, estimator, task, sampler, (key_pairs, key_sample),
                                                            use_grid, timings)
    record.update(pairs)
    record["roc"], found["roc"], figures["roc.png"] = _diagnose_roc(args, estimator, task, key_roc, timings)
    record["normalization"], found["normalization"] = _diagnose_normalization(args, estimator, task, bank.x,
                                                                              key_norm, timings)
    if loaded is not None:
        record["mcmc_samples"], found["mcmc_samples"], figures["traces.png"] = _diagnose_samples(
            args, task, loaded, timings)
    with _phase(args, timings, "write", "writing outputs"):
        for name, fig in figures.items():
            plotting.save_figure(fig, os.path.join(folder, name))
    timings["total"] = time.perf_counter() - start
    record["verdicts"] = {name: v.as_dict() for name, v in found.items()}
    record["timings"] = {name: round(seconds, 3) for name, seconds in timings.items()}
    record["versions"] = {"aalr_jax": aalr_jax.__version__, "jax": jax.__version__}
    record["device"] = jax.devices()[0].platform
    _write_json(os.path.join(folder, DIAGNOSTICS_FILE), record)
    _print_verdicts(task, headline, found, folder)
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


def _is_store(path: str) -> bool:
    return path.rstrip("/").endswith(".zarr")


def _stored_bank(path: str):
    """``(path, bank, task name)`` of a Zarr store written by ``simulate --store`` (read lazily)."""
    from aalr_jax.store import load_bank

    if not os.path.isdir(path):
        raise FileNotFoundError(f"bank store not found: {path}")
    bank = load_bank(path)
    simulator = str(bank.config.get("simulator", ""))
    return path, bank, simulator.removeprefix("task:") if simulator.startswith("task:") else None


def _plan_simulate_on_cluster(args, task):
    """``simulate`` on Dask (a LocalCluster or ``--scheduler``) into ``--store`` (resumable)."""
    if args.scheduler and args.workers:
        raise UsageError("--workers sizes a local cluster; with --scheduler the cluster has its own workers")
    if not args.store or not _is_store(args.store):
        raise UsageError(f"--store BANK.zarr is needed to simulate on a cluster, got {args.store!r}")
    parent = os.path.dirname(os.path.abspath(args.store))
    if not os.path.isdir(parent):
        raise UsageError(f"--store {args.store}: the folder {parent} does not exist")

    def work() -> int:
        from aalr_jax.data import simulate

        bank = simulate(_key(args, "simulate"), task, args.num_simulations, backend="dask", store=args.store,
                        client=args.scheduler, workers=args.workers, chunk_size=args.chunk_size,
                        progress=not args.quiet)
        print(f"{PROG}: wrote {bank.num_simulations} {task.name} simulations to {os.path.abspath(args.store)}")
        return 0

    return work


# ----------------------------------------------------------------------------- several processes


def _process_settings(args, environ) -> dict | None:
    """:func:`~aalr_jax.sharding.initialize_distributed`'s arguments from the flags, else from the
    ``AALR_JAX_*`` variables in ``environ``, checked; ``None`` when neither sets any."""
    values, sources = {}, {}
    for name, variable in PROCESS_VARIABLES.items():
        flag = getattr(args, name, None)
        values[name], sources[name] = (flag, "--" + name.replace("_", "-")) if flag is not None else \
            (environ.get(variable) or None, variable)
    if all(value is None for value in values.values()):
        return None
    for name in ("num_processes", "process_id"):
        if isinstance(values[name], str):
            try:
                values[name] = int(values[name])
            except ValueError:
                raise UsageError(f"{sources[name]}: expected an integer, got {values[name]!r}") from None
    n, i = values["num_processes"], values["process_id"]
    if n is not None and n < 1:
        raise UsageError(f"{sources['num_processes']}: expected a positive number of processes, got {n}")
    if i is not None and not (0 <= i < (n if n is not None else i + 1)):
        bound = f"[0, {n}) ({sources['num_processes']} {n})" if n is not None else "[0, N)"
        raise UsageError(f"{sources['process_id']}: expected a process index in {bound}, got {i}")
    return {"coordinator_address": values["coordinator"], "num_processes": n, "process_id": i}


def _start_processes(args) -> None:
    """Start ``jax.distributed`` before any JAX work when several processes are asked for; sets
    ``args.process`` to ``(index, count)`` (``(0, 1)``: one process, nothing started)."""
    args.process = (0, 1)
    settings = _process_settings(args, os.environ)
    if settings is None or settings["num_processes"] == 1:
        return
    if args.command not in PROCESS_COMMANDS:
        raise UsageError(f"'{args.command}' runs in one process, but {', '.join(PROCESS_VARIABLES.values())} ask "
                         "for several: unset them, or run simulate, train and sample in several processes")
    import jax

    from aalr_jax.sharding import initialize_distributed

    try:
        initialize_distributed(**settings)
    except RuntimeError as err:  # the coordinator cannot be reached, or JAX already started
        raise ConnectionError(f"cannot start jax.distributed with coordinator {settings['coordinator_address']}, "
                              f"{settings['num_processes']} processes, process id {settings['process_id']}: "
                              f"{_message(err)}") from None
    args.process = (jax.process_index(), jax.process_count())


# ----------------------------------------------------------------------------- entry point

_EXPECTED = (UsageError, ValueError, TypeError, OSError, KeyError)


def _message(err: BaseException) -> str:
    if isinstance(err, KeyError) and err.args:
        text = str(err.args[0])
    else:
        text = str(err) or type(err).__name__
    return " ".join(text.split())  # one line


def _fail(args, err: BaseException, code: int, *, unexpected: bool = False) -> int:
    if getattr(args, "debug", False):
        traceback.print_exception(err)
    message = _message(err)
    if unexpected:
        first = str(err).strip().splitlines()[0] if str(err).strip() else ""
        message = f"unexpected {type(err).__name__}: {first[:300]}"
        if not getattr(args, "debug", False):
            message += " (rerun with --debug for the traceback)"
    print(f"{PROG}: error: {message}", file=sys.stderr, flush=True)
    return code


def main(argv=None) -> int:
    """Run the command line ``argv`` (default ``sys.argv[1:]``); returns the exit status.

    0 on success, 2 for usage errors (found before any work), 1 for failures during the work,
    130 when interrupted.
    """
    argv = [str(a) for a in (sys.argv[1:] if argv is None else argv)]
    parser = build_parser()
    if not argv:
        parser.print_help()
        return 0
    if argv[0] not in COMMANDS and argv[0] not in ("-h", "--help", "--version"):
        argv = ["run"] + argv  # `aalr-jax --task slcp` means `aalr-jax run --task slcp`
    try:
        args = parser.parse_args(argv)
    except SystemExit as exit_:  # --help, --version, usage errors (argparse already printed)
        return exit_.code if isinstance(exit_.code, int) else 0 if exit_.code is None else 2
    if args.command is None:
        parser.print_help()
        return 0
    try:
        _start_processes(args)
        work = args.handler(args)
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except _EXPECTED as err:
        return _fail(args, err, 2)
    except Exception as err:  # a bug: still one line, --debug for the rest
        return _fail(args, err, 1, unexpected=True)
    try:
        return work()
    except KeyboardInterrupt:
        print(f"{PROG}: interrupted", file=sys.stderr)
        return 130
    except _EXPECTED as err:
        return _fail(args, err, 1)
    except Exception as err:
        return _fail(args, err, 1, unexpected=True)


if __name__ == "__main__":
    raise SystemExit(main())
