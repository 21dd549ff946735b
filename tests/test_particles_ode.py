import diffrax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.integrate
import scipy.special

import mfpde
from solvers import Particles

from .helpers import two_layer_gradient_flow


def _small_problem(bias=True, l2=1e-2, t1=3.0, n_particles=8):
    rng = np.random.default_rng(0)
    X, y = rng.normal(size=(20, 3)), rng.normal(size=(20,))
    u0, w0, b0 = rng.normal(size=n_particles), rng.normal(size=(n_particles, 3)), rng.normal(size=n_particles)
    data = mfpde.Dataset(X, y)
    flow = mfpde.flows.TwoLayer(activation="tanh", bias=bias, l2=l2, alpha=1.5)
    init = mfpde.measures.Particles(u=u0, w=w0, b=b0) if bias else mfpde.measures.Particles(u=u0, w=w0)
    theta0 = np.column_stack([u0, w0, b0] if bias else [u0, w0])
    return mfpde.FlowProblem(flow, data, init, (0.0, t1)), theta0, X, y[:, None]


def test_matches_independent_gradient_flow():
    prob, theta0, X, y = _small_problem()
    ts = np.linspace(0.0, 3.0, 7)
    sol = mfpde.solve(prob, Particles(save_state=True), saveat=ts, rtol=1e-11, atol=1e-13)
    assert sol.success

    def rhs(t, z):
        v, _ = two_layer_gradient_flow(z.reshape(theta0.shape), X, y, alpha=1.5, l2=1e-2, bias=True)
        return v.ravel()

    ref = scipy.integrate.solve_ivp(rhs, (0.0, 3.0), theta0.ravel(), method="DOP853", t_eval=ts, rtol=1e-13, atol=1e-14)
    theta_ref = ref.y.T.reshape(len(ts), *theta0.shape)
    theta = sol.dataset.theta.values
    assert np.max(np.abs(theta - theta_ref)) / np.max(np.abs(theta_ref)) < 1e-7
    loss_ref = [two_layer_gradient_flow(th, X, y, alpha=1.5, l2=1e-2, bias=True)[1] for th in theta_ref]
    np.testing.assert_allclose(sol.dataset.loss.values, loss_ref, rtol=1e-7)
    # The velocity is exactly the width-N gradient (no time integration involved).
    v, _ = two_layer_gradient_flow(theta0, X, y, alpha=1.5, l2=1e-2, bias=True)
    v_flow = prob.flow.velocity(0.0, jnp.asarray(theta0), jnp.full(8, 1 / 8), prob.data)
    np.testing.assert_allclose(np.asarray(v_flow), v, rtol=1e-12, atol=1e-14)


def test_energy_decreases_and_risk_is_energy():
    prob, *_ = _small_problem()
    sol = mfpde.solve(prob, Particles(), saveat=np.linspace(0, 3, 31))
    risk = sol.dataset.risk.values
    assert np.all(np.diff(risk) <= 1e-12)
    # τ = 0: the free energy is the energy of the width-N network, written out here from the saved particles.
    ds = mfpde.solve(prob, Particles(save_state=True), saveat=[3.0]).dataset
    theta = ds.theta.values[-1]
    _, loss = two_layer_gradient_flow(theta, np.asarray(prob.data.X), np.asarray(prob.data.y), alpha=1.5, l2=1e-2, bias=True)
    np.testing.assert_allclose(float(ds.free_energy[-1]), loss + 0.5e-2 * np.mean(np.sum(theta**2, axis=1)), rtol=1e-12)


def test_fixed_output_layer_keeps_u():
    prob, theta0, *_ = _small_problem()
    prob = mfpde.remake(prob, flow=mfpde.flows.TwoLayer(activation="tanh", bias=True, train_output=False, l2=0.1))
    sol = mfpde.solve(prob, Particles(save_state=True), saveat=[0.0, 3.0])
    theta = sol.dataset.theta
    np.testing.assert_array_equal(theta.sel(param="u").values[-1], theta0[:, 0])
    assert np.max(np.abs(theta.sel(param="w_0").values[-1] - theta0[:, 1])) > 1e-3


def test_euler_scan_first_order_in_dt():
    prob, *_ = _small_problem(t1=2.0)
    ref = mfpde.solve(prob, Particles(save_state=True), saveat=[2.0], rtol=1e-12, atol=1e-14).dataset.theta[-1]
    dts = np.array([0.04, 0.02, 0.01, 0.005])
    errors = [
        float(np.max(np.abs(mfpde.solve(prob, Particles(method="scan", dt=dt, save_state=True), saveat=[2.0]).dataset.theta[-1] - ref)))
        for dt in dts
    ]
    order = np.polyfit(np.log(dts), np.log(errors), 1)[0]
    assert 0.9 < order < 1.1, (errors, order)


def test_adaptive_error_decreases_with_rtol():
    prob, *_ = _small_problem(t1=2.0)
    ref = mfpde.solve(prob, Particles(save_state=True), saveat=[2.0], rtol=1e-13, atol=1e-15).dataset.theta[-1]
    errors = []
    for rtol in (1e-3, 1e-5, 1e-7, 1e-9):
        sol = mfpde.solve(prob, Particles(save_state=True), saveat=[2.0], rtol=rtol, atol=rtol * 1e-2)
        errors.append(float(np.max(np.abs(sol.dataset.theta[-1] - ref))))
    assert all(a > 10 * b for a, b in zip(errors, errors[1:])), errors
    assert errors[-1] < 1e-7


def test_user_solver_and_controller_pass_through():
    prob, *_ = _small_problem()
    sol = mfpde.solve(prob, Particles(), saveat=[3.0], solver=diffrax.Dopri8(),
                      stepsize_controller=diffrax.ConstantStepSize(), dt0=0.01)
    ds = sol.dataset
    assert ds.attrs["solver"] == "Dopri8" and "ConstantStepSize" in ds.attrs["stepsize_controller"]
    assert int(ds.num_steps) == 300


def test_chunked_data_term_matches():
    prob, theta0, *_ = _small_problem()
    masses = jnp.full(8, 1 / 8)
    theta = jnp.asarray(theta0)
    full = prob.flow.velocity(0.0, theta, masses, prob.data)
    chunked = prob.flow.velocity(0.0, theta, masses, prob.data, chunk_size=7)
    np.testing.assert_allclose(chunked, full, rtol=1e-13, atol=1e-15)
    # Unchunked: the program of the second solve in test_energy_decreases_and_risk_is_energy (nothing new to compile).
    a = mfpde.solve(prob, Particles(chunk_size=6, save_state=True), saveat=[3.0]).dataset.loss
    b = mfpde.solve(prob, Particles(save_state=True), saveat=[3.0]).dataset.loss
    np.testing.assert_allclose(a, b, rtol=1e-10)


def test_stiff_flow_switches_to_implicit_solver():
    flow = mfpde.flows.OrnsteinUhlenbeck(kappa=5e3, dim=2)
    prob = mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(mean=1.0, std=0.5), (0.0, 10.0))
    sol = mfpde.solve(prob, Particles(n=64), saveat=[0.0, 1e-4, 5e-4, 10.0], rtol=1e-8, atol=1e-10)
    assert sol.dataset.attrs["solver"] == "Kvaerno5"
    assert sol.dataset.attrs["stiff_detected"] == 1
    assert int(sol.dataset.num_steps) < 2000
    m0 = sol.dataset.theta_mean.values[0]
    np.testing.assert_allclose(sol.dataset.theta_mean.values[1:3], m0 * np.exp(-5e3 * np.array([1e-4, 5e-4]))[:, None], rtol=1e-5)
    easy = mfpde.solve(mfpde.remake(prob, kappa=1.0), Particles(n=64), saveat=[10.0])
    assert easy.dataset.attrs["solver"] == "Tsit5"


# Each activation is its own compiled program. By default through the Euler scan, against 20 steps of gradient
# descent written by hand (`helpers`, to rounding); the default adaptive method under `-m slow`, against RK4 with 400
# steps (a kink of relu, step or sign costs RK4 its order locally: 1e-4 covers it).
@pytest.mark.parametrize("method", ["scan", pytest.param("adaptive", marks=pytest.mark.slow)])
@pytest.mark.parametrize("activation", sorted(mfpde.activations.ACTIVATIONS))
def test_every_activation_follows_the_gradient_flow_written_by_hand(activation, method):
    data = mfpde.datasets.teacher(1, n=32, d=3)
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(activation=activation, bias=True), data, mfpde.measures.Gaussian(), (0.0, 1.0))
    algorithm = Particles(n=16, method=method, dt=0.05 if method == "scan" else None, save_state=True)
    ds = mfpde.solve(prob, algorithm, saveat=[0.0, 1.0]).dataset
    X, y = np.asarray(data.X), np.asarray(data.y)
    theta = ds.theta.values[0]

    def v(th):
        return two_layer_gradient_flow(th, X, y, bias=True, activation=activation)[0]

    if method == "scan":
        for _ in range(20):
            theta = theta + 0.05 * v(theta)
        np.testing.assert_allclose(ds.theta.values[1], theta, rtol=1e-9, atol=1e-11)
    else:
        h = 1.0 / 400
        for _ in range(400):
            k1 = v(theta)
            k2 = v(theta + h / 2 * k1)
            k3 = v(theta + h / 2 * k2)
            theta = theta + h / 6 * (k1 + 2 * k2 + 2 * k3 + v(theta + h * k3))
        np.testing.assert_allclose(ds.theta.values[1], theta, atol=1e-4)
    assert ds.risk.values[1] < ds.risk.values[0]


def test_logistic_loss_and_multiple_outputs():
    rng = np.random.default_rng(3)
    X = rng.normal(size=(40, 2))
    y = np.sign(np.column_stack([X[:, 0], X[:, 1] - X[:, 0]]))
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(loss="logistic"), mfpde.Dataset(X, y), mfpde.measures.Gaussian(), (0, 5.0))
    ds = mfpde.solve(prob, Particles(n=32, method="scan", dt=0.1, save_state=True), saveat=[0.0, 5.0]).dataset
    assert ds.sizes["output"] == 2 and list(ds.param.values[:4]) == ["u_0", "u_1", "w_0", "w_1"]
    # Against 50 steps of gradient descent on ℓ = Σ_c log(1 + e^{−y_c f_c}), f = (1/N) Σ_j u_j tanh(w_j·x), written
    # out by hand: ∂ℓ/∂f_c = −y_c / (1 + e^{y_c f_c}).
    theta = ds.theta.values[0]

    def loss_and_velocity(theta):
        u, w = theta[:, :2], theta[:, 2:]
        h = np.tanh(X @ w.T)  # (n, N)
        f = h @ u / len(u)
        g = -y * scipy.special.expit(-y * f) / len(X)  # (n, k): ∂(mean loss)/∂f
        v_u = -h.T @ g
        v_w = -((g @ u.T) * (1 - h**2)).T @ X
        return np.mean(np.sum(np.logaddexp(0.0, -y * f), axis=1)), np.column_stack([v_u, v_w])

    loss0 = loss_and_velocity(theta)[0]
    for _ in range(50):
        theta = theta + 0.1 * loss_and_velocity(theta)[1]
    np.testing.assert_allclose(ds.theta.values[1], theta, rtol=1e-9, atol=1e-11)
    np.testing.assert_allclose(ds.loss.values, [loss0, loss_and_velocity(theta)[0]], rtol=1e-10)


def test_moments_are_those_of_the_empirical_measure():
    # θ_mean and θ_cov (θ_var beyond 32 coordinates) are the moments of ρ_N = (1/N) Σ δ_θj, normalised by 1/N as
    # the grid's moments of its density are: computed here from the saved particles with NumPy.
    for d in (3, 40):
        data = mfpde.Dataset(np.linspace(-1, 1, 4 * d).reshape(4, d), np.ones(4))
        prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(), data, mfpde.measures.Gaussian(std=1.0), (0.0, 0.1))
        ds = mfpde.solve(prob, Particles(n=5, save_state=True), saveat=[0.1], key=3).dataset
        theta = ds.theta.values[-1]
        np.testing.assert_allclose(ds.theta_mean.values[-1], theta.mean(axis=0), rtol=1e-13)
        if d == 3:
            np.testing.assert_allclose(ds.theta_cov.values[-1], np.cov(theta.T, bias=True), rtol=1e-12, atol=1e-15)
        else:
            np.testing.assert_allclose(ds.theta_var.values[-1], theta.var(axis=0), rtol=1e-12)
