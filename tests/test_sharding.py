"""Several forced host devices, in a subprocess (the device count is fixed when JAX starts)."""

import os
import subprocess
import sys
import textwrap

import pytest

SCRIPT = textwrap.dedent(
    """
    import jax
    jax.config.update("jax_enable_x64", True)
    import numpy as np
    import mfpde
    from solvers import Particles

    assert jax.device_count() == 4
    data = mfpde.datasets.teacher(0, n=32, d=3)
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3), data, mfpde.measures.Gaussian(), (0.0, 2.0))
    a = mfpde.solve(prob, Particles(n=64, save_state=True), saveat=[1.0, 2.0], key=0).dataset
    b = mfpde.solve(prob, Particles(n=64, save_state=True, shard=False), saveat=[1.0, 2.0], key=0).dataset
    assert a.attrs["devices"] == 4 and b.attrs["devices"] == 1
    np.testing.assert_allclose(a.theta, b.theta, rtol=1e-10, atol=1e-12)

    study = mfpde.EnsembleProblem(mfpde.remake(prob, temperature=0.01), {"temperature": [0.01, 0.02], "seed": [0, 1, 2, 3]})
    # Per point, the batch's points are split over the devices whatever the integrator: the Euler–Maruyama scan
    # (an adaptive SDE program costs ~15 s to compile: the adaptive one is sharded in the slow test below).
    c = mfpde.solve(study, Particles(n=16, method="scan", dt=0.05), saveat=[1.0, 2.0], batch_size=4).dataset
    d = mfpde.solve(study, Particles(n=16, method="scan", dt=0.05, shard=False), saveat=[1.0, 2.0], batch_size=4).dataset
    assert c.attrs["devices"] == 4 and d.attrs["devices"] == 1 and np.isfinite(d.risk).all()
    np.testing.assert_allclose(c.risk, d.risk, rtol=1e-9)

    # The population risk's O(N²) pairwise sum (arc-cosine kernel) in blocks of 3 particles (padded), the particle
    # axis split over the devices (fixed Euler steps: a small program to compile twice).
    population = mfpde.FlowProblem(mfpde.flows.TwoLayer("relu", l2=1e-3), mfpde.datasets.isotropic_gaussians(4, 0.4),
                                   mfpde.measures.Gaussian(), (0.0, 0.5))
    lean = dict(n=16, chunk_size=3, save_state=True, method="scan", dt=0.1)
    g = mfpde.solve(population, Particles(**lean), saveat=[0.5], key=1).dataset
    h = mfpde.solve(population, Particles(**lean, shard=False), saveat=[0.5], key=1).dataset
    assert g.attrs["devices"] == 4 and (g.result == 0).all()
    np.testing.assert_allclose(g.theta, h.theta, rtol=1e-10, atol=1e-12)
    print("sharded ok")
    """
)

# Stepped together, two points per device: each device runs its points one after another. (Saved at t = 1 too: a
# noisy adaptive run saved at its end alone takes several times as long.) Two adaptive SDE programs, ~15 s each.
SHARED_SCRIPT = SCRIPT.split("\na = mfpde.solve")[0] + textwrap.dedent(
    """
    study = mfpde.EnsembleProblem(mfpde.remake(prob, temperature=0.01), {"temperature": [0.01, 0.02], "seed": [0, 1, 2, 3]})
    e = mfpde.solve(study, Particles(n=16), saveat=[1.0, 2.0], batch_size=8, batch_stepping="shared").dataset
    f = mfpde.solve(study, Particles(n=16, shard=False), saveat=[1.0, 2.0], batch_size=8, batch_stepping="shared").dataset
    assert np.isfinite(f.risk).all() and (f.result == 0).all()
    np.testing.assert_allclose(e.risk, f.risk, rtol=1e-9)  # f equals single solves: test_ensemble.py
    print("sharded ok")
    """
)


def _run_on_four_devices(script):
    env = {**os.environ, "XLA_FLAGS": "--xla_force_host_platform_device_count=4", "JAX_PLATFORMS": "cpu"}
    done = subprocess.run([sys.executable, "-c", script], env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "sharded ok" in done.stdout


def test_sharded_runs_match_unsharded():
    _run_on_four_devices(SCRIPT)


@pytest.mark.slow  # two adaptive SDE programs, ~30 s of compilation
def test_sharded_shared_steps_match_unsharded():
    _run_on_four_devices(SHARED_SCRIPT)
