import diffrax
import equinox as eqx
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import mfpde
import solvers
import solvers._batches
from solvers import Particles


def _problem(temperature=0.0):
    data = mfpde.datasets.teacher(0, n=24, d=2)
    return mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3, temperature=temperature), data, mfpde.measures.Gaussian(), (0.0, 2.0))


# Most of a test's time is the compilation of its programs (an adaptive SDE one takes ~15 s), one per shape and
# kind of run; parameters, keys and tolerances are traced. The single solves below are therefore all
# `Particles(n=16, save_state=True)` saved at [1, 2] (one ODE and one SDE program), and the per-point SDE
# batches are four points of a temperature sweep: tests run in one process share those programs.
SINGLE = Particles(n=16, save_state=True)
SAVEAT = [1.0, 2.0]


def test_deterministic_sweep_equals_single_solves():
    prob = _problem()
    study = mfpde.EnsembleProblem(prob, sweep={"l2": [0.0, 0.1, 1.0], "alpha": [1.0, 2.0]})
    ds = mfpde.solve(study, Particles(n=16), saveat=[1.0, 2.0], key=5, batch_size=4).dataset
    assert ds.loss.dims == ("l2", "alpha", "time") and ds.num_steps.dims == ("l2", "alpha")
    assert (ds.result == 0).all()
    for l2 in (0.0, 0.1, 1.0):
        for alpha in (1.0, 2.0):
            single = mfpde.solve(mfpde.remake(prob, l2=l2, alpha=alpha), SINGLE, saveat=SAVEAT, key=5).dataset
            np.testing.assert_allclose(ds.risk.sel(l2=l2, alpha=alpha), single.risk, rtol=1e-10)
            assert int(ds.num_steps.sel(l2=l2, alpha=alpha)) == int(single.num_steps)


def test_stored_study_is_tied_to_its_controller_and_stepping(tmp_path):
    # A PIDController's array-valued tolerances show only as shapes in its repr; they must still tell two studies
    # apart, so a changed controller never resumes from the other's batches.
    import diffrax
    import jax.numpy as jnp

    study = mfpde.EnsembleProblem(_problem(), sweep={"l2": [0.0, 0.1]})

    def run(rtol, stepping="per_point"):
        controller = diffrax.PIDController(rtol=jnp.asarray(rtol), atol=jnp.asarray(1e-8))
        return mfpde.solve(study, Particles(n=8), saveat=[1.0], batch_size=1, directory=tmp_path,
                           stepsize_controller=controller, batch_stepping=stepping).dataset

    first = run(1e-4)
    xr.testing.assert_identical(run(1e-4).drop_attrs(), first.drop_attrs())  # same settings: resumed from disk
    with pytest.raises(ValueError, match="different study"):
        run(1e-7)
    with pytest.raises(ValueError, match="different study"):
        run(1e-4, "shared")


def test_stored_study_is_tied_to_the_settings_of_its_solver(tmp_path):
    # A float inside the solver (here its root finder's tolerance) tells two studies apart as well.
    import diffrax
    import optimistix as optx

    study = mfpde.EnsembleProblem(_problem(), sweep={"l2": [0.0, 0.1]})

    def run(rtol):
        solver = diffrax.ImplicitEuler(root_finder=optx.Newton(rtol=rtol, atol=1e-8))
        return mfpde.solve(study, Particles(n=4), saveat=[0.5], batch_size=2, directory=tmp_path, solver=solver,
                           stepsize_controller=diffrax.ConstantStepSize(), dt0=0.1).dataset

    assert int(run(1e-6).result.max()) == 0
    with pytest.raises(ValueError, match="different study"):
        run(1e-4)


# "tree" (15 s) is slow: a tree with a controller of one's own is also in `test_shared_steps_equal_single_solves`.
@pytest.mark.parametrize("path", ["increments", pytest.param("tree", marks=pytest.mark.slow)])
def test_noisy_sweep_over_temperature_and_seed_equals_single_solves(path):
    """Same noise, same steps: each point of a per-point study equals its single solve to rounding. With the default
    method (predictable steps, increments numbered by step) and with a controller of one's own on a Brownian tree of
    2¹² leaves. (On the default 2¹⁸ leaves a tree made them differ by up to ~4e-5: each step size follows from an error
    estimate made of the Brownian increments, whose sensitivity to where a step ends grows as the leaves shrink, so
    a last-bit difference from reductions that round differently under vmap grew step after step. Increments keyed
    by the step number have no such sensitivity.)"""
    prob = _problem(0.02)
    options = dict(saveat=SAVEAT)
    if path == "tree":
        pid = diffrax.PIDController(rtol=1e-3, atol=1e-3, pcoeff=0.1, icoeff=0.3)
        options.update(brownian_tol=2.0 * 2.0**-12, stepsize_controller=diffrax.ClipStepSizeController(pid, step_ts=SAVEAT))
    study = mfpde.EnsembleProblem(prob, sweep={"temperature": [0.02, 0.05], "seed": [0, 1, 2]})
    ds = mfpde.solve(study, SINGLE, batch_size=4, **options).dataset
    assert ds.theta.dims == ("temperature", "seed", "time", "particle", "param")
    for temperature in (0.02, 0.05):
        for seed in (0, 1, 2):
            single = mfpde.solve(mfpde.remake(prob, temperature=temperature), SINGLE, key=seed, **options)
            np.testing.assert_allclose(ds.theta.sel(temperature=temperature, seed=seed), single.dataset.theta, atol=1e-11)
    assert not np.allclose(ds.theta.sel(seed=0), ds.theta.sel(seed=1))



@pytest.mark.parametrize("stepping", ["per_point", pytest.param("shared", marks=pytest.mark.slow)])
def test_mixed_temperature_study_gives_each_point_its_own_method(stepping):
    """τ = 0 points get the ODE method and tolerances they get alone (Tsit5, rtol 1e-6), τ > 0 points the SDE one
    (Heun): each point equals its single solve. Solved with the SDE method a τ = 0 point is off by ~1e-4."""
    prob = _problem(0.02)
    options = dict(saveat=SAVEAT)
    # Per point: the shapes of the programs above (four noisy points: those of the noisy sweep's batches). Shared
    # steps: two noisy points of 8 particles, where the tolerance below was measured.
    temperatures, algorithm = ((0.0, 0.02, 0.05), SINGLE) if stepping == "per_point" else (
        (0.0, 0.02), Particles(n=8, save_state=True))
    study = mfpde.EnsembleProblem(prob, sweep={"temperature": list(temperatures), "seed": [1, 2]})
    ds = mfpde.solve(study, algorithm, batch_stepping=stepping, **options).dataset
    assert ds.theta.dims[:2] == ("temperature", "seed") and (ds.result == 0).all()
    assert "Tsit5" in ds.attrs["solver"] and "Heun" in ds.attrs["solver"]
    for temperature in temperatures:
        for seed in (1, 2):
            single = mfpde.solve(mfpde.remake(prob, temperature=temperature), algorithm, key=seed, **options).dataset
            point = ds.sel(temperature=temperature, seed=seed)
            # Per point: equal to rounding. Shared steps: to the tolerance of the point's method (ODE 1e-6, SDE 1e-3).
            tol = 1e-10 if stepping == "per_point" else 1e-6 if temperature == 0.0 else 1e-4  # measured 2.3e-5
            np.testing.assert_allclose(point.theta, single.theta, atol=tol)
            np.testing.assert_allclose(point.free_energy, single.free_energy, atol=tol)
            if stepping == "per_point":
                assert int(point.num_steps) == int(single.num_steps)
    assert np.isnan(ds.entropy.sel(temperature=0.0)).all() and np.isfinite(ds.entropy.sel(temperature=0.02)).all()


@pytest.mark.parametrize("stepping", ["per_point", "shared"])
def test_sixty_four_points_trace_once(monkeypatch, stepping):
    solve = {"per_point": "solve_values", "shared": "solve_shared"}[stepping]
    monkeypatch.setattr(solvers._batches, solve, eqx.debug.assert_max_traces(getattr(solvers._batches, solve), max_traces=1))
    # All points noisy: a study mixing τ = 0 runs its two kinds as two programs (one trace each).
    study = mfpde.EnsembleProblem(_problem(0.01), sweep={"temperature": np.linspace(0.01, 0.1, 16), "seed": range(4)})
    algorithm = Particles(n=8, method="scan", dt=0.1) if stepping == "per_point" else Particles(n=8)
    sol = mfpde.solve(study, algorithm, saveat=[1.0, 2.0], batch_size=16, batch_stepping=stepping)
    assert sol.dataset.loss.shape == (16, 4, 2) and np.isfinite(sol.dataset.loss).all()


def test_shared_steps_equal_single_solves():
    """One step size for the batch, checked against every point's tolerance; each seed's Brownian path drawn once
    and handed to the points holding that seed. Against single solves at a tight pathwise tolerance: a point given
    another seed's path, or stepped past its own tolerance, would be off by O(0.1). A path that is the same whatever
    the steps (a Brownian tree) needs a controller of one's own: the default's predictable steps draw increments per
    step, and a batch's common steps are not a single solve's (`test_shared_predictable_steps_share_each_seeds_noise`).
    And ShARK (strong order 1.5 for additive noise): with the default Heun (strong order 1) two step sequences on one
    path differ by ~1e-4 here."""
    prob = _problem(0.02)
    options = dict(saveat=SAVEAT, rtol=1e-6, atol=1e-6)
    study = mfpde.EnsembleProblem(prob, sweep={"temperature": [0.02, 0.05], "seed": [0, 1, 2]})
    shared = diffrax.ClipStepSizeController(diffrax.PIDController(rtol=1e-6, atol=1e-6, pcoeff=0.1, icoeff=0.3,
                                                                  norm=solvers.MaxRMSNorm(6)), step_ts=SAVEAT)
    ds = mfpde.solve(study, SINGLE, batch_size=6, batch_stepping="shared", stepsize_controller=shared,
                     saveat=SAVEAT, solver=diffrax.ShARK()).dataset
    assert (ds.result == 0).all() and ds.attrs["batch_stepping"] == "shared"
    assert len(set(ds.num_steps.values.reshape(-1).tolist())) == 1  # one step sequence for the batch
    alone = diffrax.ClipStepSizeController(diffrax.PIDController(rtol=1e-6, atol=1e-6, pcoeff=0.1, icoeff=0.3),
                                           step_ts=SAVEAT)
    for temperature, seed in ((0.02, 0), (0.05, 1), (0.05, 2)):  # each seed once, both temperatures
        single = mfpde.solve(mfpde.remake(prob, temperature=temperature), SINGLE, key=seed, saveat=SAVEAT,
                             stepsize_controller=alone, solver=diffrax.ShARK()).dataset
        np.testing.assert_allclose(ds.theta.sel(temperature=temperature, seed=seed), single.theta, atol=2e-5)
    # τ = 0 points stepped together (the ODE method) against their single solves.
    ode = mfpde.EnsembleProblem(mfpde.remake(prob, temperature=0.0), sweep={"seed": [0, 1, 2]})
    ds = mfpde.solve(ode, SINGLE, batch_size=3, batch_stepping="shared", **options).dataset
    deterministic = mfpde.solve(mfpde.remake(prob, temperature=0.0), SINGLE, key=1, **options).dataset
    np.testing.assert_allclose(ds.theta.sel(seed=1), deterministic.theta, atol=2e-5)


def test_batch_of_one_with_shared_steps_is_the_single_solve():
    prob = _problem(0.02)
    options = dict(saveat=SAVEAT)
    study = mfpde.EnsembleProblem(prob, sweep={"seed": [3]})
    ds = mfpde.solve(study, SINGLE, batch_stepping="shared", **options).dataset
    single = mfpde.solve(prob, SINGLE, key=3, **options).dataset
    np.testing.assert_allclose(ds.theta.sel(seed=3), single.theta, atol=1e-11)
    assert int(ds.num_steps.sel(seed=3)) == int(single.num_steps)


def test_max_rms_norm_is_the_worst_point_and_rejects_a_non_finite_error():
    norm = solvers.MaxRMSNorm(points=3)
    error = np.array([[3.0, 4.0], [1.0, 1.0], [0.5, 0.0]]).reshape(-1)
    assert float(norm(error)) == pytest.approx(np.sqrt(12.5))
    for bad in (np.nan, np.inf):
        error[5] = bad  # a step that overflowed for one point is rejected, never accepted with that point lost
        assert float(norm(error)) == np.inf


def _quartic(mean=10.0):
    """dθ/dt = −θ³ from θ₀: θ(t) = θ₀/√(1 + 2θ₀²t). A first step of 100 overflows; smaller ones are fine."""
    flow = mfpde.flows.Potential(potential=lambda th: 0.25 * jnp.sum(th**4), dim=1)
    return mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(mean=mean, std=0.0), (0.0, 10.0))


@pytest.mark.parametrize("stepping", [None, "shared"])
def test_a_step_that_overflows_is_rejected_and_the_point_recovers(stepping):
    options = dict(saveat=[1.0, 10.0], dt0=100.0, solver=diffrax.Tsit5())
    exact = lambda m, t: m / np.sqrt(1 + 2 * m**2 * t)  # noqa: E731
    if stepping is None:
        ds = mfpde.solve(_quartic(), Particles(n=2), **options).dataset
        assert int(ds.result) == 0
        np.testing.assert_allclose(ds.theta_mean.values[:, 0], exact(10.0, np.array([1.0, 10.0])), rtol=1e-5)
        return
    study = mfpde.EnsembleProblem(_quartic(), sweep={"init.mean": [10.0, 1.0]})
    ds = mfpde.solve(study, Particles(n=2), batch_stepping=stepping, **options).dataset
    assert list(ds.result.values) == [0, 0]
    for m in (10.0, 1.0):
        np.testing.assert_allclose(ds.theta_mean.sel(init_mean=m).values[:, 0], exact(m, np.array([1.0, 10.0])),
                                   rtol=1e-5)


def test_a_point_that_dies_in_a_shared_batch_leaves_it_with_its_partial_result():
    """dθ/dt = 1 while θ < 1 (exactly θ₀ + t); beyond 1 the velocity is NaN. The point from θ₀ = 0.5 cannot pass
    θ = 1 at any step: it is marked failed at the smallest step, keeps what it computed before, and the batch's
    other point, from θ₀ = −10, runs on at the steps it needs alone (were it held back, both would end at
    max_steps)."""
    flow = mfpde.flows.Potential(potential=lambda th: jnp.sum(-th + 0.0 * jnp.sqrt(1.0 - th)), dim=1)
    prob = mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(mean=0.5, std=0.0), (0.0, 2.0))
    study = mfpde.EnsembleProblem(prob, sweep={"init.mean": [0.5, -10.0]})
    with pytest.warns(RuntimeWarning, match="nonfinite"):
        ds = mfpde.solve(study, Particles(n=2), saveat=[0.25, 2.0], batch_stepping="shared", max_steps=2000,
                         solver=diffrax.Tsit5()).dataset
    assert list(ds.result.values) == [9, 0], ds.result.values
    dead, alive = ds.theta_mean.sel(init_mean=0.5).values[:, 0], ds.theta_mean.sel(init_mean=-10.0).values[:, 0]
    np.testing.assert_allclose(dead[0], 0.75, rtol=1e-12)
    assert np.isnan(dead[1])
    np.testing.assert_allclose(alive, [-9.75, -8.0], rtol=1e-12)
    assert int(ds.num_steps.sel(init_mean=-10.0)) < 200


def test_study_progress_bar_counts_points_and_batches(capfd):
    study = mfpde.EnsembleProblem(_problem(), sweep={"l2": [0.0, 0.1, 0.2]})
    mfpde.solve(study, Particles(n=4, method="scan", dt=0.5), saveat=[2.0], batch_size=2, progress_meter=True)
    err = capfd.readouterr().err
    assert "2 batches of 2" in err and "3/3" in err


def test_zipped_sweep_and_round_trip(tmp_path):
    study = mfpde.EnsembleProblem(_problem(), sweep={"init.std": [0.5, 1.0, 2.0], "l2": [0.0, 0.1, 0.2]}, product=False)
    sol = mfpde.solve(study, Particles(n=8), saveat=[2.0], batch_size=2)
    ds = sol.dataset
    assert ds.loss.dims == ("point", "time") and list(ds.init_std.values) == [0.5, 1.0, 2.0]
    assert "point" in ds.l2.dims
    xr.testing.assert_identical(mfpde.load(sol.to_netcdf(tmp_path / "s.nc")).dataset, ds)
    assert "over 3 points" in sol.summary()


@pytest.mark.parametrize("stepping", ["per_point", "shared"])
def test_failed_point_is_marked_not_dropped(stepping):
    prob = mfpde.FlowProblem(mfpde.flows.OrnsteinUhlenbeck(kappa=1.0), None, mfpde.measures.Gaussian(), (0.0, 200.0))
    study = mfpde.EnsembleProblem(prob, sweep={"kappa": [0.5, 1000.0]})
    # Explicit Euler with step 1 is unstable for κ = 1000: that point blows up, the other must not be harmed.
    algorithm, options = Particles(n=4, method="scan", dt=1.0), {}
    if stepping == "shared":
        algorithm = Particles(n=4)
        options = dict(solver=diffrax.Euler(), stepsize_controller=diffrax.ConstantStepSize(), dt0=1.0)
    with pytest.warns(RuntimeWarning, match="nonfinite"):
        sol = mfpde.solve(study, algorithm, saveat=[1.0, 200.0], batch_stepping=stepping, **options)
    ds = sol.dataset
    assert list(ds.result.values) == [0, 9]
    assert np.isfinite(ds.risk.sel(kappa=0.5)).all() and np.isnan(ds.risk.sel(kappa=1000.0)[-1])
    np.testing.assert_allclose(ds.theta_mean.sel(kappa=0.5)[-1], 0.0, atol=1e-12)


@pytest.mark.parametrize(
    "sweep, match",
    [
        ({"nonsense": [1.0]}, "nonsense"),
        ({"temperature": [0.1, -0.1]}, "temperature"),
        ({"tspan": [1.0]}, "tspan"),
        ({"seed": [0.5]}, "seed"),
        ({"l2": []}, "l2"),
        ({}, "sweep"),
    ],
)
def test_bad_sweeps(sweep, match):
    with pytest.raises((ValueError, TypeError), match=match):
        mfpde.EnsembleProblem(_problem(), sweep=sweep)


def test_zipped_lengths_must_match():
    with pytest.raises(ValueError, match="equal lengths"):
        mfpde.EnsembleProblem(_problem(), sweep={"l2": [0.0, 1.0], "alpha": [1.0]}, product=False)


_STUDY_SCRIPT = """
import sys
import jax
jax.config.update("jax_enable_x64", True)
import mfpde
from solvers import Particles

data = mfpde.datasets.teacher(0, n=24, d=2)
prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3, temperature=0.01), data, mfpde.measures.Gaussian(), (0.0, 2.0))
study = mfpde.EnsembleProblem(prob, sweep={"temperature": [0.01, 0.02, 0.03, 0.04], "seed": [0, 1, 2, 3]})
ALGORITHM = Particles(n=32, method="scan", dt=2e-4)
if __name__ == "__main__":
    mfpde.solve(study, ALGORITHM, saveat=[1.0, 2.0], batch_size=2, directory=sys.argv[1])
"""


def test_killed_study_resumes_without_loss_or_duplication(tmp_path):
    import importlib.util
    import signal
    import subprocess
    import sys
    import time

    script = tmp_path / "study.py"
    script.write_text(_STUDY_SCRIPT)
    out = tmp_path / "out"
    process = subprocess.Popen([sys.executable, str(script), str(out)])
    deadline = time.time() + 240
    while time.time() < deadline and len(list(out.glob("points-*.nc"))) < 2 and process.poll() is None:
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    finished = sorted(p.name for p in out.glob("points-*.nc"))
    assert 2 <= len(finished) < 8, finished
    spec = importlib.util.spec_from_file_location("study", script)
    study = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(study)
    resumed = mfpde.solve(study.study, study.ALGORITHM, saveat=[1.0, 2.0], batch_size=2, directory=out).dataset
    assert sorted(p.name for p in out.glob("points-*.nc"))[: len(finished)] == finished
    assert len(list(out.glob("points-*.nc"))) == 8
    fresh = mfpde.solve(study.study, study.ALGORITHM, saveat=[1.0, 2.0], batch_size=2).dataset
    xr.testing.assert_equal(resumed, fresh)
    with pytest.raises(ValueError, match="different study"):
        other = mfpde.EnsembleProblem(mfpde.remake(study.study.problem, l2=0.5), sweep=study.study.sweep)
        mfpde.solve(other, study.ALGORITHM, saveat=[1.0, 2.0], batch_size=2, directory=out)


def test_sweep_over_width_and_step():
    prob = _problem(0.01)
    study = mfpde.EnsembleProblem(prob, sweep={"algorithm.n": [8, 32], "algorithm.dt": [0.1, 0.05], "seed": [0, 1]})
    ds = mfpde.solve(study, Particles(n=4, method="scan", dt=0.1), saveat=[2.0]).dataset
    assert ds.loss.dims == ("algorithm_n", "algorithm_dt", "seed", "time") and ds.loss.shape == (2, 2, 2, 1)
    single = mfpde.solve(prob, Particles(n=32, method="scan", dt=0.05), saveat=[2.0], key=1).dataset
    np.testing.assert_allclose(ds.loss.sel(algorithm_n=32, algorithm_dt=0.05, seed=1), single.loss, rtol=1e-10)
    assert int(ds.num_steps.sel(algorithm_n=8, algorithm_dt=0.05, seed=0)) == 40
    with pytest.raises(ValueError, match="algorithm.dt"):
        mfpde.solve(mfpde.EnsembleProblem(prob, {"algorithm.dt": [0.1]}), Particles(n=4), saveat=[2.0])
    with pytest.raises(ValueError, match="algorithm.chunk_size"):
        mfpde.solve(mfpde.EnsembleProblem(prob, {"algorithm.chunk_size": [1]}), Particles(n=4), saveat=[2.0])


def test_shared_predictable_steps_share_each_seeds_noise():
    """Default noisy points stepped together draw each seed's increments once per step. On a linear flow
    (Ornstein–Uhlenbeck) a point is then θ_τ = a + √τ·Z with a and Z fixed by its seed and the batch's steps, so
    θ_{0.04} − θ_{0.01} = θ_{0.09} − θ_{0.04} (= 0.1·Z) to rounding; another seed's Z differs by O(1)."""
    flow = mfpde.flows.OrnsteinUhlenbeck(kappa=1.0, dim=2, temperature=0.01)
    prob = mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(), (0.0, 1.0))
    study = mfpde.EnsembleProblem(prob, sweep={"temperature": [0.01, 0.04, 0.09], "seed": [0, 1]})
    ds = mfpde.solve(study, Particles(n=16, save_state=True), saveat=[0.5, 1.0], batch_size=6,
                     batch_stepping="shared").dataset
    theta = ds.theta.values  # (temperature, seed, time, particle, param)
    np.testing.assert_allclose(theta[1] - theta[0], theta[2] - theta[1], atol=1e-12)
    assert np.abs((theta[1] - theta[0])[0] - (theta[1] - theta[0])[1]).max() > 0.05
