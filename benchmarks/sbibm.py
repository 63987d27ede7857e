"""The sbibm accuracy table for AALR: C2ST against sbibm's reference posteriors.

For each task and simulation budget: simulate a bank, train an estimator (one network, or
``--ensemble M``; with ``--defaults`` what ``fit`` chooses), sample all chosen sbibm observations in ONE batched ``sample_posterior`` call
(10,000 samples each), and score each with sbibm's C2ST against sbibm's reference samples.
Printed and written next to the published NRE (sbibm's contrastive NRE-B) and NPE numbers from
``benchmarks/sbibm_published/main_paper.csv`` (Lueckmann et al. 2021, MIT; see the README there),
with wall-clock seconds per phase.

sbibm's observations and reference samples come from its wheel, downloaded at benchmark time
(``pip download sbibm==1.1.0 --no-deps``) into a cache folder; aalr_jax never depends on sbibm.

    python benchmarks/sbibm.py --tasks two_moons,slcp --budgets 1000,10000 --observations 1-10

``--defaults`` trains and samples every row with nothing but the package defaults (``fit(key, bank)``,
``sample_posterior(key, estimator, prior, x_obs)``) and writes ``results/sbibm_defaults.json``: the
table a user gets without options. Recipe options are refused with it.

    python benchmarks/sbibm.py --defaults            # all 10 tasks at 10^3, 10^4, 10^5

``--sbi-python PATH`` (a Python with sbi; never CI) also trains sbi's NRE_A with its defaults on
each row's bank and scores it on the same observations by the same C2ST (priors: box-uniform,
independent normal or log-normal, multivariate normal);
``--sbi-only`` adds that to saved rows without re-running aalr_jax.
"""

from __future__ import annotations

import argparse
import bz2
import csv
import glob
import inspect
import io
import json
import multiprocessing
import os
import subprocess
import sys
import tempfile
import time
import zipfile
from concurrent.futures import ProcessPoolExecutor

import jax
import numpy as np
import numpyro.distributions as dist
from tqdm.auto import tqdm

import aalr_jax
from aalr_jax import fit, fit_ensemble, sample_posterior, simulate, tasks
from aalr_jax.diagnostics import c2st
from aalr_jax.losses import LossConfig
from aalr_jax.samplers import resolve_sampler
from aalr_jax.train import AUTO_MEMBERS_WORK_CPU, DEFAULT_RATIO_WEIGHTING

HERE = os.path.dirname(os.path.abspath(__file__))
PUBLISHED = os.path.join(HERE, "sbibm_published")  # sbibm's published C2ST tables, MIT
# NRE-C (Miller, Weniger & Forré 2022, "Contrastive Neural Ratio Estimation"): C2ST at 10^5
# simulations as quoted in this project's benchmark issue; other budgets are not cited here.
NRE_C_1E5 = {"two_moons": 0.54, "slcp": 0.80, "gaussian_linear": 0.53, "gaussian_mixture": 0.73,
             "bernoulli_glm": 0.63, "sir": 0.66}
# sbi's NRE_A (the same method as ours) with sbi's defaults on sbibm observations, 2 CPU cores,
# as measured and quoted in the benchmark issue (not re-run by this script).
SBI_NRE_A = {("two_moons", 10_000): 0.79, ("two_moons", 100_000): 0.56, ("slcp", 10_000): 0.93}
NPE_TARGET_TASKS = ("two_moons", "gaussian_linear", "gaussian_mixture")
SBIBM_TASKS = ["two_moons", "gaussian_linear", "gaussian_linear_uniform", "gaussian_mixture", "slcp",
               "slcp_distractors", "bernoulli_glm", "bernoulli_glm_raw", "sir", "lotka_volterra"]
JAX_MARK = "ᴶ"
QUOTED_MARK = "ᵠ"
DIVERGED_MARK = "ᵈ"
# options that change how a row trains or samples (refused with --defaults)
RECIPE_OPTIONS = ("num_samples", "method", "independence_prob", "theta_bound", "ensemble", "num_negatives",
                  "ratio_weighting", "ema_decay", "quadratic", "patience")
BUDGET_LABEL = {1000: "10³", 10_000: "10⁴", 100_000: "10⁵"}


def sbibm_wheel(cache: str) -> str:
    """Path of the sbibm 1.1.0 wheel, downloaded once into ``cache``."""
    found = glob.glob(os.path.join(cache, "sbibm-1.1.0-*.whl"))
    if not found:
        os.makedirs(cache, exist_ok=True)
        subprocess.run([sys.executable, "-m", "pip", "download", "sbibm==1.1.0", "--no-deps", "-q",
                        "-d", cache], check=True)
        found = glob.glob(os.path.join(cache, "sbibm-1.1.0-*.whl"))
    return found[0]


def read_csv(wheel: zipfile.ZipFile, name: str) -> np.ndarray:
    """A numeric CSV with a header row (optionally .bz2) from the wheel."""
    raw = wheel.read(name)
    if name.endswith(".bz2"):
        raw = bz2.decompress(raw)
    return np.loadtxt(io.StringIO(raw.decode()), delimiter=",", skiprows=1, ndmin=2).astype(np.float32)


# sbibm keeps the observations of these tasks in their sibling's folder, beside the reference
# posterior they share
OBSERVATION_FILES = {"slcp_distractors": ("slcp", "observation_distractors.csv"),
                     "bernoulli_glm_raw": ("bernoulli_glm", "observation_raw.csv")}


def sbibm_observation(wheel, task: str, i: int):
    """``(x_o, reference samples)`` of sbibm's observation ``i`` of ``task``."""
    folder, name = OBSERVATION_FILES.get(task, (task, "observation.csv"))
    base = f"sbibm/tasks/{folder}/files/num_observation_{i}/"
    return read_csv(wheel, base + name)[0], read_csv(wheel, base + "reference_posterior_samples.csv.bz2")


def published(task: str, budget: int) -> dict:
    """Mean and spread of published C2ST per algorithm for this task and budget.

    gaussian_mixture comes from sbibm's re-run (``gaussian_mixture_rerun.csv``): the task was
    corrected after the paper, and sbibm 1.1.0's reference samples are the corrected task's.
    """
    name = "gaussian_mixture_rerun.csv" if task == "gaussian_mixture" else "main_paper.csv"
    path = os.path.join(PUBLISHED, name)
    if not os.path.exists(path):
        return {}
    values = {}
    with open(path) as f:
        for row in csv.DictReader(f):
            if row["task"] == task and row["num_simulations"] == BUDGET_LABEL.get(budget) and row["C2ST"]:
                values.setdefault(row["algorithm"], []).append(float(row["C2ST"]))
    out = {alg: dict(mean=float(np.mean(v)), std=float(np.std(v)), n=len(v)) for alg, v in values.items()
           if alg in ("NRE", "NPE", "SNRE", "SNPE", "NLE", "SNLE", "REJ-ABC")}
    if budget == 100_000 and task in NRE_C_1E5:
        out["NRE-C"] = dict(mean=NRE_C_1E5[task], std=None, n=None)
    if (task, budget) in SBI_NRE_A:
        out["sbi NRE_A"] = dict(mean=SBI_NRE_A[task, budget], std=None, n=None)
    return out


def targets(row: dict) -> list[str]:
    """The issue's accuracy targets for this row, each marked met (✓) or missed (✗)."""
    pub, ours, marks = row["published"], row["c2st_mean"], []
    check = lambda name, bound, strict=False: marks.append(
        f"{'✓' if (ours < bound if strict else ours <= bound) else '✗'} {'<' if strict else '≤'} {name}")
    if row["num_simulations"] == 100_000:
        if "NRE-C" in pub:
            check("NRE-C", pub["NRE-C"]["mean"])
        if row["task"] in NPE_TARGET_TASKS and "NPE" in pub:
            check("NPE", pub["NPE"]["mean"])
    if row["num_simulations"] == 10_000 and "NRE" in pub:
        check("NRE", pub["NRE"]["mean"], strict=True)
    sbi = row.get("sbi_nre_a") or pub.get("sbi NRE_A")
    if sbi and sbi["mean"] is not None:
        check("sbi NRE_A", sbi["mean"], strict=True)
    elif sbi:  # sbi diverged on some observations: compare on those where both have a C2ST
        pairs = [(a, b) for a, b in zip(row["c2st"], sbi["c2st"]) if b is not None]
        if pairs:
            ours_there, theirs = np.mean([a for a, _ in pairs]), np.mean([b for _, b in pairs])
            marks.append(f"{'✓' if ours_there < theirs else '✗'} < sbi NRE_A on its {len(pairs)} finite")
        else:
            marks.append("✓ sbi NRE_A diverged")
    return marks


def sampler_label(row: dict) -> str:
    """``rwmh thin 10``, or ``rwmh+ind 0.9 thin 5`` for RWMH with independence moves (a row without
    ``independence_prob`` used the plain random walk)."""
    prob = row.get("independence_prob", 0.0)
    return f"{row['method']}{f'+ind {prob:g}' if prob else ''} thin {row['thin']}"


def options_label(row: dict) -> str:
    """The options of this script that train and sample the row as it was run, given the package's
    current defaults ("defaults" when there are none). A key missing from a row stands for the
    option's neutral value (α 0, the iterates, one negative, patience 50, unbounded θ input,
    plain RWMH). A ``--defaults`` row takes no option; its label says what ``fit`` chose itself."""
    if row.get("defaults"):
        choices = (row.get("choices") or [None])[0] or {}
        one = len(choices.get("members", {}).get("seconds", [None])) == 1
        if one and 2 * row["epochs"][0] * int(0.9 * row["num_simulations"]) <= AUTO_MEMBERS_WORK_CPU * 300:
            # one network whose epochs leave a CPU room for another today (train.member_candidates)
            return "stale: one network (fit now trains several here)"
        chose = [f"{row['members']} networks"] if row.get("members", 1) > 1 else []
        chose += ["the quadratic terms"] if choices.get("quadratic", {}).get("chosen") else []
        return "defaults" + (f" (fit chose {' and '.join(chose)})" if chose else "")
    flags = [f"--ensemble {row['members']}"] if row.get("members", 1) > 1 else []
    flags += [f"--num-negatives {row['num_negatives']}"] if row.get("num_negatives", 1) > 1 else []
    alpha = row.get("ratio_weighting") or 0.0
    flags += [f"--ratio-weighting {alpha:g}"] if alpha != DEFAULT_RATIO_WEIGHTING else []
    # a recorded β is fit's default for the row's budget (0.999 at 10^5, 0.998 at 10^4)
    flags += ["--ema-decay 0"] if not row.get("ema_decay") else []
    flags += ["--quadratic"] if row.get("quadratic") else []
    flags += [f"--patience {row['patience']}"] if (row.get("patience") or 50) != 50 else []
    flags += ["--theta-bound none"] if not row.get("theta_bound") else []
    dim = tasks.get(row["task"]).theta_dim
    auto = resolve_sampler("auto", dim)
    flags += [f"--method {row['method']}"] if row["method"] != auto.name else []
    if getattr(resolve_sampler(row["method"], dim), "independence_prob", 0.0) and not row.get("independence_prob"):
        flags += ["--independence-prob 0"]
    return " ".join(f"`{f}`" for f in flags) or "defaults"


def markdown(rows: list[dict], meta: dict) -> str:
    """The results as a Markdown table, one line per task and budget, with targets marked."""
    fmt = lambda v: "" if v is None else f"{v['mean']:.3f}"
    machines = sorted({(r["device"], r["cpu_count"], r["jax"]) for r in rows}, key=lambda m: m[0] != "cpu")
    marks = {m: "" if i == 0 else "ᴳ" * i for i, m in enumerate(machines)}  # unmarked: the first (CPU) machine
    lines = [f"{meta.get('num_samples')} samples per observation, seed {meta.get('seed')}. Machines (timings differ):"]
    lines += [f"- {marks[m] or 'unmarked'}: {m[0]} ({m[1]} CPU cores), jax {m[2]}" for m in machines] + [
             "",
             "| task | sims | observations | AALR (ours) | sampler | options | NRE | NRE-C | NPE | sbi NRE_A | targets | simulate s | train s | sample s | C2ST s |",
             "| --- | ---: | --- | ---: | --- | --- | ---: | ---: | ---: | ---: | --- | ---: | ---: | ---: | ---: |"]
    order = {name: i for i, name in enumerate(SBIBM_TASKS)}
    for row in sorted(rows, key=lambda r: (order.get(r["task"], 99), r["num_simulations"])):
        pub, sec = row["published"], row["seconds"]
        lines.append(
            f"| {row['task']} | {row['num_simulations']:,}{marks[row['device'], row['cpu_count'], row['jax']]} | {observations_label(row['observations'])} | {row['c2st_mean']:.3f} ± {row['c2st_std']:.3f}"
            f"{JAX_MARK if row.get('c2st_backend') == 'jax' else ''} | {sampler_label(row)} | {options_label(row)} | "
            f"{fmt(pub.get('NRE'))} | {fmt(pub.get('NRE-C'))} | {fmt(pub.get('NPE'))} | {sbi_column(row)} | {', '.join(targets(row))} | "
            + " | ".join(f"{sec[k]:.0f}" for k in ("simulate", "train", "sample", "c2st")) + " |")
    if any(not row.get("sbi_nre_a") and "sbi NRE_A" in row["published"] for row in rows):
        lines += ["", f"{QUOTED_MARK} sbi's NRE_A as quoted in the benchmark issue (sbi's defaults on sbibm's observations); "
                  "unmarked values were run by `--sbi-python` on the row's own bank and observations, same C2ST."]
    if any((row.get("sbi_nre_a") or {}).get("nonfinite_draws") and row["sbi_nre_a"]["mean"] is None for row in rows):
        lines += ["", f"{DIVERGED_MARK} sbi's MCMC returned non-finite θ for some observations (no C2ST there); "
                  "the targets column then compares both on the observations where sbi's draws are finite."]
    if any(row.get("c2st_backend") == "jax" for row in rows):
        lines += ["", f"{JAX_MARK} C2ST by the JAX backend of `aalr_jax.diagnostics.c2st` (sbibm's classifier, folds "
                  "and stopping rule re-implemented in JAX); the other rows by scikit-learn, as sbibm."]
    return "\n".join(lines) + "\n"


def observations_label(observations: list[int]) -> str:
    """sbibm's observation numbers of a row: ``1–10`` for a run of consecutive ones, else listed."""
    if observations == list(range(observations[0], observations[0] + len(observations))):
        return f"{observations[0]}–{observations[-1]}" if len(observations) > 1 else str(observations[0])
    return ", ".join(map(str, observations))


def sbi_column(row: dict) -> str:
    """sbi's NRE_A: run here on the row's bank and observations, else as quoted in the issue (ᵠ)."""
    sbi = row.get("sbi_nre_a")
    if sbi and sbi["mean"] is None:
        diverged = sum(k > 0 for k in sbi["nonfinite_draws"])
        rest = "" if sbi["finite_mean"] is None else f"; {sbi['finite_mean']:.3f} on the others"
        return f"diverged on {diverged} of {len(sbi['nonfinite_draws'])}{DIVERGED_MARK}{rest}"
    if sbi:
        return f"{sbi['mean']:.3f}"
    quoted = row["published"].get("sbi NRE_A")
    return "" if quoted is None else f"{quoted['mean']:.2f}{QUOTED_MARK}"


def c2st_scores(refs, samples, backend: str = "sklearn", batch: int = 1, progress: bool = False) -> list[float]:
    """sbibm's C2ST of each pair ``(refs[i], samples[i])`` (``(k, n, d)`` each), in order.

    The JAX backend trains ``batch`` pairs per call (the same scores as one at a time; a batch waits
    for its slowest classifier, so 1 suits a CPU and all of them a GPU).
    """
    if backend == "sklearn":
        return [c2st(r, y) for r, y in tqdm(list(zip(refs, samples)), "C2ST", disable=not progress)]
    starts = range(0, len(refs), batch)
    return [float(v) for i in tqdm(starts, "C2ST", disable=not progress)
            for v in c2st(refs[i: i + batch], samples[i: i + batch], backend="jax")]


def make_bank(task, budget: int, seed: int):
    """The row's simulations (aalr_jax and sbi train on the same ones)."""
    return simulate(jax.random.fold_in(jax.random.PRNGKey(seed), 0), task, budget, progress=False,
                    on_invalid="drop" if task.name in ("sir", "lotka_volterra") else "raise")


def run_one(task_name: str, budget: int, observations, wheel, args) -> dict:
    task = tasks.get(task_name)
    key = jax.random.PRNGKey(args.seed)
    times = {}
    start = time.perf_counter()
    bank = make_bank(task, budget, args.seed)
    times["simulate"] = time.perf_counter() - start
    start = time.perf_counter()
    if args.defaults:
        estimator, histories = fit_defaults(jax.random.fold_in(key, 1), bank, not args.quiet)
        times["train"] = time.perf_counter() - start
        return finish_row(task, budget, observations, wheel, args, key, bank, times, estimator, histories)
    network = dict(theta_bound=args.theta_bound, num_negatives=args.num_negatives,
                   ratio_weighting=args.ratio_weighting, ema_decay=args.ema_decay, patience=args.patience,
                   quadratic=args.quadratic, progress=not args.quiet)
    if args.ensemble == 1:
        estimator, history = fit(jax.random.fold_in(key, 1), bank, num_members=1, **network)
        histories = [history]
    else:
        estimator, histories, _ = fit_ensemble(jax.random.fold_in(key, 1), bank, args.ensemble, **network)
    times["train"] = time.perf_counter() - start
    return finish_row(task, budget, observations, wheel, args, key, bank, times, estimator, histories)


def fit_defaults(key, bank, progress: bool):
    """``fit(key, bank)`` with every package default; returns ``(estimator, [history])``."""
    estimator, history = fit(key, bank, progress=progress)
    return estimator, [history]


def recipe(args) -> dict:
    """The loss and stopping settings the row trained with: the package's defaults under
    ``--defaults``, else this script's options."""
    if args.defaults:
        loss = LossConfig()
        return dict(num_negatives=loss.num_negatives, ratio_weighting=loss.ratio_weighting,
                    patience=inspect.signature(fit).parameters["patience"].default)
    return dict(num_negatives=args.num_negatives, ratio_weighting=args.ratio_weighting, patience=args.patience)


def finish_row(task, budget, observations, wheel, args, key, bank, times, estimator, histories) -> dict:
    """Sample the row's observations in one batched call, score them by C2ST, and describe the row
    by what actually ran (the estimator's configuration and the resolved sampler)."""
    task_name = task.name
    data = [sbibm_observation(wheel, task_name, i) for i in observations]
    # "auto": RWMH up to 4-D, HMC beyond, as chosen on exact likelihoods (benchmarks/choose_sampler.py)
    options = {} if args.independence_prob is None else dict(independence_prob=args.independence_prob)
    options = {} if args.defaults else dict(method=args.method, num_samples=args.num_samples, **options)
    x_obs = np.stack([d[0].reshape(task.x_shape) for d in data])
    start = time.perf_counter()
    post = sample_posterior(jax.random.fold_in(key, 2), estimator, task.prior, x_obs, **options)
    post.samples.block_until_ready()
    times["sample"] = time.perf_counter() - start
    start = time.perf_counter()
    refs = np.stack([ref[: args.num_samples] for _, ref in data])
    if args.c2st_backend == "sklearn" and args.c2st_jobs > 1:  # one fit per process; same scores as serial
        # spawn, not fork: forking a process that runs JAX's threads can deadlock
        with ProcessPoolExecutor(args.c2st_jobs, mp_context=multiprocessing.get_context("spawn")) as pool:
            scores = list(pool.map(c2st, refs, np.asarray(post.samples)))
    else:
        scores = c2st_scores(refs, np.asarray(post.samples), args.c2st_backend, args.c2st_batch, not args.quiet)
    times["c2st"] = time.perf_counter() - start
    return dict(task=task_name, num_simulations=budget, observations=list(observations),
                c2st=scores, c2st_backend=args.c2st_backend, c2st_mean=float(np.mean(scores)), c2st_std=float(np.std(scores)),
                method=post.sampler.name, device=jax.devices()[0].device_kind, cpu_count=os.cpu_count(), jax=jax.__version__,
                thin=post.thin, independence_prob=getattr(post.sampler, "independence_prob", 0.0), members=getattr(estimator, 'num_members', 1), ema_decay=histories[0].ema_decay, defaults=bool(args.defaults), **recipe(args), theta_bound=estimator.config.theta_bound, quadratic=estimator.config.quadratic, choices=[h.choices for h in histories], epochs=[len(h.train_loss) for h in histories],
                best_epoch=[h.best_epoch for h in histories],
                acceptance=float(np.mean(post.acceptance_rate)), seconds=times,
                published=published(task_name, budget))


def torch_prior_arrays(prior) -> dict | None:
    """``prior`` as ``sbi_nre_a.py``'s bank fields (``prior``: family, ``a``, ``b``: its parameters,
    float32), or None for a family it does not build."""
    base = getattr(prior, "base_dist", None)
    d = prior.event_shape[0]
    vec = lambda v: np.broadcast_to(np.asarray(v, np.float32), (d,))
    if isinstance(prior, dist.MultivariateNormal):
        return dict(prior="mvn", a=vec(prior.loc), b=np.asarray(prior.covariance_matrix, np.float32))
    families = {dist.Uniform: ("box", "low", "high"), dist.Normal: ("normal", "loc", "scale"),
                dist.LogNormal: ("lognormal", "loc", "scale")}
    if isinstance(prior, dist.Independent) and type(base) in families:
        kind, a, b = families[type(base)]
        return dict(prior=kind, a=vec(getattr(base, a)), b=vec(getattr(base, b)))
    return None


def run_sbi(task_name: str, budget: int, observations, wheel, args, backend: str) -> dict:
    """sbi's NRE_A with its defaults (``sbi_nre_a.py`` under ``--sbi-python``) on the bank and the
    observations aalr_jax gets in :func:`run_one`, scored by the same C2ST (``backend``, the row's)
    against the same references, with the task's prior rebuilt in torch (:func:`torch_prior_arrays`)."""
    task = tasks.get(task_name)
    bank = make_bank(task, budget, args.seed)
    data = [sbibm_observation(wheel, task_name, i) for i in observations]
    with tempfile.TemporaryDirectory() as tmp:
        bank_path, out, samples_path = (os.path.join(tmp, n) for n in ("bank.npz", "sbi.json", "samples.npz"))
        np.savez(bank_path, theta=np.asarray(bank.theta), x=np.asarray(bank.x).reshape(bank.theta.shape[0], -1),
                 x_obs=np.stack([d[0].reshape(-1) for d in data]).astype(np.float32),
                 **torch_prior_arrays(task.prior))
        subprocess.run([args.sbi_python, os.path.join(HERE, "sbi_nre_a.py"), "--bank", bank_path,
                        "--num-samples", str(args.num_samples), "--seed", str(args.seed),
                        "--output", out, "--samples", samples_path], check=True,
                       stdout=subprocess.DEVNULL if args.quiet else None)
        with open(out) as f:
            theirs = json.load(f)
        samples = np.load(samples_path)["samples"]
    start = time.perf_counter()
    refs = np.stack([ref[: args.num_samples] for _, ref in data])
    # sbi's MCMC can run off to infinity (lotka_volterra, log-normal prior): such an observation
    # has no C2ST; it is counted, never dropped from the record or clipped
    nonfinite = [int(v) for v in np.sum(~np.all(np.isfinite(samples), axis=-1), axis=-1)]
    finite = [i for i, k in enumerate(nonfinite) if k == 0]
    scores = [None] * len(nonfinite)
    for i, v in zip(finite, c2st_scores(refs[finite], samples[finite], backend, args.c2st_batch, not args.quiet)
                    if finite else []):
        scores[i] = v
    kept = [v for v in scores if v is not None]
    summary = (lambda f: float(f(kept)) if kept else None)
    return dict(c2st=scores, mean=summary(np.mean) if len(kept) == len(scores) else None,
                finite_mean=summary(np.mean), std=summary(np.std), nonfinite_draws=nonfinite,
                c2st_backend=backend, sbi=theirs["sbi"], epochs=theirs["epochs"],
                seconds=dict(train=theirs["train_seconds"], sample=theirs["sample_seconds"],
                             c2st=time.perf_counter() - start))


def write_markdown(rows, meta, output: str) -> None:
    """``output`` with ``.md`` for ``.json``: the table of :func:`markdown`."""
    with open(os.path.splitext(output)[0] + ".md", "w") as f:
        f.write(markdown(rows, meta))


def parse_range(text: str):
    if "-" in text:
        a, b = text.split("-")
        return list(range(int(a), int(b) + 1))
    return [int(v) for v in text.split(",")]


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--tasks", default=",".join(SBIBM_TASKS))
    parser.add_argument("--budgets", default="1000,10000,100000")
    parser.add_argument("--observations", default="1-10", help="e.g. 1-10 or 1,2,3")
    parser.add_argument("--num-samples", type=int, default=10_000)
    parser.add_argument("--method", default="auto", choices=("auto", "rwmh", "hmc", "nuts"),
                        help="posterior sampler; auto: sample_posterior's default (rwmh up to 4-D, hmc beyond)")
    parser.add_argument("--independence-prob", type=float, default=None,
                        help="RWMH's independence-move probability (default: sample_posterior's, 0.9 up to 4-D; "
                        "0: the plain random walk)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cache", default=os.path.join(os.path.expanduser("~"), ".cache", "aalr_jax_sbibm"))
    parser.add_argument("--output", default=None, help="results JSON (default: results/sbibm.json, "
                        "or results/sbibm_defaults.json with --defaults)")
    parser.add_argument("--c2st-jobs", type=int, default=1, help="processes for the scikit-learn C2ST fits")
    parser.add_argument("--c2st-backend", choices=("sklearn", "jax"), default="sklearn",
                        help="scikit-learn's classifier, or the same protocol in JAX (several times faster)")
    parser.add_argument("--theta-bound", type=lambda v: None if v == "none" else float(v), default=10.0,
                        help="fit's theta_bound (default 10; 'none' feeds z(θ) unbounded, the rows without ᵇ)")
    parser.add_argument("--ensemble", type=int, default=1, help="networks averaged (fit_ensemble) when > 1")
    parser.add_argument("--num-negatives", type=int, default=1,
                        help="fit's num_negatives: independent θ per simulation in each training batch")
    parser.add_argument("--ratio-weighting", type=float, default=DEFAULT_RATIO_WEIGHTING,
                        help="fit's ratio_weighting α: each training pair's loss weighted by (1 + r̂)^α "
                        "(default: fit's, ½; rows without 'α' in their label used 0)")
    parser.add_argument("--ema-decay", type=float, default=None,
                        help="fit's ema_decay β: the parameters' moving average over the optimizer's steps "
                        "(default: fit's; 0: the iterates, as the rows without 'EMA' in their label)")
    parser.add_argument("--quadratic", action="store_true",
                        help="fit's quadratic: learned quadratic terms in θ added to the network's logit")
    parser.add_argument("--patience", type=int, default=50,
                        help="fit's patience (300, fit's max_epochs: no early stopping)")
    parser.add_argument("--c2st-batch", type=int, default=1,
                        help="pairs per JAX C2ST call (same scores; 10 on a GPU, 1 on CPU)")
    parser.add_argument("--sbi-python", help="a Python with sbi: also run sbi's NRE_A on each row's bank "
                        "and observations, the column 'sbi NRE_A'")
    parser.add_argument("--sbi-only", action="store_true",
                        help="with --sbi-python: add sbi's run to existing rows without re-running aalr_jax")
    parser.add_argument("--defaults", action="store_true",
                        help="train and sample with the package defaults only (no recipe options); "
                        "output results/sbibm_defaults.json unless --output is given")
    parser.add_argument("--quiet", action="store_true")
    parser.add_argument("--table-only", action="store_true", help="only re-render the Markdown of --output")
    args = parser.parse_args(argv)
    if args.sbi_only and not args.sbi_python:
        parser.error("--sbi-only needs --sbi-python")
    if args.defaults:
        recipes = [f"--{name.replace('_', '-')}" for name in RECIPE_OPTIONS
                   if getattr(args, name) != parser.get_default(name)]
        if recipes:
            parser.error(f"--defaults trains and samples with the package defaults only; drop {', '.join(recipes)}")
    if args.output is None:
        args.output = os.path.join(HERE, "results", "sbibm_defaults.json" if args.defaults else "sbibm.json")
    saved = dict(meta={}, rows=[])
    if os.path.exists(args.output):  # extend an earlier run: rows are keyed by (task, budget)
        with open(args.output) as f:
            saved = json.load(f)
        for row in saved["rows"]:  # published numbers as this script reads them now
            row["published"] = published(row["task"], row["num_simulations"])
    if args.table_only:
        write_markdown(saved["rows"], saved["meta"], args.output)
        return

    if args.sbi_python:  # before any long run: the priors sbi_nre_a.py can rebuild
        for name in args.tasks.split(","):
            if torch_prior_arrays(tasks.get(name).prior) is None:
                parser.error(f"--sbi-python: sbi_nre_a.py cannot rebuild {name}'s prior "
                             f"({type(tasks.get(name).prior).__name__}) in torch")
    wheel = zipfile.ZipFile(sbibm_wheel(args.cache))
    results = saved["rows"]
    for name in args.tasks.split(","):
        for budget in [int(b) for b in args.budgets.split(",")]:
            observations = parse_range(args.observations)
            if args.sbi_only:
                matches = [r for r in results if (r["task"], r["num_simulations"]) == (name, budget)]
                if not matches:
                    raise SystemExit(f"--sbi-only: no saved row for {name} at {budget} in {args.output}")
                row, observations = matches[0], matches[0]["observations"]
            else:
                row = run_one(name, budget, observations, wheel, args)
                # sbi's NRE_A saw the same bank and observations (they depend on the seed and budget
                # only): a re-run of ours keeps its measured column
                old = [r for r in results if (r["task"], r["num_simulations"]) == (name, budget)]
                if old and old[0].get("sbi_nre_a") and old[0]["observations"] == row["observations"] \
                        and saved["meta"].get("seed", args.seed) == args.seed:
                    row["sbi_nre_a"] = old[0]["sbi_nre_a"]
            if args.sbi_python:
                row["sbi_nre_a"] = run_sbi(name, budget, observations, wheel, args, row.get("c2st_backend", "sklearn"))
            results = [r for r in results if (r["task"], r["num_simulations"]) != (name, budget)] + [row]
            pub = row["published"]
            ref = "  ".join(f"{alg} {v['mean']:.3f}" for alg, v in sorted(pub.items()) if alg in ("NRE", "NPE"))
            print(f"{name:24s} {budget:7d}  AALR {row['c2st_mean']:.3f} ± {row['c2st_std']:.3f}   {ref}   "
                  + " ".join(f"{k} {v:.0f}s" for k, v in row["seconds"].items()), flush=True)
            if row.get("sbi_nre_a"):
                sbi = row["sbi_nre_a"]
                print(f"{'':33s}sbi NRE_A {sbi_column(row)} ± {sbi['std'] or float('nan'):.3f}   "
                      + " ".join(f"{k} {v:.0f}s" for k, v in sbi["seconds"].items()), flush=True)
            meta = dict(device=jax.devices()[0].device_kind, cpu_count=os.cpu_count(), jax=jax.__version__,
                        aalr_jax=aalr_jax.__version__, method=args.method, seed=args.seed,
                        num_samples=args.num_samples)
            os.makedirs(os.path.dirname(args.output), exist_ok=True)
            with open(args.output, "w") as f:
                json.dump(dict(meta=meta, rows=results), f, indent=1)
            write_markdown(results, meta, args.output)


if __name__ == "__main__":
    main()
