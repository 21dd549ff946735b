import diffrax
import numpy as np

import mfpde
from solvers import Particles

KAPPA, TAU, M0, S0, T = 1.5, 0.5, 1.0, 0.5, 1.0


def _ou(dim=1):
    flow = mfpde.flows.OrnsteinUhlenbeck(kappa=KAPPA, dim=dim, temperature=TAU)
    return mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(mean=M0, std=S0), (0.0, T))


def _check_moments(ds, n, t=T):
    mean_exact = M0 * np.exp(-KAPPA * t)
    var_exact = S0**2 * np.exp(-2 * KAPPA * t) + TAU / KAPPA * (1 - np.exp(-2 * KAPPA * t))
    mean = ds.theta_mean.sel(time=t).values
    var = np.diagonal(ds.theta_cov.sel(time=t).values)
    # Standard errors of the sample mean and variance of N Gaussian samples.
    assert np.all(np.abs(mean - mean_exact) < 4 * np.sqrt(var_exact / n)), (mean, mean_exact)
    assert np.all(np.abs(var - var_exact) < 4 * var_exact * np.sqrt(2 / (n - 1))), (var, var_exact)


def test_ou_adaptive_sde_matches_closed_form():
    n = 20_000
    sol = mfpde.solve(_ou(dim=2), Particles(n=n), saveat=[0.0, 0.5, T], key=1)
    assert sol.success and sol.dataset.attrs["solver"] == "Heun"
    _check_moments(sol.dataset, n)
    _check_moments(sol.dataset, n, t=0.5)


def test_ou_scan_matches_closed_form():
    n = 20_000
    sol = mfpde.solve(_ou(dim=2), Particles(n=n, method="scan", dt=1e-3), saveat=[0.5, T], key=2)
    _check_moments(sol.dataset, n)


def test_scan_weak_order_one():
    # Euler–Maruyama's bias in the variance is O(dt); large N keeps the Monte-Carlo error (≈0.3%) below it.
    n = 200_000
    var_exact = S0**2 * np.exp(-2 * KAPPA * T) + TAU / KAPPA * (1 - np.exp(-2 * KAPPA * T))
    dts = np.array([0.2, 0.1, 0.05])
    errors = []
    for i, dt in enumerate(dts):
        ds = mfpde.solve(_ou(), Particles(n=n, method="scan", dt=dt), saveat=[T], key=10 + i).dataset
        errors.append(abs(float(ds.theta_cov.values[-1, 0, 0]) - var_exact))
    order = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert 0.7 < order < 1.3, (errors, order)


def test_entropy_estimate_and_free_energy_of_gaussian():
    # Saved at 0 and T/2 as well: saved at T alone, this run takes 6× as long for as many steps (15 s against 2.4 s).
    ds = mfpde.solve(_ou(dim=2), Particles(n=4000), saveat=[0.0, 0.5, T], key=3).dataset
    var = np.diagonal(ds.theta_cov.values[-1])
    exact_entropy = 0.5 * np.sum(np.log(2 * np.pi * np.e * var))
    assert abs(float(ds.entropy[-1]) - exact_entropy) < 0.05
    # F = ∫V dρ − τ H against the closed forms of the OU law at T: E|θ|²κ/2 from its moments, H of the Gaussian.
    mean_exact = M0 * np.exp(-KAPPA * T)
    var_exact = S0**2 * np.exp(-2 * KAPPA * T) + TAU / KAPPA * (1 - np.exp(-2 * KAPPA * T))
    exact = 2 * (0.5 * KAPPA * (mean_exact**2 + var_exact) - TAU * 0.5 * np.log(2 * np.pi * np.e * var_exact))
    assert abs(float(ds.free_energy[-1]) - exact) < 0.05 * TAU + 4 * KAPPA * np.sqrt(2 * var_exact**2 / 4000), (
        float(ds.free_energy[-1]), exact)


def test_noisy_two_layer_free_energy_decreases():
    data = mfpde.datasets.teacher(0, n=64, d=2)
    flow = mfpde.flows.TwoLayer(l2=0.1, temperature=0.05)
    prob = mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(std=2.0), (0.0, 10.0))
    ds = mfpde.solve(prob, Particles(n=2000), saveat=[0.0, 1.0, 10.0], key=0).dataset
    assert ds.free_energy.values[-1] < ds.free_energy.values[1] < ds.free_energy.values[0]


def test_width_convergence_rate():
    # Predictions are linear in ρ: their fluctuation O(N^{-1/2}) dominates the O(1/N) bias of nonlinear observables.
    # Two widths 16× apart (each its own compiled program): RMS 0.064 and 0.015, rate −0.52 (also over 32, 128, 512).
    # Tsit5, the default the probes pick for this flow, given: the same solves without compiling the probes.
    data = mfpde.datasets.teacher(0, n=64, d=3)
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3), data, mfpde.measures.Gaussian(), (0.0, 2.0))
    tsit5 = {"solver": diffrax.Tsit5()}
    reference = mfpde.solve(prob, Particles(n=2**16), saveat=[2.0], key=99, **tsit5).dataset.prediction[-1].values
    widths = np.array([32, 512])
    rms = []
    for n in widths:
        f = [mfpde.solve(prob, Particles(n=int(n)), saveat=[2.0], key=s, **tsit5).dataset.prediction[-1].values
             for s in range(16)]
        rms.append(np.sqrt(np.mean((np.array(f) - reference) ** 2)))
    rate = np.polyfit(np.log(widths), np.log(rms), 1)[0]
    assert -0.75 < rate < -0.3, (rms, rate)


def test_checkpointed_scan_draws_the_noise_of_the_unchecked_run(tmp_path):
    # Same key, same Brownian increments, whatever the checkpointing: the segmented run equals the whole one.
    prob, saveat = _ou(), np.linspace(0.1, T, 7)
    algorithm = Particles(n=4, method="scan", dt=0.03, save_state=True)
    whole = mfpde.solve(prob, algorithm, saveat=saveat, key=2).dataset
    checked = mfpde.solve(prob, algorithm, saveat=saveat, key=2, directory=tmp_path, checkpoint_every=3).dataset
    np.testing.assert_allclose(checked.theta.values, whole.theta.values, rtol=0, atol=1e-13)
    assert int(checked.num_steps) == int(whole.num_steps)


def test_knn_entropy_is_the_kozachenko_leonenko_sum():
    """The estimate, computed in row chunks, against the same formula from scipy's k-d tree: N = 1100 samples span two
    chunks of 512 and a remainder."""
    import jax
    import scipy.spatial
    import scipy.special

    from solvers._entropy import knn_entropy

    x = np.asarray(jax.random.normal(jax.random.key(0), (1100, 3)))
    distance, _ = scipy.spatial.cKDTree(x).query(x, k=2)  # itself, then its nearest other sample
    N, p = x.shape
    unit_ball = 0.5 * p * np.log(np.pi) - scipy.special.gammaln(0.5 * p + 1)
    expected = scipy.special.digamma(N) - scipy.special.digamma(1) + unit_ball + p * np.mean(np.log(distance[:, 1]))
    np.testing.assert_allclose(float(knn_entropy(jax.numpy.asarray(x), row_chunk=512)), expected, rtol=1e-12)


def test_independent_increments_have_the_law_of_brownian_motion():
    """Over numbered steps of sizes h_k: W_k/√h_k and √12·H_k/√h_k are independent standard normals, across
    coordinates, steps, and between W and H (sample moments against 0 and 1 at 5 standard errors)."""
    import jax
    import jax.numpy as jnp

    from solvers._integrate import IndependentIncrements

    like = jax.ShapeDtypeStruct((4000,), jnp.float64)
    path = IndependentIncrements(like, jax.random.key(7), (jnp.float64(0.0), jnp.float64(1.0)))
    sizes = [0.5, 0.01, 0.25, 0.25]  # the same interval length twice: distinct steps, distinct draws
    W, H = [], []
    for step, h in enumerate(sizes):
        out = path.at_step(jnp.int32(step)).evaluate(0.0, h, use_levy=True)
        W.append(np.asarray(out.W) / np.sqrt(h))
        H.append(np.asarray(out.H) * np.sqrt(12 / h))
    z = np.concatenate([np.stack(W), np.stack(H)])  # (8, 4000)
    se = 5 / np.sqrt(z.shape[1])
    assert np.all(np.abs(z.mean(1)) < se) and np.all(np.abs(z.var(1) - 1) < 5 * np.sqrt(2 / z.shape[1]))
    correlation = np.corrcoef(z)
    assert np.all(np.abs(correlation[~np.eye(8, dtype=bool)]) < se)
    again = path.at_step(jnp.int32(2)).evaluate(0.3, 0.55)  # the draw depends on the step, not on its times
    np.testing.assert_allclose(np.asarray(again) / np.sqrt(0.25), W[2], rtol=1e-12)


def test_default_noisy_steps_are_never_rejected_and_resume_exactly(tmp_path):
    """Predictable steps: no step is rejected (each step's noise is drawn once); a run continued from checkpoints
    takes the steps and draws the noise of the uninterrupted one, so it equals it to rounding."""
    prob, saveat = _ou(dim=2), np.linspace(0.1, T, 7)
    algorithm = Particles(n=64, save_state=True)
    whole = mfpde.solve(prob, algorithm, saveat=saveat, key=3, rtol=1e-4, atol=1e-4).dataset
    assert int(whole.num_rejected_steps) == 0 and int(whole.num_steps) > len(saveat)
    checked = mfpde.solve(prob, algorithm, saveat=saveat, key=3, rtol=1e-4, atol=1e-4, directory=tmp_path,
                          checkpoint_every=3).dataset
    np.testing.assert_allclose(checked.theta.values, whole.theta.values, rtol=0, atol=1e-13)
    assert int(checked.num_steps) == int(whole.num_steps)


def test_brownian_tol_without_a_controller_of_ones_own_warns_that_it_is_ignored():
    import pytest

    with pytest.warns(UserWarning, match="`brownian_tol` is ignored"):
        mfpde.solve(_ou(), Particles(n=4), saveat=[0.5], brownian_tol=1e-4)


def test_a_solver_of_ones_own_that_queries_the_noise_twice_a_step_gets_brownian_increments():
    """`HalfSolver(EulerHeun())` evaluates the noise on both halves of a step. With the default controller it steps
    on a Brownian tree: per-step increments keyed by the step number would give both halves the same draw, doubling
    the variance of the noise (measured 1.91 instead of 1.00 for dy = dW). The OU moments against the closed form."""
    n = 4000
    sol = mfpde.solve(_ou(), Particles(n=n), saveat=[T], key=5, solver=diffrax.HalfSolver(diffrax.EulerHeun()))
    assert sol.success and "HalfSolver" in sol.dataset.attrs["solver"]
    _check_moments(sol.dataset, n)
