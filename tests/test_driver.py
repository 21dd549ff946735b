"""The one integration driver under `Particles`, `Units` and `Grid`: one `solve`, the same options, checks, errors and
result fields for every time-stepping algorithm."""

import jax
import numpy as np
import pytest

import mfpde
import solvers._driver
from solvers import AbstractIntegrationAlgorithm, Grid, Particles, Units

_KAPPA = 0.7
_TIMES = np.linspace(0.0, 1.0, 3)


def _cases():
    """(algorithm, problem, the closed-form mean of the first coordinate at `_TIMES`, or None) of each algorithm, by
    name."""
    return dict(zip(("Particles", "Units", "Grid"), _each_case()))


def _each_case():
    theta0 = np.asarray(jax.random.normal(jax.random.key(3), (8, 1)))
    ou = mfpde.flows.OrnsteinUhlenbeck(kappa=_KAPPA, dim=1)
    particles = mfpde.FlowProblem(ou, None, mfpde.measures.Particles(theta=theta0), (0.0, 1.0))
    # τ = 0: each particle decays as θ0 e^{−κt}, so does their mean.
    yield Particles(), particles, theta0.mean() * np.exp(-_KAPPA * _TIMES)
    data = mfpde.datasets.teacher(0, n=6, d=2)
    layered = mfpde.FlowProblem(mfpde.flows.Multilayer(activations=("tanh", "tanh")), data, mfpde.measures.IIDLayers(),
                                (0.0, 1.0))
    yield Units(n=(4, 4)), layered, None
    grid = mfpde.FlowProblem(ou, None, mfpde.measures.Gaussian(mean=1.0, std=0.5), (0.0, 1.0))
    # τ = 0 on the grid: upwind transport of the density, first order in h; its mean follows e^{−κt} to O(h).
    yield Grid(bounds=[(-1.5, 3.5)], cells=250), grid, np.exp(-_KAPPA * _TIMES)


@pytest.mark.parametrize("name", ["Particles", "Units", "Grid"])
def test_time_stepping_algorithms_share_solve_and_fields(name):
    algorithm, problem, mean = _cases()[name]
    assert type(algorithm).solve is AbstractIntegrationAlgorithm.solve
    ds = mfpde.solve(problem, algorithm, saveat=_TIMES, key=1).dataset
    np.testing.assert_array_equal(ds.time.values, _TIMES)
    assert int(ds.result) == 0
    assert int(ds.num_steps) == int(ds.num_accepted_steps) + int(ds.num_rejected_steps) > 0
    for name in ("seed", "solver", "stepsize_controller", "rtol", "atol", "max_steps", "wall_time_s", "compile_time_s"):
        assert name in ds.attrs, name
    assert (ds.attrs["seed"], ds.attrs["max_steps"]) == (1, solvers._driver.MAX_STEPS)
    if mean is not None:
        tol = 1e-7 if name == "Particles" else 1e-2  # Grid: 4.8e-3 measured at h = 0.02
        np.testing.assert_allclose(ds.theta_mean.values[:, 0], mean, rtol=tol, atol=tol)


@pytest.mark.usefixtures("no_integration")
@pytest.mark.parametrize("name", ["Particles", "Units", "Grid"])
def test_time_stepping_algorithms_refuse_the_same_way(name):
    algorithm, problem, _ = _cases()[name]
    with pytest.raises(ValueError, match="`max_steps` must be a positive integer, got 0"):
        mfpde.solve(problem, algorithm, max_steps=0)
    with pytest.raises(ValueError, match="`batch_size` must be a positive integer"):
        mfpde.solve(mfpde.EnsembleProblem(problem, {"seed": [0, 1]}), algorithm, batch_size=-1)
    with pytest.raises(ValueError, match="`batch_stepping` must be 'per_point' or 'shared', got 'lockstep'"):
        mfpde.solve(problem, algorithm, batch_stepping="lockstep")
    with pytest.raises(ValueError, match=f"sweep `algorithm.stiff_steps`: {name} can sweep"):
        mfpde.solve(mfpde.EnsembleProblem(problem, {"algorithm.stiff_steps": [10, 20]}), algorithm)
    stationary = mfpde.StationaryProblem(problem.flow, problem.data, problem.init)
    with pytest.raises(TypeError, match=f"`problem` of {name} must be an mfpde.FlowProblem or EnsembleProblem"):
        mfpde.solve(stationary, algorithm)
    with pytest.raises(TypeError, match="`key` must be an integer seed or a JAX PRNG key"):
        mfpde.solve(problem, algorithm, key="zero")


@pytest.mark.usefixtures("no_integration")
def test_what_one_algorithm_alone_refuses():
    cases = _cases()
    measure_flow, layered_flow = cases["Particles"][1], cases["Units"][1]
    grid, grid_problem, _ = cases["Grid"]
    with pytest.raises(ValueError, match="`batch_stepping` of Grid must be 'per_point'"):
        mfpde.solve(mfpde.EnsembleProblem(grid_problem, {"kappa": [0.5, 1.0]}), grid, batch_stepping="shared")
    with pytest.raises(TypeError, match="`problem` of Particles must have a flow on measures .* solvers.Units"):
        mfpde.solve(layered_flow, Particles(n=4))
    with pytest.raises(TypeError, match="`problem` of Units must have a layered flow .* solvers.Particles"):
        mfpde.solve(measure_flow, Units(n=(4, 4)))
