"""Neural feature repopulation: the convex refit against independent solutions, learned against initial features,
importance sampling, and argument errors."""

import jax
import jax.numpy as jnp
import numpy as np
import pytest
import scipy.optimize

import mfpde
from mfpde._repopulate import importance, refit
from solvers import Particles


@pytest.fixture(scope="module")
def trained():
    data = mfpde.datasets.teacher(0, n=256, d=4, activation="tanh", width=3, n_test=256)
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=1e-3)
    problem = mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(std=1.0), (0.0, 100.0))
    return mfpde.solve(problem, Particles(n=400, save_state=True), saveat=[0.0, 100.0], rtol=1e-5)


def test_squared_refit_is_the_ridge_solution():
    rng = np.random.default_rng(0)
    H, y = rng.normal(size=(50, 8)), rng.normal(size=(50, 2))
    expected = np.linalg.solve(H.T @ H / 50 + 1e-3 * np.eye(8), H.T @ y / 50)
    a, result = refit(jnp.asarray(H), jnp.asarray(y), "squared", 1e-3)
    np.testing.assert_allclose(a, expected, rtol=1e-10)
    assert int(result) == 0


def test_logistic_refit_is_the_convex_minimiser():
    rng = np.random.default_rng(1)
    H = rng.normal(size=(80, 5))
    y = np.sign(H @ rng.normal(size=5) + 0.5 * rng.normal(size=80))[:, None]
    a, result = refit(jnp.asarray(H), jnp.asarray(y), "logistic", 1e-2)
    assert int(result) == 0
    a = np.asarray(a)

    def objective(v):
        return np.mean(np.logaddexp(0.0, -y[:, 0] * (H @ v))) + 0.5e-2 * v @ v

    expected = scipy.optimize.minimize(objective, np.zeros(5), method="BFGS", options={"gtol": 1e-12}).x
    np.testing.assert_allclose(a[:, 0], expected, atol=1e-6)


def test_learned_features_beat_initial_ones(trained):
    out = mfpde.repopulate(trained, [10, 40], how=("uniform", "importance"), draws=4, key=1)
    assert isinstance(out, mfpde.Solution) and out.success and out.problem is trained.problem
    assert "full_train_risk" in out.summary()
    out = out.dataset
    assert out.test_risk.dims == ("m", "how", "source", "draw") and "test_accuracy" not in out
    mean = out.test_risk.mean("draw")
    # The trained network has concentrated its features where the teacher's are: drawing from the learned
    # distribution beats drawing from the initial Gaussian by a wide margin at every size and sampling rule.
    assert np.all(mean.sel(source="initial") > 2 * mean.sel(source="learned")), mean.values
    # More features, lower risk; and the full width-400 network is the reference.
    assert np.all(mean.sel(m=40) < mean.sel(m=10))
    assert float(out.full_test_risk) < float(mean.sel(m=10, source="initial").min())
    np.testing.assert_allclose(float(out.full_train_risk), float(trained.dataset.loss[-1]), rtol=1e-10)


def test_a_failed_refit_is_reported_with_what_was_computed(trained):
    """Features that are not finite make every refit fail: the result says so (lineax's and optimistix's codes),
    a warning is given, and with throw=True the error carries the computed result."""
    broken = trained.dataset.copy(deep=True)
    broken["theta"].loc[{"param": broken.param.values[-1]}] = np.nan  # one input weight of every particle
    broken = mfpde.Solution(broken, trained.problem)
    with pytest.warns(RuntimeWarning, match="refit stopped early"):
        out = mfpde.repopulate(broken, 5, how="uniform", source="learned", draws=2)
    assert not out.success and np.all(out.dataset.result.values != 0), out.dataset.result.values
    assert out.dataset.train_risk.shape == (1, 1, 1, 2)
    with pytest.raises(mfpde.IntegrationError) as error:
        mfpde.repopulate(broken, 5, how="uniform", source="learned", throw=True)
    assert not error.value.solution.success


def test_importance_ignores_neurons_that_carry_nothing():
    flow = mfpde.flows.TwoLayer(activation="tanh")
    X = jax.random.normal(jax.random.key(0), (30, 2))
    theta = jnp.array([[0.0, 1.0, 1.0], [2.0, 1.0, -1.0], [-1.0, 0.0, 0.0], [1.0, 0.5, 0.0]])
    weights = importance(flow, theta, X, 1)
    assert float(weights[0]) == 0.0 and float(weights[2]) == 0.0  # u = 0, and a constant feature (w = 0)
    features = np.tanh(np.asarray(X) @ np.asarray(theta[1:, 1:]).T)
    np.testing.assert_allclose(weights[jnp.array([1, 3])], np.abs(theta[jnp.array([1, 3]), 0]) * features[:, [0, 2]].std(axis=0))


def test_classification_reports_accuracy():
    data = mfpde.datasets.digits(classes=(3, 8))
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=1e-3)
    problem = mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(std=0.3), (0.0, 2.0))
    sol = mfpde.solve(problem, Particles(n=64, save_state=True), saveat=[0.0, 2.0])
    out = mfpde.repopulate(sol, 20, how="uniform", source="learned").dataset
    assert 0.8 < float(out.test_accuracy.squeeze()) <= 1.0
    assert out.sizes == {"m": 1, "how": 1, "source": 1, "draw": 1}


def test_bad_input(trained, tmp_path):
    with pytest.raises(ValueError, match="`m`"):
        mfpde.repopulate(trained, 0)
    with pytest.raises(ValueError, match="`how`.*'best'"):
        mfpde.repopulate(trained, 10, how="best")
    with pytest.raises(ValueError, match="`source`"):
        mfpde.repopulate(trained, 10, source="final")
    with pytest.raises(ValueError, match="`l2`"):
        mfpde.repopulate(trained, 10, l2=0.0)
    trained.to_netcdf(tmp_path / "run.nc")
    loaded = mfpde.load(tmp_path / "run.nc")
    with pytest.raises(ValueError, match="`problem`.*problem="):
        mfpde.repopulate(loaded, 10)
    out = mfpde.repopulate(loaded, 10, problem=trained.problem, key=3)
    np.testing.assert_allclose(out.dataset.train_risk, mfpde.repopulate(trained, 10, key=3).dataset.train_risk)
    without = mfpde.solve(trained.problem, Particles(n=16), saveat=[0.0, 1.0])
    with pytest.raises(ValueError, match="`sol` holds no particles.*save_state"):
        mfpde.repopulate(without, 10)
