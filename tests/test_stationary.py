"""Stationary points: the Gibbs fixed point on a grid (τ > 0) and particle stationary points (τ = 0), checked
against closed forms, the long-time grid and particle solutions, and hand-written gradients."""

import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import pytest
import xarray as xr

import mfpde
from solvers import Convex, GibbsFixedPoint, Grid, Particles, ParticleStationary

TAU = 0.5


def _double_well(temperature=TAU):
    return mfpde.flows.Potential(lambda th: (th[0] ** 2 - 1.0) ** 2, dim=1, temperature=temperature)


def _gridded_two_layer(temperature=0.1):
    """A two-layer flow with features w ∈ R² on a grid, u fixed: R is quadratic in ρ, so Φ depends on ρ."""
    X = jax.random.normal(jax.random.key(0), (24, 2))
    data = mfpde.Dataset(X, jnp.tanh(X @ jnp.array([2.0, -1.0]))[:, None])
    flow = mfpde.flows.TwoLayer(activation="tanh", train_output=False, l2=0.5, temperature=temperature)
    init = mfpde.measures.Product(u=mfpde.measures.Gaussian(mean=2.0, std=0.0), w=mfpde.measures.Gaussian(std=0.7))
    grid = Grid(bounds=((-4.0, 4.0), (-4.0, 4.0)), cells=(24, 24), axes=("w_0", "w_1"), fixed={"u": 2.0})
    return flow, data, init, grid


# --- the Gibbs fixed point --------------------------------------------------------------------------------------


def test_gibbs_state_of_a_potential_is_the_discrete_boltzmann_density(tmp_path):
    grid = Grid(bounds=((-2.5, 2.5),), cells=100)
    problem = mfpde.StationaryProblem(_double_well(), None, mfpde.measures.Gaussian(mean=0.6, std=0.3))
    sol = mfpde.solve(problem, GibbsFixedPoint(grid))
    ds = sol.dataset
    x = grid.nodes()[0]
    boltzmann = np.exp(-((x**2 - 1) ** 2) / TAU)
    boltzmann /= boltzmann.sum()
    assert sol.success and ds.density.dims == ("theta",) and "time" not in ds.dims
    assert np.abs(ds.density.values * grid.cell_volume - boltzmann).sum() < 1e-13
    assert abs(float(ds.mass) - 1.0) < 1e-14 and float(ds.flux_residual) < 1e-10 and float(ds.residual) < 1e-12
    # A linear energy: the starting point softmax(−Φ/τ) is already the root; each stage only confirms it.
    assert int(ds.num_steps) <= 4
    sol.to_netcdf(tmp_path / "gibbs.nc")
    xr.testing.assert_identical(mfpde.load(tmp_path / "gibbs.nc").dataset, ds)


def test_double_well_gibbs_state_long_time_grid_and_noisy_particles_agree():
    grid = Grid(bounds=((-2.5, 2.5),), cells=100)
    init = mfpde.measures.Gaussian(mean=0.6, std=0.3)
    gibbs = mfpde.solve(mfpde.StationaryProblem(_double_well(), None, init), GibbsFixedPoint(grid)).dataset
    flow_problem = mfpde.FlowProblem(_double_well(), None, init, (0.0, 150.0))
    long_time = mfpde.solve(flow_problem, grid, saveat=[150.0]).dataset
    masses = gibbs.density.values * grid.cell_volume
    assert np.abs(long_time.density.values[-1] * grid.cell_volume - masses).sum() < 1e-8
    flow_problem = mfpde.remake(flow_problem, tspan=(0.0, 40.0))
    n = 20_000
    particles = mfpde.solve(flow_problem, Particles(n=n, method="scan", dt=5e-3, save_state=True), saveat=[40.0],
                            key=1).dataset
    theta = particles.theta.values[-1, :, 0]
    # Histogram on 10 bins of 10 cells: L1 distance at the Monte-Carlo level (Σ √(p/n) ≈ 0.02) plus the O(dt) bias.
    counts, _ = np.histogram(theta, bins=grid.edges()[0][::10])
    assert np.abs(counts / n - masses.reshape(10, 10).sum(axis=1)).sum() < 0.04
    var = float(gibbs.theta_cov[0, 0])
    assert abs(theta.mean() - float(gibbs.theta_mean[0])) < 4 * np.sqrt(var / n) + 0.01


def test_nonlinear_gibbs_state_matches_the_long_time_grid_solution():
    flow, data, init, grid = _gridded_two_layer()
    dense = mfpde.solve(mfpde.StationaryProblem(flow, data, init), GibbsFixedPoint(grid)).dataset
    assert int(dense.result) == 0 and float(dense.residual) < 1e-10 and float(dense.flux_residual) < 1e-9
    assert int(dense.num_steps) > 2 and dense.attrs["solver"] == "Newton"  # Φ depends on ρ: Newton iterates
    # Matrix-free: GMRES on Jacobian-vector products instead of the dense LU.
    krylov = mfpde.solve(mfpde.StationaryProblem(flow, data, init), GibbsFixedPoint(grid, dense_cells=0)).dataset
    np.testing.assert_allclose(krylov.density, dense.density, rtol=1e-8, atol=1e-12)
    long_time = mfpde.solve(mfpde.FlowProblem(flow, data, init, (0.0, 30.0)), grid, saveat=[0.0, 30.0]).dataset
    m_gibbs = dense.density.values * grid.cell_volume
    assert np.abs(long_time.density.values[0] * grid.cell_volume - m_gibbs).sum() > 0.1
    assert np.abs(long_time.density.values[-1] * grid.cell_volume - m_gibbs).sum() < 1e-5
    # It minimises the free energy: the flow's F decreases to it from above (to within the integrator's tolerance,
    # which also bounds the tiny negative masses the time stepping leaves).
    assert float(long_time.free_energy[0]) > float(dense.free_energy) + 0.01
    assert abs(float(long_time.free_energy[-1]) - float(dense.free_energy)) < 1e-6
    _assert_self_consistent(m_gibbs, data, grid, 0.1)


def _assert_self_consistent(masses, data, grid, tau):
    """m ∝ exp(−Φ[m]/τ) with Φ_k = (1/n) Σ_i (f_i − y_i) u tanh(w_k·x_i) + (l2/2)|w_k|², written out by hand
    (u = 2, l2 = 0.5)."""
    nodes = np.stack([a.reshape(-1) for a in np.meshgrid(*grid.nodes(), indexing="ij")], axis=1)
    X, y = np.asarray(data.X), np.asarray(data.y)[:, 0]
    features = np.tanh(X @ nodes.T)
    f = features @ (2.0 * masses.reshape(-1))
    phi = 2.0 * (f - y) @ features / len(y) + 0.25 * np.sum(nodes**2, axis=1)
    boltzmann = np.exp(-(phi - phi.min()) / tau)
    np.testing.assert_allclose(masses.reshape(-1), boltzmann / boltzmann.sum(), rtol=1e-8, atol=1e-14)


@pytest.mark.parametrize("temperature", [0.03, pytest.param(0.003, marks=pytest.mark.slow)])  # 0.003: 36 s, slow
def test_small_temperatures_fall_back_to_a_trust_region(temperature):
    # Φ[m] varies by hundreds of τ over the box: Newton from G(m₀) fails at both temperatures (it spends its 256
    # steps: 269 and 328 steps in all were measured), and Dogleg then finds the root, checked by hand below.
    flow, data, init, grid = _gridded_two_layer(temperature)
    ds = mfpde.solve(mfpde.StationaryProblem(flow, data, init), GibbsFixedPoint(grid)).dataset
    assert int(ds.result) == 0 and ds.attrs["solver"] == "Newton, then Dogleg"
    assert float(ds.residual) < 1e-12 and float(ds.flux_residual) < 1e-9
    _assert_self_consistent(ds.density.values * grid.cell_volume, data, grid, temperature)


def test_failed_gibbs_solve_returns_its_last_iterate():
    flow, data, init, grid = _gridded_two_layer(temperature=0.02)
    problem = mfpde.StationaryProblem(flow, data, init)
    with pytest.warns(RuntimeWarning, match="stationary solve stopped early: nonlinear_max_steps_reached"):
        sol = mfpde.solve(problem, GibbsFixedPoint(grid), max_steps=1)
    assert not sol.success and float(sol.dataset.residual) > 1e-6
    assert abs(float(sol.dataset.mass) - 1.0) < 1e-12  # the iterate is still a probability measure
    with pytest.raises(mfpde.IntegrationError) as error:
        mfpde.solve(problem, GibbsFixedPoint(grid), max_steps=1, throw=True)
    assert error.value.solution.result == sol.result


def test_gibbs_bad_input():
    grid = Grid(bounds=((-2.5, 2.5),), cells=20)
    init = mfpde.measures.Gaussian(std=0.5)
    with pytest.raises(ValueError, match="`temperature` must be > 0.*ParticleStationary"):
        mfpde.solve(mfpde.StationaryProblem(_double_well(0.0), None, init), GibbsFixedPoint(grid))
    with pytest.raises(TypeError, match="StationaryProblem"):
        mfpde.solve(mfpde.FlowProblem(_double_well(), None, init, (0.0, 1.0)), GibbsFixedPoint(grid))
    with pytest.raises(TypeError, match="`grid`"):
        GibbsFixedPoint(grid=((-1.0, 1.0),))
    with pytest.raises(ValueError, match="`max_steps`"):
        mfpde.solve(mfpde.StationaryProblem(_double_well(), None, init), GibbsFixedPoint(grid), max_steps=0)


# --- particle stationary points (τ = 0) -----------------------------------------------------------------------


def test_double_well_particles_settle_in_the_well_they_start_above():
    problem = mfpde.StationaryProblem(_double_well(0.0), None, mfpde.measures.Gaussian(mean=0.2, std=1.0))
    ds = mfpde.solve(problem, ParticleStationary(n=64), key=3).dataset
    assert int(ds.result) == 0 and float(ds.velocity_max) < 1e-8
    np.testing.assert_allclose(ds.theta.values[:, 0], np.sign(ds.theta_init.values[:, 0]), atol=1e-9)


def _teacher_problem(l2=1e-3, **flow_options):
    data = mfpde.datasets.teacher(0, n=32, d=2, activation="tanh")
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=l2, **flow_options)
    return data, mfpde.StationaryProblem(flow, data, mfpde.measures.Gaussian(std=1.0))


def _finite_width_loss(theta, X, y, l2):
    """The width-N network's energy written plainly: (1/n) Σ_i ½(f_i − y_i)² + (l2/2N) Σ_j |θ_j|²."""
    u, w = theta[:, 0], theta[:, 1:]
    f = jnp.tanh(X @ w.T) @ u / theta.shape[0]
    return 0.5 * jnp.mean((f - y) ** 2) + 0.5 * l2 * jnp.sum(theta**2) / theta.shape[0]


def test_two_layer_stationary_point_is_a_local_minimum_of_the_finite_network():
    data, problem = _teacher_problem()
    n = 12
    ds = mfpde.solve(problem, ParticleStationary(n=n)).dataset
    assert int(ds.result) == 0 and float(ds.velocity_max) < 1e-7
    theta = jnp.asarray(ds.theta.values)
    X, y = data.X, data.y[:, 0]
    grad = jax.grad(_finite_width_loss)(theta, X, y, 1e-3)
    assert float(jnp.max(jnp.abs(n * grad))) < 1e-7  # v_j = −N ∂J/∂θ_j, independently
    hessian = jax.hessian(_finite_width_loss)(theta, X, y, 1e-3).reshape(theta.size, theta.size)
    assert float(jnp.linalg.eigvalsh(hessian).min()) > -1e-10  # a minimum, not a saddle
    np.testing.assert_allclose(float(ds.energy), float(_finite_width_loss(theta, X, y, 1e-3)), rtol=1e-12)
    # Newton on the velocity from the minimiser's point stays there and drives the velocity to rounding.
    start = mfpde.measures.Particles(u=ds.theta.values[:, :1], w=ds.theta.values[:, 1:])
    polished = mfpde.solve(mfpde.remake(problem, init=start), ParticleStationary(n=n),
                           solver=optx.Newton(rtol=1e-12, atol=1e-12)).dataset
    assert int(polished.result) == 0 and float(polished.velocity_max) < 1e-12
    # Within |v|/λ_min of the Hessian of N·J: the minimum is shallow (l2 = 1e-3), so a few 1e-6.
    np.testing.assert_allclose(polished.theta, ds.theta, atol=1e-4)


def test_two_layer_stationary_point_is_where_the_flow_stops():
    data, problem = _teacher_problem(l2=0.05)  # strongly convex enough for the flow to settle by t = 1000
    n = 12
    start = mfpde.measures.Gaussian(std=1.0).sample(jax.random.key(5), n, problem.flow.groups(data))
    init = mfpde.measures.Particles(**start)
    stationary = mfpde.solve(mfpde.remake(problem, init=init), ParticleStationary(n=n)).dataset
    flow_problem = mfpde.FlowProblem(problem.flow, data, init, (0.0, 1000.0))
    run = mfpde.solve(flow_problem, Particles(n=n, save_state=True), saveat=[1000.0], rtol=1e-10, atol=1e-12,
                      solver=diffrax.Tsit5()).dataset
    # Gradient flow and L-BFGS from the same particles end in the same minimum here.
    assert float(stationary.velocity_max) < 1e-7
    np.testing.assert_allclose(run.loss.values[-1], stationary.loss, rtol=1e-6)
    # As measures: tanh is odd, so (u, w) and (−u, −w) are the same neuron; the flow and L-BFGS may pick either.
    def canonical(theta):
        theta = theta * np.sign(theta[:, :1])
        return theta[np.lexsort(theta.T[::-1])]

    np.testing.assert_allclose(canonical(run.theta.values[-1]), canonical(stationary.theta.values), atol=1e-5)


def test_fixed_coordinates_stay_put():
    data, problem = _teacher_problem(train_output=False)
    ds = mfpde.solve(problem, ParticleStationary(n=8)).dataset
    np.testing.assert_array_equal(ds.theta.sel(param="u"), ds.theta_init.sel(param="u"))
    assert float(np.abs(ds.theta - ds.theta_init).sel(param="w_0").max()) > 1e-3
    assert np.all(ds.velocity.sel(param="u").values == 0)


def test_failed_particle_stationary_solve_returns_its_last_iterate():
    _, problem = _teacher_problem()
    with pytest.warns(RuntimeWarning, match="stationary solve stopped early: nonlinear_max_steps_reached"):
        sol = mfpde.solve(problem, ParticleStationary(n=12), max_steps=3)
    ds = sol.dataset
    assert not sol.success and float(ds.velocity_max) > 1e-4
    assert float(np.abs(ds.theta - ds.theta_init).max()) > 0  # the last iterate, not the start
    with pytest.raises(mfpde.IntegrationError):
        mfpde.solve(problem, ParticleStationary(n=12), max_steps=3, throw=True)


def test_particle_stationary_bad_input():
    _, problem = _teacher_problem(temperature=0.1)
    with pytest.raises(ValueError, match="`temperature` must be 0.*GibbsFixedPoint"):
        mfpde.solve(problem, ParticleStationary(n=8))
    with pytest.raises(ValueError, match="`n` of ParticleStationary"):
        ParticleStationary(n=0)
    _, problem = _teacher_problem()
    with pytest.raises(TypeError, match="`solver` of ParticleStationary must be an optimistix"):
        mfpde.solve(problem, ParticleStationary(n=8), solver=diffrax.Tsit5())
    with pytest.raises(TypeError, match="`flow`"):
        mfpde.StationaryProblem("tanh", None, mfpde.measures.Gaussian())


# --- one driver for the three stationary algorithms -------------------------------------------------------------


def _small_stationary_problems():
    teacher = mfpde.datasets.teacher(0, n=10, d=2)
    W = np.random.default_rng(0).normal(size=(3, 2))
    convex = mfpde.StationaryProblem(mfpde.flows.TwoLayer(activation="tanh", l2=0.01), teacher,
                                     mfpde.measures.Particles(u=np.zeros(3), w=W))
    return [
        (GibbsFixedPoint(Grid(bounds=((-2.5, 2.5),), cells=40)),
         mfpde.StationaryProblem(_double_well(), None, mfpde.measures.Gaussian(std=0.5)), "Newton", 256),
        (ParticleStationary(n=8), mfpde.StationaryProblem(_double_well(0.0), None, mfpde.measures.Gaussian()), "LBFGS",
         10_000),
        (Convex(), convex, "BFGS", 2_000),
    ]


def test_stationary_algorithms_share_arguments_fields_and_errors():
    """The budgets are the measured table of benchmarks/RESULTS.md ("Stationary iteration budgets")."""
    for algorithm, problem, solver, budget in _small_stationary_problems():
        name = type(algorithm).__name__
        ds = mfpde.solve(problem, algorithm).dataset
        assert int(ds.result) == 0 and int(ds.num_steps) >= 1, name
        assert (ds.attrs["solver"], ds.attrs["max_steps"]) == (solver, budget), name
        assert ds.attrs["rtol"] > 0 and ds.attrs["atol"] > 0, name
        with pytest.raises(ValueError, match="`max_steps` must be a positive integer, got True"):
            mfpde.solve(problem, algorithm, max_steps=True)
        with pytest.raises(TypeError, match=f"`solver` of {name} must be an optimistix"):
            mfpde.solve(problem, algorithm, solver=diffrax.Tsit5())
        with pytest.raises(TypeError, match=f"`problem` of {name} must be an mfpde.StationaryProblem"):
            mfpde.solve(mfpde.FlowProblem(problem.flow, problem.data, problem.init, (0.0, 1.0)), algorithm)
