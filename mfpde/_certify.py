import jax.numpy as jnp
import numpy as np
import xarray as xr

from ._algorithm import AbstractAlgorithm, solve
from ._problem import FlowProblem, StationaryProblem
from ._solution import Solution, cf_attributes
from ._timing import Timer
from .flows import AbstractFeatureFlow, TwoLayer
from .measures import Layers, Particles
from .measures._base import split_groups


def certify(sol: Solution, convex: AbstractAlgorithm, *, problem: FlowProblem | None = None, time=None,
            **options) -> Solution:
    """The global-minimum check (docs/algorithms/convex.md) for a flow's solution: its objective against the optimum
    of the convex program on the flow's own support, with the stationarity residuals, in one dataset.

    At time t the flow's units are a feasible point of the convex program on their own support (masses 1/N,
    ŵ = w times the masses), whose value there is the flow's objective. So

        gap = objective(t) − min over the support ≥ 0,

    and a flow that has converged to a global minimiser has gap → 0 and velocities → 0 (as the width grows); a flow
    stuck at a spurious stationary point keeps a positive gap. The convex optimum is certified by its own duality gap.

    **Arguments:**

    - `sol`: a solution of a `flows.TwoLayer` problem with τ = 0 by `solvers.Particles(..., save_state=True)`,
      or of a feature flow (`flows.FeatureDNN`, `flows.FeatureResNet`) with `penalty="convex"` by
      `solvers.Units(..., save_state=True)`.
    - `convex`: the convex algorithm, e.g. `solvers.Convex()`.
    - `problem`: the solved `FlowProblem` (default `sol.problem`; give it for a solution loaded from a file).
    - `time`: the time to certify (default the last one reached).
    - `**options`: passed to the convex solve (`solver`, `rtol`, `max_steps`, …).

    **Returns:** a `Solution` (`.problem` the solved problem, `.success` that of the convex solve) whose `.dataset`
    holds `objective` (of the flow), `convex_optimum`, `gap`, `relative_gap`,
    `lower_bound` and `convex_duality_gap` (the convex solve's certificate), the stationarity residuals, and over
    `candidate` the optimal density `mass` on the support (the particles, or the last layer's units). For a two-layer
    flow the residuals are `output_speed` = ‖∂_t u‖ and `feature_speed` = ‖∂_t (w, b)‖ in L²(ρ); for a feature flow
    `weight_speed` (weight_layer) and `feature_speed` (layer), as in its solution; `result`, the convex solve's result
    code. Its `to_netcdf` writes it like any solution.
    """
    problem = getattr(sol, "problem", None) if problem is None else problem
    if not isinstance(problem, FlowProblem) or not isinstance(problem.flow, (TwoLayer, AbstractFeatureFlow)):
        raise ValueError("`problem`: certify needs the solved FlowProblem of a flows.TwoLayer network or a feature flow; "
                         "pass problem= for a solution loaded from a file.")
    with Timer() as timer:
        if isinstance(problem.flow, TwoLayer):
            t, objective, support, residuals = _two_layer(sol, problem, time)
        else:
            t, objective, support, residuals = _feature_flow(sol, problem, time, convex)
        flow, data = problem.flow, problem.data
        optimum = solve(StationaryProblem(flow, data, support), convex, **options).dataset
    best = float(optimum.objective)
    scalar = {"units": "1"}
    variables = {
        "objective": ((), objective, {**scalar, "long_name": "the flow's objective at this time (no entropy)"}),
        "convex_optimum": ((), best, {**scalar, "long_name": "optimum of the convex program on the flow's support"}),
        "gap": ((), objective - best, {**scalar, "long_name": "objective − convex optimum (0 at a global minimiser)"}),
        "relative_gap": ((), (objective - best) / abs(objective), {**scalar, "long_name": "gap / |objective|"}),
        "lower_bound": ((), float(optimum.lower_bound), {**scalar, "long_name": "certified lower bound of the convex program"}),
        "convex_duality_gap": ((), float(optimum.duality_gap), {**scalar, "long_name": "duality gap of the convex solve"}),
        "mass": (("candidate",), optimum.mass.values, {**scalar, "long_name": "optimal density on the flow's support"}),
        **residuals,
    }
    candidate = ("candidate", np.arange(optimum.mass.size), {"long_name": "index of a unit of the flow's support"})
    title = f"global-minimum check of a {type(flow).__name__} flow at t = {t:g}"
    dataset = xr.Dataset(variables, coords={"candidate": candidate},
                         attrs={**cf_attributes(title, f"mfpde.certify(Solution, {type(convex).__name__})"), "time": t,
                                "result_message": optimum.attrs["result_message"], "wall_time_s": timer.wall_time,
                                "compile_time_s": timer.compile_time, "run_time_s": timer.run_time})
    dataset["result"] = optimum["result"]
    return Solution(dataset, problem)


def _at_time(variable, time):
    variable = variable.dropna("time", how="all")
    return variable.isel(time=-1) if time is None else variable.sel(time=time, method="nearest")


def _two_layer(sol, problem, time):
    flow, data = problem.flow, problem.data
    if float(flow.temperature) != 0.0:
        raise ValueError("`sol` must be a τ = 0 flow: the particles' free energy uses a continuous entropy, which the "
                         "convex program on a finite support does not have.")
    if "theta" not in sol.dataset:
        raise ValueError("`sol` holds no particles: solve with solvers.Particles(..., save_state=True).")
    theta = _at_time(sol.dataset.theta, time)
    t = float(theta.time)
    positions = jnp.asarray(theta.values)
    N, k = positions.shape[0], data.k
    masses = jnp.full((N,), 1.0 / N, positions.dtype)
    speed = np.asarray(flow.velocity(t, positions, masses, data)) ** 2
    support = Particles(**{name: np.asarray(part) for name, part in split_groups(positions, flow.groups(data)).items()})
    residuals = {
        "output_speed": ((), float(np.sqrt(np.mean(speed[:, :k].sum(axis=1)))),
                         {"units": "1", "long_name": "stationarity residual ‖∂_t u‖ in L²(ρ)"}),
        "feature_speed": ((), float(np.sqrt(np.mean(speed[:, k:].sum(axis=1)))),
                          {"units": "1", "long_name": "stationarity residual ‖∂_t (w, b)‖ in L²(ρ)"}),
    }
    return t, float(flow.energy(positions, masses, data)), support, residuals


def _feature_flow(sol, problem, time, convex):
    flow, data = problem.flow, problem.data
    if np.any(np.asarray(getattr(convex, "entropy", 0.0)) != 0):
        raise ValueError("`convex` must have no `entropy`: the flow's objective has none, so a program with entropies "
                         "is no bound on it.")
    names = [f"w{ell}" for ell in range(1, flow.depth + 2)]
    if any(name not in sol.dataset for name in names):
        raise ValueError("`sol` holds no weights: solve with solvers.Units(..., save_state=True).")
    state = {name: _at_time(sol.dataset[name], time) for name in sol.dataset.data_vars
             if name in names or (flow.form == "features" and name.startswith("theta"))}
    t = float(next(iter(state.values())).time)
    state = {name: jnp.asarray(value.values) for name, value in state.items()}
    observed = flow.observables(t, state, data)
    residuals = {name: (("weight_layer",) if name == "weight_speed" else ("layer",), np.asarray(observed[name]),
                        {"units": "1", "long_name": flow.describe(data)[name][1]["long_name"]})
                 for name in ("weight_speed", "feature_speed")}
    return t, float(flow.energy(state, data)), Layers(**{name: state[name] for name in names}), residuals
