from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import scipy.optimize
import scipy.special

import mfpde
from mfpde.extend import make_dataset, result_code

from ._driver import check_counts
from ._stationary import AbstractStationaryAlgorithm, AbstractStationarySystem, solve_stationary
from ._tolerances import tolerance
from .particles import _initial_state


class Convex(AbstractStationaryAlgorithm):
    r"""The convex reformulation (docs/algorithms/convex.md) of a two-layer flow's energy on a finite support of candidate
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

    **Deep networks.** For a feature flow (`flows.FeatureDNN`, `flows.FeatureResNet`) with `penalty="convex"` the
    candidates are the units of a network drawn from `problem.init` (`measures.Layers` of a trained network: its own
    support), with features θ_{ℓ,a} from the forward pass. In the variables ŵ_{ℓ+1}(a, b) = w p_ℓ(a) p_{ℓ+1}(b) the
    constraint t_b p_{ℓ+1}(b) = Σ_a ŵ_{ℓ+1}(a, b) h(θ_{ℓ,a}) (t_b = θ_{ℓ+1,b}, minus θ_{ℓ,b} for a Res-Net) does not
    involve p_ℓ, so the perspective term (λ/2) Σ_b (Σ_a |ŵ(a, b)|)²/p_{ℓ+1}(b) is minimised column by column: it is
    the linear cost Σ_b p_{ℓ+1}(b) c(b), c(b) = (λ/2) β_b², with β_b = min {|v|_1 : Σ_a v_a h(θ_{ℓ,a}) = t_b} a basis
    pursuit (a linear program, solved exactly by HiGHS). The first layer costs (λ/2)|w_{1,a}|². What remains is the
    two-layer program above on the last layer's features φ_a = h_L(θ_{L,a}) with λ_u = λ and the linear cost of the
    last layer (Res-Net: one density over trajectories, so every layer's cost adds up on the same candidate). The
    other layers of a plain network enter only through their linear costs and entropies τ_ℓ Σ p_ℓ log p_ℓ
    (`entropy`), so each is solved in closed form: all its mass on its cheapest units for τ_ℓ = 0, the Gibbs density
    p_ℓ ∝ exp(−c_ℓ/τ_ℓ) with value −τ_ℓ log Σ_a exp(−c_ℓ(a)/τ_ℓ) otherwise. A Res-Net's entropies all fall on its one
    density and add up. Without entropies its optimum lower-bounds the flow's objective J on the same units.

    **Arguments:**

    - `n`: the number of candidates A drawn from `problem.init` (default: all of an explicit `measures.Particles`); for
      a feature flow, the units per hidden layer (default: those of an explicit `measures.Layers`).
    - `entropy`: for a feature flow, the entropy weights τ_ℓ ≥ 0 of the hidden layers' densities, one scalar for all
      or one per hidden layer (default 0). A two-layer flow's entropy weight is its own `temperature`.
    """

    solver_kinds: ClassVar[tuple[type, ...]] = (optx.AbstractMinimiser,)
    default_max_steps: ClassVar[int] = 2_000
    n: int | tuple[int, ...] | None = eqx.field(static=True, default=None)
    entropy: float | tuple[float, ...] = eqx.field(static=True, default=0.0)

    def __check_init__(self):
        for n in np.atleast_1d(self.n if self.n is not None else 1):
            if isinstance(n, (bool, np.bool_)) or not isinstance(n, (int, np.integer)) or n < 1:
                raise ValueError(f"`n` of Convex must be a positive integer or one per hidden layer, got {self.n!r}.")
        taus = np.atleast_1d(np.asarray(self.entropy, dtype=object))
        if taus.ndim != 1 or not all(isinstance(t, (int, float, np.integer, np.floating)) and not isinstance(t, bool)
                                     and np.isfinite(t) and t >= 0 for t in taus):
            raise ValueError(f"`entropy` of Convex must be a finite number ≥ 0 or one per hidden layer, got {self.entropy!r}.")

    def solve(self, problem: mfpde.StationaryProblem, *, solver=None, rtol=None, atol=None, gap_rtol=None,
              max_steps: int | None = None, rounds: int = 20, key=0, throw: bool = False) -> mfpde.Solution:
        """Solve the convex program of `problem` (an `mfpde.StationaryProblem` with a `flows.TwoLayer` flow) on A
        candidates from `problem.init`.

        **Arguments:**

        - `solver`: an optimistix minimiser used as given (default `optx.BFGS(rtol, atol)`; `optx.LBFGS` for many
          thousands of candidates).
        - `rtol`, `atol`: tolerances of the default solver (default 1e-10 in float64, 1e-6 in float32).
        - `gap_rtol`: the target duality gap relative to the objective (default 1e-7 in float64, 1e-4 in float32;
          the minimiser's own tolerance usually takes it far below).
        - `max_steps`: the iteration budget of each round of the minimiser (default 2 000).
        - `rounds`: rounds of minimiser + Frank–Wolfe restart at most; when the gap is still above target the last
          iterate is returned, certified by its gap, with result `nonlinear_max_steps_reached`.
        - `key`: integer seed or PRNG key for drawing the candidates.
        - `throw`: raise `mfpde.IntegrationError` instead of warning when the solver fails.

        **Returns:** an `mfpde.Solution` whose dataset holds, over `candidate` (the last layer's units for a
        feature flow): `mass` p_a and `output_weight` u_a; the scalars `objective`, `loss`, `regulariser`, `entropy`,
        `lower_bound`, `duality_gap`, `support_size`; the `prediction` on the training points; `num_steps` (over all
        rounds), `rounds` and `result`. A two-layer program adds the positions `theta` (with the optimal u_a); a
        feature flow's adds `layer_mass` (layer, unit), the `middle_weight` (link, source, unit) that produce each
        unit from the layer below, their `representation_cost` (layer, unit), and `layer_entropy` (layer).
        """
        check_counts(rounds=rounds)
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        gap_rtol = tolerance(gap_rtol, 1e-7 if dtype == jnp.float64 else 1e-4, "gap_rtol", dtype)
        return solve_stationary(self, problem, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, key=key,
                                throw=throw, gap_rtol=gap_rtol, rounds=rounds)

    def check(self, problem):
        flow, data = problem.flow, problem.data
        if not isinstance(flow, (mfpde.flows.TwoLayer, mfpde.flows.AbstractFeatureFlow)):
            raise TypeError(f"`flow` of a Convex problem must be a flows.TwoLayer or a feature flow (flows.FeatureDNN, "
                            f"flows.FeatureResNet), got {type(flow).__name__}.")
        if not isinstance(data, mfpde.Dataset):
            raise TypeError(f"`data` of a Convex problem must be finite training data (an mfpde.Dataset), got "
                            f"{type(data).__name__}; for a Population, solve on a sample of it: `population.sample(key, n)`.")
        if flow.loss != "squared":
            raise ValueError(f"`loss` of the flow must be 'squared' for Convex (closed-form inner problem), got {flow.loss!r}.")

    def default_tolerances(self, problem, dtype):
        tol = 1e-10 if dtype == jnp.float64 else 1e-6
        return tol, tol

    def default_solvers(self, problem, rtol, atol):
        return (optx.BFGS(rtol=rtol, atol=atol),)

    def discretise(self, problem, key, dtype, *, gap_rtol, rounds):
        build = _two_layer_program if isinstance(problem.flow, mfpde.flows.TwoLayer) else _feature_flow_program
        Phi, cost, lam, tau, extra, coords = build(self, problem, key, dtype)
        usable = np.isfinite(cost)
        polish_tol = jnp.asarray(self.default_tolerances(problem, dtype)[0], dtype)
        program = _SimplexProgram(jnp.asarray(Phi[:, usable]), problem.data.y, jnp.asarray(cost[usable]), lam,
                                  jnp.asarray(tau, dtype), gap_rtol, polish_tol, float(tau) > 0, rounds)
        return program, (usable, extra, coords, gap_rtol)

    def layout(self, problem, context, observed, stats, timer, attrs):
        usable, extra, coords, gap_rtol = context
        observed = _scatter(observed, usable)
        observed |= extra(observed)
        return _dataset(problem, self, problem.flow, problem.data, observed, stats, timer, coords,
                        attrs | {"gap_rtol": gap_rtol})


def _two_layer_program(algorithm, problem, key, dtype):
    """Φ, the linear cost c, λ_u and τ of a TwoLayer flow's program on candidates drawn from `problem.init`."""
    flow, data = problem.flow, problem.data
    if np.any(np.asarray(algorithm.entropy) != 0):
        raise ValueError("`entropy` of Convex is for feature flows: a TwoLayer flow's entropy weight is its `temperature`.")
    if not flow.train_output:
        raise ValueError("`train_output` of the flow must be True for Convex: the output weights are its variables.")
    decay = flow.weight_decay(data, dtype)
    if float(decay[0]) <= 0:
        raise ValueError("`l2_output` (or `l2`) of the flow must be positive for Convex: without a penalty on the "
                         "output weights the perspective regulariser vanishes and the program has no unique optimum.")
    n = algorithm.n
    if n is None:
        if not isinstance(problem.init, mfpde.measures.Particles):
            raise ValueError("`n` of Convex is needed unless `init` is an explicit measures.Particles.")
        n = problem.init.n
    if not isinstance(n, (int, np.integer)):
        raise ValueError(f"`n` of Convex must be one integer (the candidates) for a TwoLayer flow, got {n!r}.")
    k = data.k
    theta = _initial_state(problem.init, key, n, flow.groups(data)).reshape(n, -1).astype(dtype)
    # φ_a(x_i): the prediction of candidate a alone with unit output weight.
    unit = theta.at[:, :k].set(1.0)
    Phi = jax.vmap(lambda row: flow.predict(row[None], jnp.ones(1, dtype), data.X, data)[:, 0])(unit).T
    cost = 0.5 * (theta[:, k:] ** 2) @ decay[k:]

    def extra(observed):
        return {"theta": np.asarray(theta.at[:, :k].set(observed["output_weight"]))}

    coords = {"param": (("param",), np.array(flow.coordinates(data), dtype=object), {"long_name": "coordinate of θ"})}
    return np.asarray(Phi), np.asarray(cost), decay[0], flow.temperature, extra, coords


def _feature_flow_program(algorithm, problem, key, dtype):
    """Φ, c, λ and τ of a feature flow's program (class docstring) on the units of a network drawn from
    `problem.init` (e.g. `measures.Layers` of a trained network): basis pursuit for the middle layers' costs."""
    flow, data = problem.flow, problem.data
    if flow.penalty != "convex":
        raise ValueError(f"`penalty` of the flow must be 'convex' for Convex (the program of that regulariser), got "
                         f"{flow.penalty!r}.")
    if not float(flow.l2) > 0:
        raise ValueError("`l2` of the flow must be positive for Convex: it is the strength λ of the perspective regulariser.")
    widths = algorithm.n if algorithm.n is not None else getattr(problem.init, "widths", None)
    if widths is None:
        raise ValueError("`n` of Convex (the candidate units per hidden layer) is needed unless `init` is an explicit "
                         "measures.Layers.")
    widths = tuple(int(w) for w in np.broadcast_to(widths, (flow.depth,)))
    taus = np.asarray(algorithm.entropy, dtype=np.float64)
    if taus.ndim == 1 and taus.shape != (flow.depth,):
        raise ValueError(f"`entropy` of Convex must be a scalar or have one entry per hidden layer ({flow.depth}), "
                         f"got {algorithm.entropy!r}.")
    taus = np.broadcast_to(taus, (flow.depth,))
    state = flow.initial_state(problem.init, key, flow.shapes(widths, data), data)
    weights = [state[f"w{ell}"] for ell in range(1, flow.depth + 2)]
    thetas = [np.asarray(theta, dtype=np.float64) for theta in flow.forward(weights, data.X)[0]]
    lam = float(flow.l2)
    size = max(widths)
    costs = [0.5 * lam * np.sum(np.asarray(weights[0]) ** 2, axis=1)]
    representation = np.full((max(flow.depth - 1, 0), size, size), np.nan)
    for ell in range(flow.depth - 1):
        h = np.asarray(flow.activation(ell)(thetas[ell]))
        targets = thetas[ell + 1] - thetas[ell] if flow.skip else thetas[ell + 1]
        beta, v = _basis_pursuit(h, targets)
        costs.append(0.5 * lam * beta**2)
        representation[ell, : v.shape[0], : v.shape[1]] = v
    # A Res-Net's units are trajectories with one density: their costs and entropies add up. A plain network's
    # hidden layers below the last have their own densities, each solved in closed form.
    cost = np.sum(costs, axis=0) if flow.skip else costs[-1]
    tau = float(np.sum(taus)) if flow.skip else float(taus[-1])
    lower = [] if flow.skip else [_linear_entropic(c, t) for c, t in zip(costs[:-1], taus[:-1])]
    below_cost = sum(float(np.sum(p[p > 0] * c[p > 0])) for p, c in zip(lower, costs))
    below_entropy = sum(t * _plogp(p) for p, t in zip(lower, taus))
    Phi = np.asarray(flow.activation(flow.depth - 1)(thetas[-1])).T
    table = np.full((flow.depth, size), np.nan)
    for ell, c in enumerate(costs):
        table[ell, : c.shape[0]] = c

    def extra(observed):
        masses = np.full((flow.depth, size), np.nan)
        for ell, c in enumerate(costs):
            masses[ell, : c.shape[0]] = lower[ell] if ell < len(lower) else observed["mass"]
        below = below_cost + below_entropy
        return {"representation_cost": table, "layer_mass": masses, "middle_weight": representation,
                "layer_entropy": np.array([_plogp(p[np.isfinite(p)]) for p in masses]),
                "objective": observed["objective"] + below, "lower_bound": observed["lower_bound"] + below,
                "regulariser": observed["regulariser"] + below_cost}

    coords = {"layer": (("layer",), np.arange(1, flow.depth + 1), {"long_name": "hidden layer index"}),
              "link": (("link",), np.arange(1, flow.depth), {"long_name": "weights from hidden layer ℓ to ℓ + 1"}),
              "unit": (("unit",), np.arange(size), {"long_name": "unit index within a layer"}),
              "source": (("source",), np.arange(size), {"long_name": "unit index within the layer below"})}
    return Phi, cost, jnp.asarray(lam, dtype), tau, extra, coords


def _linear_entropic(cost, tau):
    """argmin over the simplex of Σ_a p_a c_a + τ Σ_a p_a log p_a: the Gibbs density ∝ exp(−c/τ), or for τ = 0 the
    uniform density on the cheapest entries (units that cannot be represented have c = ∞ and no mass)."""
    if tau > 0:
        return scipy.special.softmax(-cost / tau)
    cheapest = np.isclose(cost, np.min(cost), rtol=1e-12, atol=0.0)
    return cheapest / cheapest.sum()


def _plogp(p):
    return float(np.sum(p[p > 0] * np.log(p[p > 0])))


def _basis_pursuit(h, targets):
    """β_b = min {Σ_a |v_a| : Σ_a v_a h_a = t_b} for each target row t_b, and the minimisers v_b as the columns of
    an (A, B) matrix (β = inf and v = NaN where t_b is not in the span of the h_a): linear programs in
    v = v⁺ − v⁻ ≥ 0, by HiGHS — exact, where a first-order method would leave a tolerance."""
    A = h.shape[0]
    equality = np.concatenate([h.T, -h.T], axis=1)
    beta, v = np.full(targets.shape[0], np.inf), np.full((A, targets.shape[0]), np.nan)
    for b, target in enumerate(targets):
        lp = scipy.optimize.linprog(np.ones(2 * A), A_eq=equality, b_eq=target, bounds=(0, None), method="highs")
        if lp.status == 0:
            beta[b], v[:, b] = lp.fun, lp.x[:A] - lp.x[A:]
    return beta, v


def _scatter(observed, usable):
    """Put the per-candidate results of the usable candidates back among all (mass 0 elsewhere)."""
    if usable.all():
        return observed
    out = dict(observed)
    for name, fill in (("mass", 0.0), ("output_weight", np.nan)):
        full = np.full((usable.shape[0], *observed[name].shape[1:]), fill)
        full[usable] = observed[name]
        out[name] = full
    return out


def _reduced_objective(p, Phi, Y, cost, lam):
    """G(p) without the entropy, and Z = M(p)⁻¹ Y."""
    n = Phi.shape[0]
    M = jnp.eye(n, dtype=Phi.dtype) + (Phi * p) @ Phi.T / (n * lam)
    Z = jax.scipy.linalg.solve(M, Y, assume_a="pos")
    return jnp.sum(Y * Z) / (2 * n) + cost @ p, Z


def _entropy(p):
    return jnp.sum(jnp.where(p > 0, p * jnp.log(jnp.where(p > 0, p, 1.0)), 0.0))


class _SimplexProgram(AbstractStationarySystem):
    """min over p ∈ Δ of G(p) + τ Σ p log p (the `Convex` docstring), certified."""

    Phi: jax.Array
    Y: jax.Array
    cost: jax.Array
    lam: jax.Array
    tau: jax.Array
    gap_rtol: jax.Array
    polish_tol: jax.Array
    noisy: bool = eqx.field(static=True)
    rounds: int = eqx.field(static=True)

    def find(self, solver, max_steps):
        return _simplex_program(self.Phi, self.Y, self.cost, self.lam, self.tau, solver, self.noisy, max_steps,
                                self.rounds, self.gap_rtol, self.polish_tol)


def _simplex_program(Phi, Y, cost, lam, tau, solver, noisy: bool, max_steps, rounds, gap_rtol, polish_tol):
    """The per-candidate and scalar results of the program, with its certificate."""
    A, n = Phi.shape[1], Phi.shape[0]

    def simplex(z):
        return jax.nn.softmax(z) if noisy else z**2 / jnp.sum(z**2)

    def gradient(p):
        return jax.grad(lambda p: _reduced_objective(p, Phi, Y, cost, lam)[0])(p)

    def objective(z, _):
        p = simplex(z)
        return _reduced_objective(p, Phi, Y, cost, lam)[0] + tau * _entropy(p)

    def certificate(p):
        """G(p) + τ Σ p log p and the convexity lower bound on the optimum."""
        reduced, grad = _reduced_objective(p, Phi, Y, cost, lam)[0], gradient(p)
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
        return restart, count + 1, value - lower, value, steps, result_code(sol.result), z

    inf = jnp.asarray(jnp.inf, Phi.dtype)
    start = jnp.ones(A, Phi.dtype)  # the uniform density in either parametrisation
    _, used, gap, value, steps, result, z = jax.lax.while_loop(unsolved, round_, (start, 0, inf, inf, 0, 0, start))
    # The certificate decides: an inner solver that hit its budget on the way does not fail a certified optimum.
    certified = gap <= gap_rtol * jnp.abs(value)
    successful, budget = result_code(optx.RESULTS.successful), result_code(optx.RESULTS.nonlinear_max_steps_reached)
    result = jnp.where(certified, successful, jnp.where(result == successful, budget, result))
    p = simplex(z)
    Z = _reduced_objective(p, Phi, Y, cost, lam)[1]
    objective_value, lower = certificate(p)
    entropy = _entropy(p)
    u = Phi.T @ Z / (n * lam)
    f = Phi @ (p[:, None] * u)
    observed = {
        "mass": p,
        "output_weight": u,
        "objective": objective_value,
        "loss": jnp.mean(0.5 * jnp.sum((f - Y) ** 2, axis=1)),
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
    "regulariser": ((), {"long_name": "(λ_u/2) Σ p|u|² + Σ c_a p_a at the optimum (all layers' costs)", "units": "1"}),
    "entropy": ((), {"long_name": "Σ_a p_a log p_a at the optimum (the last layer's density)", "units": "1"}),
    "layer_entropy": (("layer",), {"long_name": "Σ_a p_ℓ(a) log p_ℓ(a) of each hidden layer's optimal density",
                                   "units": "1"}),
    "lower_bound": ((), {"long_name": "certified lower bound on the optimal value (convexity)", "units": "1"}),
    "duality_gap": ((), {"long_name": "objective − lower_bound: bounds the distance to the optimum", "units": "1"}),
    "support_size": ((), {"long_name": "candidates with p_a > 1e-6 max p", "units": "1"}),
    "prediction": (("sample", "output"), {"long_name": "network output f(x_i) at the optimum", "units": "1"}),
    "layer_mass": (("layer", "unit"), {"long_name": "optimal density p_ℓ on each hidden layer's units (a Res-Net's "
                                               "one density over trajectories repeated)", "units": "1"}),
    "middle_weight": (("link", "source", "unit"), {"long_name": "ŵ_{ℓ+1}(a, b) / p_{ℓ+1}(b): the least-ℓ1 "
                                                  "representation of unit b by the units a of the layer below", "units": "1"}),
    "representation_cost": (("layer", "unit"), {"long_name": "c_ℓ: first-layer cost (λ/2)|w_1|², then (λ/2) β² with β "
                                                "the least ℓ1 norm producing the unit from the layer below", "units": "1"}),
}


def _dataset(problem, algorithm, flow, data, observed, stats, timer, coords, attrs):
    variables = {name: (_DESCRIPTIONS[name][0], np.asarray(values), _DESCRIPTIONS[name][1]) for name, values in observed.items()}
    A = observed["mass"].shape[0]
    coords = coords | {
        "candidate": (("candidate",), np.arange(A), {"long_name": "candidate feature (last-layer unit) index"}),
    }
    stats = {k: np.asarray(v) for k, v in stats.items()}
    return make_dataset(variables=variables, coords=coords, problem=problem, algorithm=algorithm, stats=stats,
                        timing=timer, attrs=attrs,
                        title=f"convex program of a {type(flow).__name__} flow on {A} candidate features")
