"""README's Python quickstart runs as written, apart from its sizes.

The quickstart's code blocks are extracted from README.md and executed in order; only the budgets
are shrunk (each replacement must find its text, so a README edit that drops a call fails here),
and the numbers the comments promise (shapes, the recorded sampler) are checked on the results.
"""

from __future__ import annotations

import pathlib
import re

import numpy as np

README = pathlib.Path(__file__).resolve().parents[1] / "README.md"
SMALLER = {  # README text -> the same call at a test's budget
    "task, 20_000)": "task, 2_000)",
    "aalr_jax.fit(jax.random.PRNGKey(1), bank)": "aalr_jax.fit(jax.random.PRNGKey(1), bank, max_epochs=3)",
    "num_samples=10_000, num_chains=100,": "num_samples=400, num_chains=20, num_warmup=100,",
    "task, 1000).x": "task, 3).x",
    "xs, num_samples=1000)": "xs, num_samples=100, num_chains=10, num_warmup=50)",
    "bank, 4)": "bank, 2, max_epochs=2)",
    "10_000, sampler=aalr_jax.HMC(num_integration_steps=5))":
        "200, sampler=aalr_jax.HMC(num_integration_steps=5), num_chains=10, num_warmup=50)",
}


def quickstart_blocks() -> list[str]:
    text = README.read_text()
    section = text[text.index("## Python quickstart"): text.index("## How it works")]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_readme_quickstart_runs(tmp_path, monkeypatch):
    blocks = quickstart_blocks()
    code = "\n".join(blocks[:2])  # the quickstart and the composable posterior
    for old, new in SMALLER.items():
        assert old in code, f"README's quickstart no longer contains {old!r}"
        code = code.replace(old, new)
    code = code.replace("post.log_prob(theta)", "post.log_prob(posterior.samples[:5])")
    code = code.replace("post.transform(u)", "post.transform(np.zeros(2, np.float32))")
    monkeypatch.chdir(tmp_path)
    namespace = {"np": np}
    exec(compile(code, str(README), "exec"), namespace)
    posterior, many, draws = namespace["posterior"], namespace["many"], namespace["draws"]
    assert posterior.samples.shape == (400, 2) and posterior.acceptance_rate.shape == (20,)
    assert posterior.rhat.shape == (2,) and many.samples.shape == (3, 100, 2)
    assert (tmp_path / "two_moons.npz").exists()
    assert draws.sampler.name == "hmc" and draws.sampler.num_integration_steps == 5 and draws.thin == 3
    log_prob = np.asarray(namespace["post"].log_prob(posterior.samples[:5]))
    assert log_prob.shape == (5,) and np.isfinite(log_prob).all()
