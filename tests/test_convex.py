import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import mfpde
from solvers import Convex, Particles


def _brute_force(Phi, y, lam, cost, tau):
    """min of the convex program over the simplex of three candidates, written directly in (p, ŵ): the ridge
    problem in ŵ solved by NumPy on the support of p, and p searched on every face of the simplex (the vertices, a
    bounded scalar search on each edge, Nelder–Mead on softmax weights inside)."""
    n = Phi.shape[0]

    def value(p):
        s = p > 0
        P = Phi[:, s]
        v = np.linalg.solve(P.T @ P / n + lam * np.diag(1 / p[s]), P.T @ y / n)
        return (0.5 * np.mean(np.sum((P @ v - y) ** 2, axis=1)) + 0.5 * lam * np.sum(np.sum(v**2, axis=1) / p[s])
                + cost @ p + tau * np.sum(p[s] * np.log(p[s])))

    values = [value(np.eye(3)[i]) for i in range(3)]
    for i, j in ((0, 1), (0, 2), (1, 2)):
        def edge(a, i=i, j=j):
            p = np.zeros(3)
            p[i], p[j] = a, 1 - a
            return value(p)
        values.append(scipy.optimize.minimize_scalar(edge, bounds=(1e-14, 1 - 1e-14), method="bounded",
                                                     options={"xatol": 1e-13}).fun)
    inside = scipy.optimize.minimize(lambda s: value(np.exp(s - np.logaddexp.reduce(s))), np.zeros(3),
                                     method="Nelder-Mead", options={"xatol": 1e-12, "fatol": 1e-16, "maxiter": 20_000})
    return min(*values, inside.fun)


@pytest.mark.parametrize("tau", [0.0, 0.05])
def test_optimum_equals_brute_force(tau):
    data = mfpde.datasets.teacher(0, n=10, d=2)
    W = np.random.default_rng(0).normal(size=(3, 2))
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=0.01, temperature=tau)
    prob = mfpde.StationaryProblem(flow, data, mfpde.measures.Particles(u=np.zeros(3), w=W))
    ds = mfpde.solve(prob, Convex()).dataset
    Phi = np.tanh(np.asarray(data.X) @ W.T)
    reference = _brute_force(Phi, np.asarray(data.y), 0.01, 0.005 * np.sum(W**2, axis=1), tau)
    assert abs(float(ds.objective) - reference) < 1e-9 * abs(reference)
    assert -1e-15 <= float(ds.duality_gap) < 1e-9 * abs(reference)  # ≥ 0 up to rounding
    assert float(ds.lower_bound) <= reference + 1e-15
    assert int(ds.result) == 0
    if tau == 0:
        assert ds.mass.values.min() < 1e-10 and int(ds.support_size) == 2  # sparse: one candidate unused
    else:
        assert ds.mass.values.min() > 0.2  # the Gibbs form is interior


def test_objective_is_the_flow_energy_of_the_optimal_reweighting():
    """With two outputs and a bias: the reported optimum equals the flow's own energy R at masses p and output
    weights u, and the density has the Gibbs form p ∝ exp(−∂G/∂p / τ) of MATH.md 4."""
    data = mfpde.datasets.teacher(1, n=12, d=3, k=2)
    flow = mfpde.flows.TwoLayer(activation="tanh", bias=True, l2=0.02, l2_output=0.05, temperature=0.01)
    prob = mfpde.StationaryProblem(flow, data, mfpde.measures.Gaussian(std=1.0))
    ds = mfpde.solve(prob, Convex(n=40), key=3).dataset
    theta, p = jnp.asarray(ds.theta.values), jnp.asarray(ds.mass.values)
    energy = float(flow.energy(theta, p, data)) + 0.01 * float(jnp.sum(p * jnp.log(p)))
    np.testing.assert_allclose(float(ds.objective), energy, rtol=1e-12)
    assert float(ds.duality_gap) < 1e-9 * abs(float(ds.objective))
    # The potential Φ_a = ∂G/∂p_a = c_a − |g_a|²/(2λ_u), g_a = E_i (f − y)·φ_a: log p = −Φ/τ + const.
    X, y, W = np.asarray(data.X), np.asarray(data.y), np.asarray(ds.theta.values)
    phi = np.tanh(X @ W[:, 2:5].T + W[:, 5])
    g = phi.T @ (np.asarray(ds.prediction.values) - y) / data.n
    potential = 0.01 * np.sum(W[:, 2:] ** 2, axis=1) - np.sum(g**2, axis=1) / (2 * 0.05)
    log_p = np.log(np.asarray(p))
    np.testing.assert_allclose(log_p - log_p.mean(), -(potential - potential.mean()) / 0.01, atol=1e-6)


def test_certify_lower_bounds_the_flow_and_the_gap_closes():
    data = mfpde.datasets.teacher(0, n=20, d=2)
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=0.01)
    prob = mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(std=1.0), (0.0, 400.0))
    times = [0.0, 10.0, 100.0, 400.0]
    sol = mfpde.solve(prob, Particles(n=48, save_particles=True), saveat=times, rtol=1e-8, atol=1e-10)
    checks = [mfpde.certify(sol, Convex(), time=t) for t in times]
    gaps = [float(c.gap) for c in checks]
    for c, t in zip(checks, times):
        np.testing.assert_allclose(float(c.objective), float(sol.dataset.risk.sel(time=t)), rtol=1e-10)
        assert float(c.gap) >= -float(c.convex_duality_gap)  # the convex optimum lower-bounds the flow
        assert float(c.convex_duality_gap) < 1e-9 * float(c.objective)
    assert gaps[0] > 10 * gaps[-1] and all(a > b for a, b in zip(gaps, gaps[1:]))
    assert float(checks[-1].feature_speed) < 0.01 * float(checks[0].feature_speed)
    assert checks[-1].mass.dims == ("particle",) and np.isclose(float(checks[-1].mass.sum()), 1.0)


def test_bad_input():
    data = mfpde.datasets.teacher(0, n=8, d=2)
    init = mfpde.measures.Gaussian(std=1.0)
    with pytest.raises(ValueError, match="`l2_output` \\(or `l2`\\) of the flow must be positive"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.TwoLayer(), data, init), Convex(n=4))
    with pytest.raises(ValueError, match="`n` of Convex is needed"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.TwoLayer(l2=0.1), data, init), Convex())
    with pytest.raises(ValueError, match="`n` of Convex must be a positive integer"):
        Convex(n=0)
    with pytest.raises(ValueError, match="`rounds` must be a positive integer"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.TwoLayer(l2=0.1), data, init), Convex(n=4), rounds=0)
    with pytest.raises(TypeError, match="must be a flows.TwoLayer"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.OrnsteinUhlenbeck(), None, init), Convex(n=4))
    quiet = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=0.1), data, init, (0.0, 1.0))
    sol = mfpde.solve(quiet, Particles(n=8), saveat=[0.0, 1.0])
    with pytest.raises(ValueError, match="holds no particles"):
        mfpde.certify(sol, Convex())
    with pytest.raises(ValueError, match="τ = 0 flow"):
        mfpde.certify(sol, Convex(), problem=mfpde.remake(quiet, temperature=0.1))
