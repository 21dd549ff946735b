"""The README's "Write your own flow" example, run exactly as printed there, on Particles, Grid and GibbsFixedPoint,
against its closed forms: mean m(t) = m₀e^{−t} (the attraction cancels in the mean), variance under noise
V' = −2(1 + 2c)V + 2τ, Gibbs state N(0, τ/(1 + 2c))."""

import re
from pathlib import Path

import numpy as np


ROOT = Path(__file__).resolve().parents[1]


def _readme_blocks():
    text = (ROOT / "README.md").read_text()
    section = text.split("## Write your own flow", 1)[1].split("\n## ", 1)[0]
    return re.findall(r"```python\n(.*?)```", section, flags=re.S)


def test_documentation_page_shows_the_tested_example():
    """docs/write-your-own-flow.md prints the README's example, block for block, so the tested code is what it shows."""
    page = (ROOT / "docs" / "write-your-own-flow.md").read_text()
    example = page.split("## Example", 1)[1].split("\n## ", 1)[0]
    assert re.findall(r"```python\n(.*?)```", example, flags=re.S) == _readme_blocks()


def test_readme_custom_flow_example_on_every_algorithm():
    definition, usage = _readme_blocks()
    scope = {}
    exec(definition, scope)
    exec(usage.replace("(0.0, 2.0)", "(0.0, 1.0)").replace("Particles(n=1024)", "Particles(n=256)"), scope)
    c, tau, m0, s0 = 1.0, 0.1, 1.0, 0.5
    particles, noisy, gibbs = (scope[name].dataset for name in ("sol", "noisy", "gibbs"))
    t = particles.time.values
    mean = particles.theta_mean.values[:, 0]  # of 256 sampled particles: exact e^{−t} decay of their own mean
    np.testing.assert_allclose(mean / mean[0], np.exp(-t), rtol=1e-5)
    # Without noise the spread contracts at rate 1 + 2c: V(t) = s₀² e^{−2(1+2c)t}, sample variance of 256 particles.
    var = particles.theta_cov.values[:, 0, 0]
    np.testing.assert_allclose(var / var[0], np.exp(-2 * (1 + 2 * c) * t), rtol=1e-5)
    rate = 2 * (1 + 2 * c)
    exact_var = tau / (1 + 2 * c) + (s0**2 - tau / (1 + 2 * c)) * np.exp(-rate * noisy.time.values)
    # The grid is second order in h (measured: the errors fall 4× per halving of h); at 200 cells they are at most
    # 2.3e-3 in the mean and 1.1% in the variance.
    np.testing.assert_allclose(noisy.theta_mean.values[:, 0], m0 * np.exp(-noisy.time.values), atol=3e-3)
    np.testing.assert_allclose(noisy.theta_cov.values[:, 0, 0], exact_var, rtol=1.5e-2)
    assert int(gibbs.result) == 0
    np.testing.assert_allclose(gibbs.theta_cov.values.reshape(()), tau / (1 + 2 * c), rtol=1e-3)
    np.testing.assert_allclose(gibbs.theta_mean.values.reshape(()), 0.0, atol=1e-10)
