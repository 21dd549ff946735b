"""Neural feature repopulation (docs/flows/two-layer.md): draw a few features from a learned (or the initial) distribution and refit
only the output layer by a convex solve."""

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx
import xarray as xr

from . import activations, losses
from ._dataset import Dataset
from ._problem import FlowProblem
from ._solution import Solution, cf_attributes, result_code, result_message, result_variable, warn_or_raise
from ._timing import Timer
from .flows import TwoLayer

HOWS = ("uniform", "importance")
SOURCES = ("learned", "initial")


def _as_tuple(value, name, allowed=None):
    values = (value,) if isinstance(value, (str, int, np.integer)) else tuple(value)
    if not values:
        raise ValueError(f"`{name}` is empty.")
    if allowed is not None:
        unknown = [v for v in values if v not in allowed]
        if unknown:
            raise ValueError(f"`{name}`: unknown {unknown}; choose from {list(allowed)}.")
    return values


def features(flow: TwoLayer, theta, X, k: int):
    """h(θ_j, x_i) = σ(w_j · x_i + b_j) for the particles θ (N, p) at the rows of X: an (n, N) array."""
    d = X.shape[1]
    pre = X @ theta[:, k : k + d].T
    if flow.bias:
        pre = pre + theta[:, k + d]
    return activations.get(flow.activation)(pre)


def importance(flow: TwoLayer, theta, X, k: int):
    """The importance of each particle, ‖u_j‖ · std_i h(θ_j, x_i): the size of its contribution to f on the data."""
    return jnp.linalg.norm(theta[:, :k], axis=1) * jnp.std(features(flow, theta, X, k), axis=0)


def refit(H, y, loss: str, l2: float):
    """Output weights a (m, k) minimising (1/n) Σ_i ℓ(H_i a, y_i) + (l2/2)|a|², a strictly convex problem, and the
    solve's result code (0: successful).

    Squared loss: the normal equations (HᵀH/n + l2 I) a = Hᵀy/n, solved by a Cholesky factorisation (lineax).
    Logistic loss: `optx.BFGS` from a = 0 (smooth and convex, so it converges to the unique minimiser).
    """
    n, m = H.shape
    if loss == "squared":
        operator = lx.MatrixLinearOperator(H.T @ H / n + l2 * jnp.eye(m, dtype=H.dtype), lx.positive_semidefinite_tag)
        def solve(b):
            sol = lx.linear_solve(operator, b, lx.Cholesky(), throw=False)
            return sol.value, result_code(sol.result)

        a, results = jax.vmap(solve, in_axes=1, out_axes=(1, 0))(H.T @ y / n)
        return a, jnp.max(results)
    ell = losses.get(loss)
    objective = lambda a, _: jnp.mean(ell(H @ a, y)) + 0.5 * l2 * jnp.sum(a**2)  # noqa: E731
    tol = 1e-10 if H.dtype == jnp.float64 else 1e-6
    sol = optx.minimise(objective, optx.BFGS(rtol=tol, atol=tol), jnp.zeros((m, y.shape[1]), H.dtype),
                        max_steps=1000, throw=False)
    return sol.value, jnp.asarray(result_code(sol.result))


@eqx.filter_jit
def _draws(flow, data, pool, weights, keys, size, l2):
    """Risks (and accuracies) of `size` features drawn from `pool` with probabilities ∝ `weights` and refitted, one
    draw per key."""
    k = data.k
    ell = losses.get(flow.loss)

    def scores(a, chosen, X, y):
        f = features(flow, chosen, X, k) @ a
        hit = jnp.argmax(f, axis=1) == jnp.argmax(y, axis=1) if k > 1 else jnp.sign(f[:, 0]) == y[:, 0]
        return jnp.mean(ell(f, y)), jnp.mean(hit.astype(pool.dtype))

    def one(key):
        chosen = pool[jax.random.choice(key, pool.shape[0], (size,), p=weights / jnp.sum(weights))]
        a, result = refit(features(flow, chosen, data.X, k), data.y, flow.loss, l2)
        out = dict(zip(("train_risk", "train_accuracy"), scores(a, chosen, data.X, data.y)), result=result)
        if data.X_test is not None:
            out |= dict(zip(("test_risk", "test_accuracy"), scores(a, chosen, data.X_test, data.y_test)))
        return out

    return jax.lax.map(one, keys)


def repopulate(sol, m, how="importance", *, source=("learned", "initial"), problem: FlowProblem | None = None,
               time=None, l2: float = 1e-6, draws: int = 1, key=0, throw: bool = False) -> Solution:
    """Neural feature repopulation (docs/flows/two-layer.md): draw m features θ_j = (w_j, b_j) from the learned
    distribution (the particles of `sol` at `time`) or from the initial one (`problem.init`), refit only the output
    layer by the convex solve of `refit`, and report the risks of the resulting width-m networks

        f(x) = Σ_j a_j σ(w_j · x + b_j),   a = argmin (1/n) Σ_i ℓ(f(x_i), y_i) + (l2/2)|a|².

    Features are drawn with replacement (samples of the measure): uniformly over the particles (`"uniform"`), or
    with probability ∝ ‖u_j‖ · std_i h(θ_j, x_i) (`"importance"`: |u(θ)| ρ(θ) weighted by the feature's spread on
    the data; for the initial distribution the u_j are those drawn with the features).

    **Arguments:**

    - `sol`: a `Solution` of a `flows.TwoLayer` problem by `solvers.Particles(..., save_state=True)`.
    - `m`: the number of features, or a sequence of them.
    - `how`: "uniform", "importance", or both.
    - `source`: "learned", "initial", or both.
    - `problem`: the solved `FlowProblem` (default `sol.problem`, which `solve` attaches; give it for a loaded file).
    - `time`: the time of the learned particles (default the last one reached).
    - `l2`: ridge weight of the refit (> 0 keeps it well posed when features repeat).
    - `draws`: independent draws per setting, to average the sampling noise.
    - `key`: an integer seed or PRNG key.
    - `throw`: raise `IntegrationError` (with the result attached) when a refit fails; by default it warns.

    **Returns:** a `Solution` whose `.dataset` has dims (m, how, source, draw): `train_risk`, and `test_risk` when the
    data has test points (`train_accuracy` / `test_accuracy` for classification: several outputs or the logistic
    loss); `full_train_risk` (`full_test_risk`) of the whole trained network at `time` for comparison; `result`, the
    result code of each refit (lineax's Cholesky solve, or optimistix's BFGS for the logistic loss).
    """
    problem = getattr(sol, "problem", None) if problem is None else problem
    if not isinstance(problem, FlowProblem) or not isinstance(problem.flow, TwoLayer):
        raise ValueError("`problem`: repopulation needs the solved FlowProblem of a flows.TwoLayer network; pass "
                         "problem= for a solution loaded from a file.")
    ds = sol.dataset
    if "theta" not in ds:
        raise ValueError("`sol` holds no particles: solve with solvers.Particles(..., save_state=True).")
    ms = tuple(int(v) for v in _as_tuple(m, "m"))
    if any(v < 1 for v in ms):
        raise ValueError(f"`m` must be positive integers, got {ms}.")
    hows, sources = _as_tuple(how, "how", HOWS), _as_tuple(source, "source", SOURCES)
    if not (isinstance(draws, (int, np.integer)) and draws >= 1):
        raise ValueError(f"`draws` must be a positive integer, got {draws!r}.")
    if not l2 > 0:
        raise ValueError(f"`l2` must be > 0, got {l2!r}.")
    if not isinstance(problem.data, Dataset):
        raise TypeError(f"`problem.data`: repopulate refits the output layer on finite training data (an mfpde.Dataset), "
                        f"got {type(problem.data).__name__}; for a Population, refit on a sample of it: `population.sample(key, n)`.")
    with Timer() as timer:
        variables, coords, t, N = _repopulate(ds, problem, ms, hows, sources, time, l2, draws, key)
    attrs = {**cf_attributes("neural feature repopulation", "mfpde.repopulate(Solution)"),
             "time": t, "l2": l2, "n_particles": N, "loss": problem.flow.loss, "activation": problem.flow.activation,
             "wall_time_s": timer.wall_time, "compile_time_s": timer.compile_time, "run_time_s": timer.run_time}
    attrs["result_message"] = result_message(variables["result"].values)
    dataset = xr.Dataset(variables, coords=coords, attrs=attrs)
    return warn_or_raise(Solution(dataset, problem), throw, "refit")


def _repopulate(ds, problem, ms, hows, sources, time, l2, draws, key):
    flow, data = problem.flow, problem.data
    k = data.k
    theta = ds.theta.dropna("time", how="all")
    theta = theta.isel(time=-1) if time is None else theta.sel(time=time, method="nearest")
    learned = jnp.asarray(theta.values)
    if isinstance(key, (int, np.integer)):
        key = jax.random.key(int(key))
    init_key, key = jax.random.split(key)
    sampled = problem.init.sample(init_key, learned.shape[0], flow.groups(data))
    pools = {
        "learned": learned,
        "initial": jnp.concatenate([jnp.asarray(sampled[g]).reshape(learned.shape[0], -1) for g in flow.groups(data)],
                                   axis=1).astype(learned.dtype),
    }
    classify = k > 1 or flow.loss == "logistic"
    shape = (len(ms), len(hows), len(sources), draws)
    out = {name: np.full(shape, np.nan) for name in ("train_risk", "test_risk", "train_accuracy", "test_accuracy")}
    out["result"] = np.zeros(shape, np.int32)
    weights = {(h, name): importance(flow, pool, data.X, k) if h == "importance" else jnp.ones(pool.shape[0], pool.dtype)
               for h in hows for name, pool in pools.items()}
    for i, size in enumerate(ms):
        for j, h in enumerate(hows):
            for s, name in enumerate(sources):
                keys = jax.random.split(jax.random.fold_in(key, (i * len(hows) + j) * len(sources) + s), draws)
                scores = _draws(flow, data, pools[name], weights[h, name], keys, size, l2)
                for variable, values in jax.device_get(scores).items():
                    out[variable][i, j, s] = values
    dims = ("m", "how", "source", "draw")
    long_names = {"train_risk": "training risk of the refitted width-m network",
                  "test_risk": "test risk of the refitted width-m network",
                  "train_accuracy": "training accuracy of the refitted width-m network",
                  "test_accuracy": "test accuracy of the refitted width-m network"}
    keep = ["train_risk"] + (["test_risk"] if data.X_test is not None else [])
    keep += [name.replace("risk", "accuracy") for name in keep] if classify else []
    variables = {name: (dims, out[name], {"long_name": long_names[name], "units": "1"}) for name in keep}
    variables["result"] = result_variable(out["result"], dims)
    ell = losses.get(flow.loss)
    masses = jnp.full((learned.shape[0],), 1.0 / learned.shape[0], learned.dtype)
    full_train = float(jnp.mean(ell(flow.predict(learned, masses, data.X, data), data.y)))
    variables["full_train_risk"] = ((), full_train, {"long_name": "training risk of the full trained network", "units": "1"})
    if data.X_test is not None:
        full_test = float(jnp.mean(ell(flow.predict(learned, masses, data.X_test, data), data.y_test)))
        variables["full_test_risk"] = ((), full_test, {"long_name": "test risk of the full trained network", "units": "1"})
    coords = {"m": ("m", np.array(ms), {"long_name": "number of features drawn", "units": "1"}),
              "how": ("how", np.array(hows, dtype=object), {"long_name": "how the features are drawn"}),
              "source": ("source", np.array(sources, dtype=object), {"long_name": "the features' distribution"}),
              "draw": ("draw", np.arange(draws), {"long_name": "draw index"})}
    return variables, coords, float(theta.time), int(learned.shape[0])
