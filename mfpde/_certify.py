import warnings

import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import xarray as xr

from . import _dual_bound
from ._algorithm import AbstractAlgorithm, solve
from ._problem import FlowProblem, StationaryProblem
from ._solution import Solution, cf_attributes, result_variable
from ._timing import Timer
from .flows import AbstractFeatureFlow, AbstractFlow, TwoLayer
from .measures import Layers, Particles
from .measures._base import split_groups


def certify(sol: Solution, convex: AbstractAlgorithm | None = None, *, problem=None, time=None, starts: int = 256,
            polish: int = 16, solver=None, max_steps: int = 500, key=0, **options) -> Solution:
    """Is a trained network a global minimiser? A lower bound on the optimal value of its energy, from its
    particles (docs/algorithms/convex.md, "Certificates").

    For a flow whose energy R is convex in ρ (`flow.convex`: every two-layer network, potentials), convexity at the
    candidate ρ = Σ_j m_j δ_{θ_j} gives, for every measure ρ*,

        R(ρ*) ≥ R(ρ) − ∫Φ[ρ] dρ + inf_θ Φ[ρ](θ) = lower_bound,       gap = R(ρ) − lower_bound ≥ 0,

    with Φ[ρ] = δR/δρ the first variation. The infimum is searched over all of θ-space by an optimistix minimiser
    from many starts (the particles, random draws and, when θ has dimension ≤ 2, a grid). When Φ is 2-homogeneous
    (ReLU or linear networks, `flow.homogeneous`) its infimum is 0 or −∞; then the bound is
    R(ρ) − ∫Φ dρ + M·min(0, min_{|θ|=1} Φ), with M ≥ ∫|θ|² dρ* for any ρ* better than ρ (`flow.second_moment_bound`,
    2R/λ for weight decay λ). A global minimiser has gap 0; a network at a spurious stationary point keeps gap > 0,
    and `feature` is where a new neuron would lower the energy most.

    With `convex` (e.g. `solvers.Convex()`), a two-layer network is also compared with the optimum of the convex
    program on its own support (its neurons reweighted). A feature flow (`flows.FeatureDNN`, `flows.FeatureResNet`
    with `penalty="convex"`) is certified by that program only: `convex` is required, and its `gap` and
    `lower_bound` are those on the network's own units.

    **Arguments:**

    - `sol`: a τ = 0 solution holding particles: by `solvers.Particles(..., save_state=True)`,
      `solvers.ParticleStationary`, or `solvers.Convex` (its candidates, with their optimal output weights and
      density); for a feature flow by `solvers.Units(..., save_state=True)`.
    - `convex`: the convex algorithm, e.g. `solvers.Convex()` (optional for particle flows).
    - `problem`: the solved problem (default `sol.problem`; give it for a solution loaded from a file).
    - `time`: the time to certify (default the last one reached).
    - `starts`, `polish`: random starts of the search for inf Φ, and how many of the best starts are minimised.
    - `solver`, `max_steps`: the optimistix minimiser of that search (default `optx.BFGS(1e-10, 1e-12)` in float64)
      and its iteration budget.
    - `key`: seed of the random starts.
    - `**options`: passed to the convex solve (`solver`, `rtol`, `max_steps`, …).

    **Returns:** a `Solution` (`.problem` the solved problem) whose `.dataset` holds `objective` R(ρ),
    `lower_bound`, `gap`, `relative_gap`, `mean_potential` ∫Φ dρ, `potential_min` (the infimum found, on the unit
    sphere for a homogeneous Φ), `feature` (param) where it was reached, the stationarity residuals (`output_speed`
    ‖∂_t u‖ and `feature_speed` ‖∂_t (w, b)‖ in L²(ρ) for a two-layer network) and `result`, the code of the search's
    best minimisation. With `convex`: `convex_optimum`, `convex_gap` (objective − convex optimum),
    `convex_lower_bound`, `convex_duality_gap`, over `candidate` the optimal `mass`, and `convex_result`. A feature
    flow's: `objective`, `convex_optimum`, `gap`, `relative_gap`, `lower_bound`, `convex_duality_gap`, `mass`,
    `weight_speed` and `feature_speed`, `result`. `to_netcdf` writes it like any solution.
    """
    problem = getattr(sol, "problem", None) if problem is None else problem
    flow = getattr(problem, "flow", None)
    if not isinstance(problem, (FlowProblem, StationaryProblem)) or not isinstance(flow, (AbstractFlow, AbstractFeatureFlow)):
        raise ValueError("`problem`: certify needs the solved problem of a particle flow (e.g. flows.TwoLayer) or a "
                         "feature flow; pass problem= for a solution loaded from a file.")
    if isinstance(flow, AbstractFeatureFlow):
        if convex is None:
            raise ValueError("`convex`: a feature flow is certified by the convex program on its own units; pass "
                             "solvers.Convex().")
        return _feature_flow(sol, problem, time, convex, options)
    if convex is not None and not isinstance(flow, TwoLayer):
        raise ValueError(f"`convex`: the convex program is for flows.TwoLayer networks, not {type(flow).__name__}.")
    for name, value, low in (("starts", starts, 0), ("polish", polish, 1), ("max_steps", max_steps, 1)):
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < low:
            raise ValueError(f"`{name}` of certify must be an integer ≥ {low}, got {value!r}.")
    if not flow.convex:
        warnings.warn(f"{type(flow).__name__} is not known to be convex in ρ (`convex` is False): the bound holds only "
                      "locally, for measures near the candidate.", stacklevel=2)
    with Timer() as timer:
        t, theta, variables, code = _particle_flow(sol, problem, time, starts, polish, solver, max_steps, key)
        attrs = {"starts": int(starts), "polish": int(polish), "search": "unit sphere" if flow.homogeneous(problem.data)
                 else "all of θ-space"}
        if convex is not None:
            support = Particles(**{name: part for name, part in split_groups(theta, flow.groups(problem.data)).items()})
            optimum = solve(StationaryProblem(flow, problem.data, support), convex, **options).dataset
            best = float(optimum.objective)
            objective = float(variables["objective"][1])
            variables.update({
                "convex_optimum": ((), best, {**_SCALAR, "long_name": "optimum of the convex program on the flow's support"}),
                "convex_gap": ((), objective - best, {**_SCALAR, "long_name": "objective − convex optimum on the support"}),
                "convex_lower_bound": ((), float(optimum.lower_bound), {**_SCALAR, "long_name": "certified lower bound of the convex program"}),
                "convex_duality_gap": ((), float(optimum.duality_gap), {**_SCALAR, "long_name": "duality gap of the convex solve"}),
                "mass": (("candidate",), optimum.mass.values, {**_SCALAR, "long_name": "optimal density on the flow's support"}),
            })
            attrs["convex_result_message"] = optimum.attrs["result_message"]
    title = f"certificate of a {type(flow).__name__} flow" + ("" if t is None else f" at t = {t:g}")
    dataset = _dataset(variables, title, convex, timer, t, attrs, flow, problem.data, theta.shape[0])
    dataset["result"] = result_variable(code)
    if convex is not None:
        dataset["convex_result"] = optimum["result"]
    return Solution(dataset, problem)


_SCALAR = {"units": "1"}


def _dataset(variables, title, convex, timer, t, attrs, flow, data, n_candidates):
    action = "mfpde.certify(Solution" + ("" if convex is None else f", {type(convex).__name__}") + ")"
    coords = {} if flow is None else {
        "param": ("param", np.array(flow.coordinates(data), dtype=object), {"long_name": "coordinate of θ"})}
    if "mass" in variables:
        coords["candidate"] = ("candidate", np.arange(n_candidates), {"long_name": "index of a unit of the flow's support"})
    return xr.Dataset(variables, coords=coords,
                      attrs={**cf_attributes(title, action), **({} if t is None else {"time": t}), **attrs,
                             "wall_time_s": timer.wall_time, "compile_time_s": timer.compile_time,
                             "run_time_s": timer.run_time})


def _at_time(variable, time):
    if "time" not in variable.dims:  # a stationary point
        return None, variable
    variable = variable.dropna("time", how="all")
    variable = variable.isel(time=-1) if time is None else variable.sel(time=time, method="nearest")
    return float(variable.time), variable


def _particle_flow(sol, problem, time, starts, polish, solver, max_steps, key):
    flow, data = problem.flow, problem.data
    if float(flow.temperature) != 0.0:
        raise ValueError("`sol` must be a τ = 0 flow: the bound is on R, and a noisy flow's particles do not minimise it.")
    if not np.all(flow.trainable(data)):
        raise ValueError("`problem`: certify needs every coordinate of θ trained; this flow keeps some fixed, so its "
                         "particles do not minimise R over all measures.")
    if "theta" not in sol.dataset:
        raise ValueError("`sol` holds no particles: solve with solvers.Particles(..., save_state=True) or "
                         "solvers.ParticleStationary.")
    t, theta = _at_time(sol.dataset.theta, time)
    theta = np.asarray(theta.values)
    positions = jnp.asarray(theta)
    N = theta.shape[0]
    if "particle_mass" in sol.dataset:  # evolved masses (birth and death)
        masses = jnp.asarray(_at_time(sol.dataset.particle_mass, time)[1].values)
    elif "mass" in sol.dataset and sol.dataset["mass"].dims == sol.dataset.theta.dims[:1]:  # solvers.Convex's density
        masses = jnp.asarray(sol.dataset["mass"].values)
    elif getattr(problem.init, "masses", None) is not None and problem.init.n == N:
        masses = jnp.asarray(problem.init.masses, positions.dtype)
    else:
        masses = jnp.full((N,), 1.0 / N, positions.dtype)
    sphere = flow.homogeneous(data)
    float64 = positions.dtype == jnp.float64
    if solver is None:
        solver = optx.BFGS(rtol=1e-10, atol=1e-12) if float64 else optx.BFGS(rtol=1e-5, atol=1e-6)
    points = _dual_bound.starts(theta, starts, sphere, key if isinstance(key, jax.Array) else jax.random.key(key))
    found = _dual_bound.lower_bound(flow, positions, masses, data, jnp.asarray(points),
                                    polish=min(polish, points.shape[0]), solver=solver, max_steps=max_steps)
    objective, lower = float(found["objective"]), float(found["lower_bound"])
    variables = {
        "objective": ((), objective, {**_SCALAR, "long_name": "energy R(ρ) of the particles (no entropy)"}),
        "lower_bound": ((), lower, {**_SCALAR, "long_name": "R(ρ) − ∫Φ dρ + inf Φ: a lower bound on min R"}),
        "gap": ((), objective - lower, {**_SCALAR, "long_name": "objective − lower bound (0 at a global minimiser)"}),
        "relative_gap": ((), (objective - lower) / abs(objective), {**_SCALAR, "long_name": "gap / |objective|"}),
        "mean_potential": ((), float(found["mean_potential"]), {**_SCALAR, "long_name": "∫Φ[ρ] dρ, Φ the first variation"}),
        "potential_min": ((), float(found["potential_min"]),
                          {**_SCALAR, "long_name": "inf of Φ[ρ]" + (" on the unit sphere" if sphere else "")}),
        "feature": (("param",), np.asarray(found["feature"]), {**_SCALAR, "long_name": "θ where Φ[ρ] is least"}),
    }
    if isinstance(flow, TwoLayer):
        k = data.k
        speed = np.asarray(found["velocity"]) ** 2
        variables["output_speed"] = ((), float(np.sqrt(np.mean(speed[:, :k].sum(axis=1)))),
                                     {**_SCALAR, "long_name": "stationarity residual ‖∂_t u‖ in L²(ρ)"})
        variables["feature_speed"] = ((), float(np.sqrt(np.mean(speed[:, k:].sum(axis=1)))),
                                      {**_SCALAR, "long_name": "stationarity residual ‖∂_t (w, b)‖ in L²(ρ)"})
    code = found["result"]
    return t, theta, variables, int(code)


def _feature_flow(sol, problem, time, convex, options):
    flow, data = problem.flow, problem.data
    if np.any(np.asarray(getattr(convex, "entropy", 0.0)) != 0):
        raise ValueError("`convex` must have no `entropy`: the flow's objective has none, so a program with entropies "
                         "is no bound on it.")
    names = [f"w{ell}" for ell in range(1, flow.depth + 2)]
    if any(name not in sol.dataset for name in names):
        raise ValueError("`sol` holds no weights: solve with solvers.Units(..., save_state=True).")
    with Timer() as timer:
        state = {name: _at_time(sol.dataset[name], time) for name in sol.dataset.data_vars
                 if name in names or (flow.form == "features" and name.startswith("theta"))}
        t = next(iter(state.values()))[0]
        state = {name: jnp.asarray(value.values) for name, (_, value) in state.items()}
        observed = flow.observables(t, state, data)
        objective = float(flow.energy(state, data))
        support = Layers(**{name: state[name] for name in names})
        optimum = solve(StationaryProblem(flow, data, support), convex, **options).dataset
    best = float(optimum.objective)
    variables = {
        "objective": ((), objective, {**_SCALAR, "long_name": "the flow's objective at this time (no entropy)"}),
        "convex_optimum": ((), best, {**_SCALAR, "long_name": "optimum of the convex program on the flow's units"}),
        "gap": ((), objective - best, {**_SCALAR, "long_name": "objective − convex optimum on the flow's units"}),
        "relative_gap": ((), (objective - best) / abs(objective), {**_SCALAR, "long_name": "gap / |objective|"}),
        "lower_bound": ((), float(optimum.lower_bound), {**_SCALAR, "long_name": "certified lower bound of the convex program"}),
        "convex_duality_gap": ((), float(optimum.duality_gap), {**_SCALAR, "long_name": "duality gap of the convex solve"}),
        "mass": (("candidate",), optimum.mass.values, {**_SCALAR, "long_name": "optimal density on the flow's units"}),
    }
    for name in ("weight_speed", "feature_speed"):
        variables[name] = (("weight_layer",) if name == "weight_speed" else ("layer",), np.asarray(observed[name]),
                           {**_SCALAR, "long_name": flow.describe(data)[name][1]["long_name"]})
    title = f"certificate of a {type(flow).__name__} flow on its own units at t = {t:g}"
    dataset = _dataset(variables, title, convex, timer, t, {"result_message": optimum.attrs["result_message"]},
                       None, data, optimum.mass.size)
    dataset["result"] = optimum["result"]
    return Solution(dataset, problem)
