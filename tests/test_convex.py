import itertools

import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import mfpde
from solvers import Convex, Particles, Units


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
    ds = mfpde.solve(prob, Convex(), gap_rtol=1e-11).dataset
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
    weights u, and the density has the Gibbs form p ∝ exp(−∂G/∂p / τ) of docs/algorithms/convex.md."""
    data = mfpde.datasets.teacher(1, n=12, d=3, k=2)
    flow = mfpde.flows.TwoLayer(activation="tanh", bias=True, l2=0.02, l2_output=0.05, temperature=0.01)
    prob = mfpde.StationaryProblem(flow, data, mfpde.measures.Gaussian(std=1.0))
    ds = mfpde.solve(prob, Convex(n=40), key=3, gap_rtol=1e-11).dataset
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
    sol = mfpde.solve(prob, Particles(n=48, save_state=True), saveat=times, rtol=1e-8, atol=1e-10)
    checks = [mfpde.certify(sol, Convex(), time=t) for t in times]
    assert all(c.success for c in checks) and "gap" in checks[0].summary()
    checks = [c.dataset for c in checks]
    gaps = [float(c.gap) for c in checks]
    for c, t in zip(checks, times):
        np.testing.assert_allclose(float(c.objective), float(sol.dataset.risk.sel(time=t)), rtol=1e-10)
        assert float(c.gap) >= -float(c.convex_duality_gap)  # the convex optimum lower-bounds the flow
        assert float(c.convex_duality_gap) < 1e-7 * float(c.objective)  # the default target
    assert gaps[0] > 10 * gaps[-1] and all(a > b for a, b in zip(gaps, gaps[1:]))
    assert float(checks[-1].feature_speed) < 0.01 * float(checks[0].feature_speed)
    assert checks[-1].mass.dims == ("candidate",) and np.isclose(float(checks[-1].mass.sum()), 1.0)


def _least_l1(h, target):
    """min |v|_1 with Σ_a v_a h_a = target, by enumerating the basic solutions (at most n nonzeros)."""
    best = np.inf
    for support in itertools.chain.from_iterable(itertools.combinations(range(h.shape[0]), r) for r in (1, 2)):
        v, *_ = np.linalg.lstsq(h[list(support)].T, target, rcond=None)
        if np.allclose(h[list(support)].T @ v, target, atol=1e-12):
            best = min(best, np.abs(v).sum())
    return best


@pytest.mark.parametrize("taus", [(0.0, 0.0), (0.03, 0.02)])
@pytest.mark.parametrize("arch", ["dnn", "resnet"])
def test_deep_program_equals_enumeration(arch, taus):
    """Two hidden layers of three candidate units on n = 2 points: the layer-1 costs (λ/2)|w_1|², the least-ℓ1
    representation of each layer-2 unit by enumeration of basic solutions, and the output layer's program by the
    brute force above; with entropies, a plain network's first layer by its Gibbs density and a Res-Net's one
    density with the sum of the entropy weights."""
    data = mfpde.datasets.teacher(2, n=2, d=2)
    rng = np.random.default_rng(1)
    W = {"w1": rng.normal(size=(3, 2)), "w2": rng.normal(size=(3, 3)), "w3": rng.normal(size=(3, 1))}
    Flow = mfpde.flows.FeatureDNN if arch == "dnn" else mfpde.flows.FeatureResNet
    flow = Flow(activations=("tanh", "tanh"), penalty="convex", l2=0.05)
    ds = mfpde.solve(mfpde.StationaryProblem(flow, data, mfpde.measures.Layers(**W)), Convex(entropy=taus)).dataset
    X = np.asarray(data.X)
    theta1 = W["w1"] @ X.T
    theta2 = W["w2"].T @ np.tanh(theta1) / 3 + (theta1 if arch == "resnet" else 0.0)
    targets = theta2 - theta1 if arch == "resnet" else theta2
    c1 = 0.025 * np.sum(W["w1"] ** 2, axis=1)
    c2 = 0.025 * np.array([_least_l1(np.tanh(theta1), t) for t in targets]) ** 2
    np.testing.assert_allclose(ds.representation_cost.values, [c1, c2], rtol=1e-8)
    v = ds.middle_weight.values[0]  # produces each layer-2 unit from layer 1, at the least ℓ1 norm
    np.testing.assert_allclose(v.T @ np.tanh(theta1), targets, atol=1e-12)
    np.testing.assert_allclose(0.025 * np.abs(v).sum(axis=0) ** 2, c2, rtol=1e-8)
    np.testing.assert_allclose(ds.layer_mass.sum("unit").values, 1.0, rtol=1e-12)
    cost = c1 + c2 if arch == "resnet" else c2
    reference = _brute_force(np.tanh(theta2).T, np.asarray(data.y), 0.05, cost, sum(taus) if arch == "resnet" else taus[1])
    if arch == "dnn":
        # min over p_1 of c_1·p_1 + τ_1 Σ p_1 log p_1, by a generic minimiser on the simplex's softmax chart.
        first = lambda s: (lambda p: c1 @ p + taus[0] * np.sum(p * np.log(p)))(np.exp(s - np.logaddexp.reduce(s)))
        reference += (c1.min() if taus[0] == 0 else
                      scipy.optimize.minimize(first, np.zeros(3), method="Nelder-Mead",
                                              options={"xatol": 1e-12, "fatol": 1e-16, "maxiter": 20_000}).fun)
        if taus[0] > 0:
            p1 = ds.layer_mass.values[0]
            np.testing.assert_allclose(p1, np.exp(-c1 / taus[0]) / np.exp(-c1 / taus[0]).sum(), rtol=1e-10)
            np.testing.assert_allclose(float(ds.layer_entropy[0]), np.sum(p1 * np.log(p1)), rtol=1e-12)
    assert abs(float(ds.objective) - reference) < 1e-8 * abs(reference)
    assert float(ds.lower_bound) <= reference + 1e-14
    assert float(ds.duality_gap) < 1e-7 * abs(reference)


@pytest.mark.parametrize("taus", [(0.0, 0.0), (0.02, 0.01)])
def test_deep_program_lower_bounds_every_feasible_point(taus):
    """The undecomposed program of a plain network with two hidden layers, evaluated at random feasible points
    (p_1, p_2, ŵ_2 with t_b p_2(b) = Σ_a ŵ_2(a, b) h(θ_{1,a}), ŵ_3), never goes below the reported optimum."""
    data = mfpde.datasets.teacher(3, n=3, d=2)
    rng = np.random.default_rng(2)
    W = {"w1": rng.normal(size=(5, 2)), "w2": rng.normal(size=(5, 4)), "w3": rng.normal(size=(4, 1))}
    flow = mfpde.flows.FeatureDNN(activations=("tanh", "tanh"), penalty="convex", l2=0.05)
    problem = mfpde.StationaryProblem(flow, data, mfpde.measures.Layers(**W))
    optimum = float(mfpde.solve(problem, Convex(entropy=taus)).dataset.objective)
    X, y = np.asarray(data.X), np.asarray(data.y)
    h1 = np.tanh(W["w1"] @ X.T)
    theta2 = W["w2"].T @ h1 / 5
    h2 = np.tanh(theta2)
    values = []
    for _ in range(300):
        p1, p2 = rng.dirichlet(np.full(5, 0.3)), rng.dirichlet(np.full(4, 0.3))
        least = np.linalg.pinv(h1.T) @ (theta2.T * p2)                       # (5, 4): a feasible ŵ_2
        w2 = least + (np.eye(5) - np.linalg.pinv(h1.T) @ h1.T) @ rng.normal(size=(5, 4)) * rng.uniform(0, 0.1)
        w3 = rng.normal(size=(4, 1)) * p2[:, None]
        f = h2.T @ w3
        value = (0.5 * np.mean((f - y) ** 2) + 0.025 * np.sum(W["w1"] ** 2, axis=1) @ p1
                 + 0.025 * np.sum(np.abs(w2).sum(axis=0) ** 2 / p2) + 0.025 * np.sum(w3[:, 0] ** 2 / p2)
                 + taus[0] * np.sum(p1 * np.log(p1)) + taus[1] * np.sum(p2 * np.log(p2)))
        values.append(value)
    # The flow's own point (uniform masses, ŵ = w / m²) is one of them, and the closest.
    own = (0.5 * np.mean((h2.T @ W["w3"] / 4 - y) ** 2) + 0.025 * np.mean(np.sum(W["w1"] ** 2, axis=1))
           + 0.025 * np.mean((np.abs(W["w2"]).sum(axis=0) / 5) ** 2) + 0.025 * np.mean(W["w3"][:, 0] ** 2))
    np.testing.assert_allclose(own, float(flow.energy(W, data)), rtol=1e-12)
    own -= taus[0] * np.log(5) + taus[1] * np.log(4)
    assert optimum <= min(*values, own)


def test_certify_feature_flow():
    data = mfpde.datasets.teacher(0, n=6, d=3)
    flow = mfpde.flows.FeatureResNet(activations=("tanh", "tanh"), penalty="convex", l2=0.01)
    prob = mfpde.FlowProblem(flow, data, mfpde.measures.DiverseFeatures(output_std=0.1), (0.0, 100.0))
    sol = mfpde.solve(prob, Units(n=(10, 10), save_state=True), saveat=[0.0, 10.0, 100.0])
    checks = [mfpde.certify(sol, Convex(), time=t).dataset for t in (0.0, 10.0, 100.0)]
    for c, t in zip(checks, (0.0, 10.0, 100.0)):
        np.testing.assert_allclose(float(c.objective), float(sol.dataset.risk.sel(time=t)), rtol=1e-10)
        assert float(c.gap) > 0 and float(c.convex_duality_gap) < 1e-7 * float(c.objective)
        assert c.weight_speed.dims == ("weight_layer",) and c.feature_speed.dims == ("layer",)
    assert float(checks[0].gap) > 3 * float(checks[-1].gap) and float(checks[1].gap) > float(checks[-1].gap)
    with pytest.raises(ValueError, match="`convex` must have no `entropy`"):
        mfpde.certify(sol, Convex(entropy=0.1))


def test_bad_input():
    data = mfpde.datasets.teacher(0, n=8, d=2)
    init = mfpde.measures.Gaussian(std=1.0)
    with pytest.raises(ValueError, match="`l2_output` \\(or `l2`\\) of the flow must be positive"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.TwoLayer(), data, init), Convex(n=4))
    with pytest.raises(ValueError, match="`n` of Convex is needed"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.TwoLayer(l2=0.1), data, init), Convex())
    with pytest.raises(ValueError, match="`n` of Convex must be a positive integer"):
        Convex(n=0)
    for entropy in (-0.1, np.nan, (0.1, "a")):
        with pytest.raises(ValueError, match="`entropy` of Convex must be a finite number ≥ 0"):
            Convex(entropy=entropy)
    with pytest.raises(ValueError, match="`entropy` of Convex is for feature flows"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.TwoLayer(l2=0.1), data, init), Convex(n=4, entropy=0.1))
    with pytest.raises(ValueError, match="`rounds` must be a positive integer"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.TwoLayer(l2=0.1), data, init), Convex(n=4), rounds=0)
    deep = mfpde.flows.FeatureDNN(activations=("tanh", "tanh"), l2=0.1)
    with pytest.raises(ValueError, match="`penalty` of the flow must be 'convex'"):
        mfpde.solve(mfpde.StationaryProblem(deep, data, mfpde.measures.DiverseFeatures()), Convex(n=8))
    convex_deep = mfpde.flows.FeatureDNN(activations=("tanh", "tanh"), penalty="convex", l2=0.1)
    with pytest.raises(ValueError, match="`entropy` of Convex must be a scalar or have one entry per hidden layer \\(2\\)"):
        mfpde.solve(mfpde.StationaryProblem(convex_deep, data, mfpde.measures.DiverseFeatures()), Convex(n=8, entropy=(0.1,) * 3))
    with pytest.raises(ValueError, match="`n` of Convex \\(the candidate units per hidden layer\\) is needed"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.FeatureDNN(activations=("tanh", "tanh"), penalty="convex", l2=0.1),
                                            data, mfpde.measures.DiverseFeatures()), Convex())
    with pytest.raises(TypeError, match="must be a flows.TwoLayer or a feature flow"):
        mfpde.solve(mfpde.StationaryProblem(mfpde.flows.OrnsteinUhlenbeck(), None, init), Convex(n=4))
    quiet = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=0.1), data, init, (0.0, 1.0))
    sol = mfpde.solve(quiet, Particles(n=8), saveat=[0.0, 1.0])
    with pytest.raises(ValueError, match="holds no particles"):
        mfpde.certify(sol, Convex())
    with pytest.raises(ValueError, match="τ = 0 flow"):
        mfpde.certify(sol, Convex(), problem=mfpde.remake(quiet, temperature=0.1))
