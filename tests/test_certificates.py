"""`mfpde.certify`'s dual lower bound R(ρ) − ∫Φ dρ + inf Φ, against optima and first variations computed here."""

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize
import xarray as xr

import mfpde
from solvers import Convex, ParticleStationary, Particles


def _linear_network_optimum(X, y, lam, alpha):
    """min over measures of a linear network's R: ½E(β·x − y)² + (λ/α)|β|, since realising f = β·x costs at least
    ∫ λ/2 (u² + |w|²) dρ ≥ λ ∫|u||w| dρ ≥ (λ/α)|β|, with equality at one neuron. Its minimiser
    β = (C + μ I)⁻¹ c, μ = λ/(α|β|), by a scalar root in |β|."""
    C, c = X.T @ X / len(y), X.T @ y / len(y)

    def beta(r):
        return np.linalg.solve(C + lam / (alpha * r) * np.eye(len(c)), c)

    r = scipy.optimize.brentq(lambda r: np.linalg.norm(beta(r)) - r, 1e-12, 1e3, xtol=1e-15)
    b = beta(r)
    return 0.5 * np.mean((X @ b - y) ** 2) + lam / alpha * np.linalg.norm(b)


def test_linear_network_gap_closes_with_the_tolerance():
    data = mfpde.datasets.teacher(0, n=20, d=3)
    X, y = np.asarray(data.X), np.asarray(data.y)[:, 0]
    flow = mfpde.flows.TwoLayer(activation="identity", alpha=2.0, l2=0.05)
    optimum = _linear_network_optimum(X, y, 0.05, 2.0)
    prob = mfpde.StationaryProblem(flow, data, mfpde.measures.Gaussian(std=1.0))
    gaps = []
    for tol in (1e-3, 1e-9):
        ds = mfpde.certify(mfpde.solve(prob, ParticleStationary(n=4), rtol=tol, atol=tol)).dataset
        assert int(ds.result) == 0 and ds.attrs["search"] == "unit sphere"
        assert float(ds.lower_bound) <= optimum + 1e-15 and optimum <= float(ds.objective) + 1e-15
        gaps.append(float(ds.gap))
    assert gaps[1] < 1e-9 * optimum and gaps[0] > 10 * gaps[1]


def test_circle_search_equals_the_first_variation_written_out():
    """ReLU, d = 1, no bias: θ = (u, w) on the circle. Φ(u, w) = α u E_i[(f − y) relu(w x_i)] + λ/2 (u² + w²) on
    10⁵ angles, and the bound R − ∫Φ dρ + (2R/λ) min(0, min Φ) formed here."""
    data = mfpde.datasets.teacher(1, n=12, d=1)
    X, y = np.asarray(data.X)[:, 0], np.asarray(data.y)[:, 0]
    lam, alpha = 0.02, 1.5
    flow = mfpde.flows.TwoLayer(activation="relu", alpha=alpha, l2=lam)
    start = mfpde.measures.Particles(u=[0.3, -0.2, 0.5], w=[[1.0], [-0.7], [0.2]])
    prob = mfpde.FlowProblem(flow, data, start, (0.0, 0.5))
    sol = mfpde.solve(prob, Particles(n=3, save_state=True), saveat=[0.0, 0.5])
    ds = mfpde.certify(sol, time=0.5).dataset
    u, w = (np.asarray(sol.dataset.theta.sel(time=0.5).values)[:, i] for i in (0, 1))
    f = alpha * np.mean(u * np.maximum(np.outer(X, w), 0), axis=1)
    R = 0.5 * np.mean((f - y) ** 2) + 0.5 * lam * np.mean(u**2 + w**2)

    def phi(u, w):
        return alpha * u * np.mean((f - y)[:, None] * np.maximum(np.outer(X, w), 0), axis=0) + 0.5 * lam * (u**2 + w**2)

    angle = np.linspace(0, 2 * np.pi, 100_000, endpoint=False)
    brute = phi(np.cos(angle), np.sin(angle)).min()
    assert brute < 0  # this network is not yet optimal: the bound uses 2R/λ
    np.testing.assert_allclose(float(ds.potential_min), brute, atol=1e-8)
    assert float(ds.potential_min) <= brute + 1e-15
    np.testing.assert_allclose(float(ds.objective), R, rtol=1e-12)
    np.testing.assert_allclose(float(ds.mean_potential), np.mean(phi(u, w)), rtol=1e-10)
    np.testing.assert_allclose(float(ds.lower_bound), R - np.mean(phi(u, w)) + 2 * R / lam * float(ds.potential_min),
                               rtol=1e-12)
    np.testing.assert_allclose(phi(*ds.feature.values)[0], float(ds.potential_min), atol=1e-12)
    assert abs(float(np.linalg.norm(ds.feature.values)) - 1) < 1e-12


def test_spurious_stationary_point_keeps_a_gap():
    """tanh on y = tanh(3x₁) + tanh(3x₂): one neuron stops at a point that is stationary but far from optimal over
    measures, and its bound is below what sixteen neurons reach; sixteen neurons nearly close the gap."""
    X = np.random.default_rng(0).normal(size=(30, 2))
    data = mfpde.Dataset(X, np.tanh(3 * X[:, :1]) + np.tanh(3 * X[:, 1:]))
    prob = mfpde.StationaryProblem(mfpde.flows.TwoLayer(activation="tanh", l2=1e-3), data, mfpde.measures.Gaussian())
    one, many = (mfpde.certify(mfpde.solve(prob, ParticleStationary(n=n), rtol=1e-9, atol=1e-9)).dataset
                 for n in (1, 16))
    assert one.attrs["search"] == "all of θ-space" and int(one.result) == int(many.result) == 0
    assert float(one.lower_bound) <= float(many.lower_bound) <= float(many.objective) < float(one.objective)
    assert float(one.relative_gap) > 10 and float(one.potential_min) < float(one.mean_potential) - 1
    assert float(many.relative_gap) < 0.05


def test_with_the_convex_program_and_to_netcdf(tmp_path):
    data = mfpde.datasets.teacher(0, n=10, d=2)
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(activation="tanh", l2=0.01), data, mfpde.measures.Gaussian(), (0.0, 5.0))
    sol = mfpde.solve(prob, Particles(n=6, save_state=True), saveat=[0.0, 5.0])
    check = mfpde.certify(sol, Convex(), starts=64)
    ds = check.dataset
    assert check.success and int(ds.convex_result) == 0
    # the global bound is below the optimum on the support, which is below the flow
    assert float(ds.lower_bound) <= float(ds.convex_lower_bound) <= float(ds.convex_optimum) <= float(ds.objective)
    np.testing.assert_allclose(float(ds.convex_gap), float(ds.objective - ds.convex_optimum), rtol=1e-12)
    check.to_netcdf(tmp_path / "check.nc")
    back = mfpde.load(tmp_path / "check.nc").dataset
    assert float(back.gap) == float(ds.gap) and list(back.param.values) == ["u", "w_0", "w_1"]


def test_convex_reformulation_on_more_candidates_closes_the_gap():
    """The convex program's optimum on A random candidates is a measure (density p, output weights ŵ/p): its energy
    as a flow (computed by the flow, not by the program's ridge formula) is the program's objective, and its gap over
    all features falls as A grows (measured 54 %, 6.0 %, 2.7 %, 0.85 % at A = 10, 100, 300, 1000)."""
    data = mfpde.datasets.teacher(0, n=20, d=2)
    prob = mfpde.StationaryProblem(mfpde.flows.TwoLayer(activation="tanh", l2=1e-2), data, mfpde.measures.Gaussian(std=2.0))
    gaps = []
    for candidates in (10, 100):
        sol = mfpde.solve(prob, Convex(n=candidates), key=0)
        ds = mfpde.certify(sol, starts=64).dataset
        np.testing.assert_allclose(float(ds.objective), float(sol.dataset.objective), rtol=1e-12)
        gaps.append(float(ds.relative_gap))
    assert gaps[0] > 0.2 and gaps[1] < 0.15 * gaps[0]


class _DoubleWell(mfpde.flows.AbstractFlow):
    """A potential plus an attraction between particles, not declared convex."""

    temperature: float = 0.0

    def groups(self, data):
        return {"theta": 1}

    def energy(self, theta, masses, data, *, chunk_size=None):
        x = theta[:, 0]
        return jnp.sum(masses * (x**2 - 1) ** 2) - 0.5 * jnp.sum(masses[:, None] * masses * (x[:, None] - x) ** 2)


def test_bad_input():
    data = mfpde.datasets.teacher(0, n=8, d=2)
    init = mfpde.measures.Gaussian(std=1.0)
    stationary = mfpde.solve(mfpde.StationaryProblem(_DoubleWell(), None, init), ParticleStationary(n=4))
    with pytest.warns(UserWarning, match="not known to be convex in ρ.*only locally"):
        ds = mfpde.certify(stationary, starts=16).dataset
    x, x_j = np.linspace(-4, 4, 80_001)[:, None], stationary.dataset.theta.values[:, 0]
    np.testing.assert_allclose(float(ds.potential_min), np.min((x[:, 0] ** 2 - 1) ** 2 - np.mean((x - x_j) ** 2, axis=1)),
                               atol=1e-8)
    empty = mfpde.Solution(xr.Dataset())  # each refusal comes before the solution is read
    fixed = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=0.1, train_output=False), data, init, (0.0, 1.0))
    with pytest.raises(ValueError, match="needs every coordinate of θ trained"):
        mfpde.certify(empty, problem=fixed)
    with pytest.raises(ValueError, match="`convex`: the convex program is for flows.TwoLayer"):
        mfpde.certify(stationary, Convex())
    with pytest.raises(ValueError, match="`starts` of certify must be an integer ≥ 0"):
        mfpde.certify(stationary, starts=-1)
    deep = mfpde.FlowProblem(mfpde.flows.FeatureDNN(activations=("tanh", "tanh"), penalty="convex", l2=0.1), data,
                             mfpde.measures.DiverseFeatures(), (0.0, 1.0))
    with pytest.raises(ValueError, match="`convex`: a feature flow is certified by the convex program"):
        mfpde.certify(empty, problem=deep)
