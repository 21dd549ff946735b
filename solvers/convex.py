import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

import mfpde
from mfpde._solution import make_dataset, warn_or_raise
from mfpde._timing import Timer

from .particles import _initial_state


class Convex(mfpde.AbstractAlgorithm):
    r"""The convex reformulation (MATH.md 4) of a two-layer flow's energy on a finite support of candidate
    features θ_1..θ_A (their first-layer coordinates w_a, b_a), drawn from `problem.init`: a flow's own particles
    (`measures.Particles`) or random features. With densities p on the simplex Δ_A and ŵ_a = p_a u_a:

        min_{p ∈ Δ_A, ŵ}  E_i ½|Σ_a ŵ_a φ_a(x_i) − y_i|² + (λ_u/2) Σ_a |ŵ_a|²/p_a + Σ_a c_a p_a + τ Σ_a p_a log p_a

    with φ_a(x) = α σ(w_a·x + b_a), c_a = ½ λ_w (|w_a|² + b_a²) the flow's weight decays (`TwoLayer.weight_decay`).
    The perspective |ŵ|²/p makes it jointly convex, and at p_a = 1/N, ŵ_a = u_a/N it is the flow's energy R of
    N particles: its optimum lower-bounds every flow on the same support. The inner minimum over ŵ is a ridge
    regression with prior covariance P/λ_u, in closed form:

        G(p) = (1/2n) tr(Yᵀ Z) + c·p,   Z = M(p)⁻¹ Y,   M(p) = I + Φ P Φᵀ/(n λ_u),   u_a = φ_aᵀ Z/(n λ_u),
        ∂G/∂p_a = c_a − |φ_aᵀ Z|²/(2 n² λ_u)                      (Φ = (φ_a(x_i)) ∈ R^{n×A}).

    G is smooth and convex on Δ_A. An optimistix minimiser (default BFGS) minimises it on a smooth
    parametrisation of the simplex: p = softmax(s) for τ > 0 (the optimum is interior, of the Gibbs form
    p ∝ exp(−∂G/∂p/τ)); p = q²/|q|² for τ = 0, where the optimum is sparse and every local minimum in q meets the
    simplex's KKT conditions, hence is global. Why not a first-order simplex method (Frank–Wolfe, mirror descent):
    they converge sublinearly, and the objective is smooth and small enough (A ≤ a few thousand) for quasi-Newton.

    The result is certified: for any p on the simplex, convexity gives
    G* ≥ G(p) − ∇G·p + min_{q ∈ Δ} [∇G·q + τ Σ q log q] = G(p) − ∇G·p − τ log Σ_a exp(−∂_aG/τ) (min_a ∂_aG for
    τ = 0), reported as `lower_bound`; `duality_gap` = objective − lower_bound ≥ G(p) − G*.

    The entropy is the discrete τ Σ p log p: with τ > 0, compare with grid solutions (whose free energy differs from it
    by the constant τ log h^D), not with particles. The squared loss only.

    **Arguments:**

    - `n`: the number of candidates A drawn from `problem.init` (default: all of an explicit `measures.Particles`).
    """

    n: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if self.n is not None and (isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 1):
            raise ValueError(f"`n` of Convex must be a positive integer (candidates), got {self.n!r}.")

    def solve(self, problem: mfpde.StationaryProblem, *, solver=None, rtol=None, atol=None, gap_rtol=None,
              max_steps: int = 2_000, rounds: int = 20, key=0, throw: bool = False) -> mfpde.Solution:
        """Solve the convex program of `problem` (an `mfpde.StationaryProblem` with a `flows.TwoLayer` flow) on A
        candidates from `problem.init`.

        **Arguments:**

        - `solver`: an optimistix minimiser used as given (default `optx.BFGS(rtol, atol)`; `optx.LBFGS` for many
          thousands of candidates).
        - `rtol`, `atol`: tolerances of the default solver (default 1e-10 in float64, 1e-6 in float32).
        - `gap_rtol`: the target duality gap relative to the objective (default 1e-9 in float64, 1e-5 in float32).
        - `max_steps`: the iteration budget of each round of the minimiser.
        - `rounds`: rounds of minimiser + Frank–Wolfe restart at most; when the gap is still above target the last
          iterate is returned, certified by its gap, with result `nonlinear_max_steps_reached`.
        - `key`: integer seed or PRNG key for drawing the candidates.
        - `throw`: raise `mfpde.IntegrationError` instead of warning when the solver fails.

        **Returns:** an `mfpde.Solution` whose dataset holds, over `candidate`: the positions `theta` (with the
        optimal output weights u_a in place of the drawn ones), `mass` p_a, `output_weight` u_a; and the scalars
        `objective`, `loss`, `regulariser`, `entropy`, `lower_bound`, `duality_gap`, `support_size`, the
        `prediction` on the training points, `num_steps` (over all rounds), `rounds` and `result`.
        """
        if not isinstance(problem, mfpde.StationaryProblem):
            raise TypeError(f"`problem` of Convex must be an mfpde.StationaryProblem, got {type(problem).__name__}.")
        flow, data = problem.flow, problem.data
        if not isinstance(flow, mfpde.flows.TwoLayer):
            raise TypeError(f"`flow` of a Convex problem must be a flows.TwoLayer (the two-layer program), got "
                            f"{type(flow).__name__}.")
        if flow.loss != "squared":
            raise ValueError(f"`loss` of the flow must be 'squared' for Convex (closed-form inner problem), got {flow.loss!r}.")
        if not flow.train_output:
            raise ValueError("`train_output` of the flow must be True for Convex: the output weights are its variables.")
        if not isinstance(solver, (type(None), optx.AbstractMinimiser)):
            raise TypeError(f"`solver` of Convex must be an optimistix minimiser, got {type(solver).__name__}.")
        for name, value in (("max_steps", max_steps), ("rounds", rounds)):
            if isinstance(value, bool) or not isinstance(value, int) or value < 1:
                raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")
        dtype = jnp.zeros(()).dtype
        decay = flow.weight_decay(data, dtype)
        if float(decay[0]) <= 0:
            raise ValueError("`l2_output` (or `l2`) of the flow must be positive for Convex: without a penalty on the "
                             "output weights the perspective regulariser vanishes and the program has no unique optimum.")
        n = self.n
        if n is None:
            if not isinstance(problem.init, mfpde.measures.Particles):
                raise ValueError("`n` of Convex is needed unless `init` is an explicit measures.Particles.")
            n = problem.init.n
        tol = 1e-10 if dtype == jnp.float64 else 1e-6
        if solver is None:
            solver = optx.BFGS(rtol=rtol or tol, atol=atol or tol)
        gap_rtol = jnp.asarray(10 * tol if gap_rtol is None else gap_rtol, dtype)
        if isinstance(key, (int, np.integer)):
            key = jax.random.key(int(key))
        groups = flow.groups(data)
        theta = _initial_state(problem.init, key, n, groups).reshape(n, -1).astype(dtype)
        with Timer() as timer:
            observed, stats = jax.device_get(_solve(flow, data, theta, decay, solver, float(flow.temperature) > 0, max_steps,
                                                   rounds, gap_rtol, tol))
        dataset = _dataset(problem, self, solver, flow, data, observed, stats, timer)
        return warn_or_raise(mfpde.Solution(dataset, problem), throw, "convex solve")


def _reduced_objective(p, Phi, Y, cost, lam):
    """G(p) without the entropy, and Z = M(p)⁻¹ Y."""
    n = Phi.shape[0]
    M = jnp.eye(n, dtype=Phi.dtype) + (Phi * p) @ Phi.T / (n * lam)
    Z = jax.scipy.linalg.solve(M, Y, assume_a="pos")
    return jnp.sum(Y * Z) / (2 * n) + cost @ p, Z


def _entropy(p):
    return jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


@eqx.filter_jit
def _solve(flow, data, theta, decay, solver, noisy: bool, max_steps, rounds, gap_rtol, polish_tol):
    A, k = theta.shape[0], data.k
    # φ_a(x_i): the prediction of candidate a alone with unit output weights.
    unit = theta.at[:, :k].set(1.0)
    Phi = jax.vmap(lambda row: flow.predict(row[None], jnp.ones(1, theta.dtype), data.X, data)[:, 0])(unit).T
    cost = 0.5 * (theta[:, k:] ** 2) @ decay[k:]
    lam, tau = decay[0], flow.temperature.astype(theta.dtype)

    def simplex(z):
        return jax.nn.softmax(z) if noisy else z**2 / jnp.sum(z**2)

    def gradient(p):
        return jax.grad(lambda p: _reduced_objective(p, Phi, data.y, cost, lam)[0])(p)

    def objective(z, _):
        p = simplex(z)
        return _reduced_objective(p, Phi, data.y, cost, lam)[0] + tau * _entropy(p)

    def certificate(p):
        """G(p) + τ Σ p log p and the convexity lower bound on the optimum."""
        reduced, grad = _reduced_objective(p, Phi, data.y, cost, lam)[0], gradient(p)
        minimum = -tau * jax.nn.logsumexp(-grad / tau) if noisy else jnp.min(grad)
        return reduced + tau * _entropy(p), reduced - grad @ p + minimum

    def gibbs_residual(s, _):
        """s − log softmax(−∇G(softmax s)/τ): zero at the optimum, whose density has the Gibbs form."""
        return s - jax.nn.log_softmax(-gradient(jax.nn.softmax(s)) / tau)

    def unsolved(carry):
        _, count, gap, value, *_ = carry
        return (count == 0) | ((count < rounds) & (gap > gap_rtol * jnp.abs(value)))

    def round_(carry):
        z, count, _, _, steps, _, _ = carry
        sol = optx.minimise(objective, solver, z, max_steps=max_steps, throw=False)
        z, steps = sol.value, steps + sol.stats["num_steps"]
        value, lower = certificate(simplex(z))
        if noisy:
            # Quasi-Newton stalls where τ is small and the masses span many orders of magnitude; Newton on the
            # Gibbs fixed point converges quadratically from its result. Kept only where it improves the gap.
            newton = optx.root_find(gibbs_residual, optx.Newton(rtol=polish_tol, atol=polish_tol), z, max_steps=50,
                                    throw=False)
            polished = certificate(simplex(newton.value))
            better = jnp.isfinite(polished[1]) & (polished[0] - polished[1] < value - lower)
            z = jnp.where(better, newton.value, z)
            value, lower = jnp.where(better, polished[0], value), jnp.where(better, polished[1], lower)
            steps = steps + newton.stats["num_steps"]
        p = simplex(z)
        # A candidate whose mass the parametrisation drove to ~0 early cannot come back (its gradient in z vanishes
        # with its mass): restart from a Frank–Wolfe step towards the candidates that violate optimality.
        grad = gradient(p)
        violated = (grad < grad @ p).astype(p.dtype)
        p = 0.9 * p + 0.1 * violated / jnp.maximum(jnp.sum(violated), 1.0)
        restart = jnp.log(p) if noisy else jnp.sqrt(p)
        return restart, count + 1, value - lower, value, steps, sol.result._value, z

    inf = jnp.asarray(jnp.inf, theta.dtype)
    start = jnp.ones(A, theta.dtype)  # the uniform density in either parametrisation
    _, used, gap, value, steps, result, z = jax.lax.while_loop(unsolved, round_, (start, 0, inf, inf, 0, 0, start))
    # The certificate decides: an inner solver that hit its budget on the way does not fail a certified optimum.
    certified = gap <= gap_rtol * jnp.abs(value)
    failed = jnp.where(result == optx.RESULTS.successful._value, optx.RESULTS.nonlinear_max_steps_reached._value, result)
    result = jnp.where(certified, optx.RESULTS.successful._value, failed)
    p = simplex(z)
    Z = _reduced_objective(p, Phi, data.y, cost, lam)[1]
    objective_value, lower = certificate(p)
    entropy = _entropy(p)
    u = Phi.T @ Z / (data.n * lam)
    f = Phi @ (p[:, None] * u)
    observed = {
        "theta": theta.at[:, :k].set(u),
        "mass": p,
        "output_weight": u,
        "objective": objective_value,
        "loss": jnp.mean(0.5 * jnp.sum((f - data.y) ** 2, axis=1)),
        "regulariser": 0.5 * lam * jnp.sum(p * jnp.sum(u**2, axis=1)) + cost @ p,
        "entropy": entropy,
        "lower_bound": lower,
        "duality_gap": objective_value - lower,
        "support_size": jnp.sum(p > 1e-6 * jnp.max(p)),
        "prediction": f,
    }
    return observed, {"num_steps": steps, "rounds": used, "result": result}


_DESCRIPTIONS = {
    "theta": (("candidate", "param"), {"long_name": "candidate positions, with the optimal output weights u_a", "units": "1"}),
    "mass": (("candidate",), {"long_name": "optimal density p_a on the candidates", "units": "1"}),
    "output_weight": (("candidate", "output"), {"long_name": "optimal output weights u_a = ŵ_a / p_a", "units": "1"}),
    "objective": ((), {"long_name": "optimal value of the convex program", "units": "1"}),
    "loss": ((), {"long_name": "training loss E_i ½|f(x_i) − y_i|² at the optimum", "units": "1"}),
    "regulariser": ((), {"long_name": "(λ_u/2) Σ p|u|² + Σ c_a p_a at the optimum", "units": "1"}),
    "entropy": ((), {"long_name": "Σ_a p_a log p_a at the optimum", "units": "1"}),
    "lower_bound": ((), {"long_name": "certified lower bound on the optimal value (convexity)", "units": "1"}),
    "duality_gap": ((), {"long_name": "objective − lower_bound: bounds the distance to the optimum", "units": "1"}),
    "support_size": ((), {"long_name": "candidates with p_a > 1e-6 max p", "units": "1"}),
    "prediction": (("sample", "output"), {"long_name": "network output f(x_i) at the optimum", "units": "1"}),
}


def _dataset(problem, algorithm, solver, flow, data, observed, stats, timer):
    variables = {name: (_DESCRIPTIONS[name][0], np.asarray(values), _DESCRIPTIONS[name][1]) for name, values in observed.items()}
    A = observed["mass"].shape[0]
    coords = {
        "candidate": (("candidate",), np.arange(A), {"long_name": "candidate feature index"}),
        "param": (("param",), np.array(flow.coordinates(data), dtype=object), {"long_name": "coordinate of θ"}),
        "sample": (("sample",), np.arange(data.n), {"long_name": "training point index"}),
        "output": (("output",), np.arange(data.k), {"long_name": "output index"}),
    }
    stats = {k: np.asarray(v) for k, v in stats.items()}
    return make_dataset(variables=variables, coords=coords, problem=problem, algorithm=algorithm, stats=stats,
                        timing=timer, attrs={"solver": type(solver).__name__},
                        title=f"convex program of a {type(flow).__name__} flow on {A} candidate features")
