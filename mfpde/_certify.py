import jax.numpy as jnp
import numpy as np
import xarray as xr

from ._algorithm import AbstractAlgorithm, solve
from ._problem import FlowProblem, StationaryProblem
from ._solution import Solution
from .flows import TwoLayer
from .measures import Particles
from .measures._base import split_groups


def certify(sol: Solution, convex: AbstractAlgorithm, *, problem: FlowProblem | None = None, time=None,
            **options) -> xr.Dataset:
    """The global-minimum check of MATH.md 4 for a flow's solution: its objective against the optimum of the convex
    program on the flow's own support, with the stationarity residuals, in one dataset.

    At time t the N particles θ_j of mass 1/N are a feasible point of the convex program on the support
    {θ_j} (p_j = 1/N, ŵ_j = u_j/N), whose value is the flow's energy R. So

        gap = R(ρ_t) − min over the support ≥ 0,

    and a flow that has converged to a global minimiser has gap → 0 and velocities → 0; a flow stuck at a spurious
    stationary point keeps a positive gap. The convex optimum itself is certified by its own duality gap.

    **Arguments:**

    - `sol`: a solution of a `flows.TwoLayer` problem with τ = 0 by `solvers.Particles(..., save_particles=True)`.
    - `convex`: the convex algorithm, e.g. `solvers.Convex()`.
    - `problem`: the solved `FlowProblem` (default `sol.problem`; give it for a solution loaded from a file).
    - `time`: the time to certify (default the last one reached).
    - `**options`: passed to the convex solve (`solver`, `rtol`, `max_steps`, …).

    **Returns:** an `xarray.Dataset` with `objective` (R of the flow), `convex_optimum`, `gap`, `relative_gap`,
    `lower_bound` and `convex_duality_gap` (the convex solve's certificate), the stationarity residuals
    `output_speed` = ‖∂_t u‖ and `feature_speed` = ‖∂_t (w, b)‖ (L²(ρ) norms), and over `particle` the optimal
    reweighting `mass` and `output_weight` of the support.
    """
    problem = getattr(sol, "problem", None) if problem is None else problem
    if not isinstance(problem, FlowProblem) or not isinstance(problem.flow, TwoLayer):
        raise ValueError("`problem`: certify needs the solved FlowProblem of a flows.TwoLayer network; pass problem= "
                         "for a solution loaded from a file.")
    flow, data = problem.flow, problem.data
    if float(flow.temperature) != 0.0:
        raise ValueError("`sol` must be a τ = 0 flow: the particles' free energy uses a continuous entropy, which the "
                         "convex program on a finite support does not have.")
    ds = sol.dataset
    if "theta" not in ds:
        raise ValueError("`sol` holds no particles: solve with solvers.Particles(..., save_particles=True).")
    theta = ds.theta.dropna("time", how="all")
    theta = theta.isel(time=-1) if time is None else theta.sel(time=time, method="nearest")
    t = float(theta.time)
    positions = jnp.asarray(theta.values)
    N, k = positions.shape[0], data.k
    masses = jnp.full((N,), 1.0 / N, positions.dtype)
    objective = float(flow.energy(positions, masses, data))
    speed = np.asarray(flow.velocity(t, positions, masses, data)) ** 2
    support = Particles(**{name: np.asarray(part) for name, part in split_groups(positions, flow.groups(data)).items()})
    optimum = solve(StationaryProblem(flow, data, support), convex, **options).dataset
    best = float(optimum.objective)
    scalar = {"units": "1"}
    out = xr.Dataset(
        {
            "objective": ((), objective, {**scalar, "long_name": "the flow's objective R(ρ_t) (energy, no entropy)"}),
            "convex_optimum": ((), best, {**scalar, "long_name": "optimum of the convex program on the flow's support"}),
            "gap": ((), objective - best, {**scalar, "long_name": "objective − convex optimum (0 at a global minimiser)"}),
            "relative_gap": ((), (objective - best) / abs(objective), {**scalar, "long_name": "gap / |objective|"}),
            "lower_bound": ((), float(optimum.lower_bound), {**scalar, "long_name": "certified lower bound of the convex program"}),
            "convex_duality_gap": ((), float(optimum.duality_gap), {**scalar, "long_name": "duality gap of the convex solve"}),
            "output_speed": ((), float(np.sqrt(np.mean(speed[:, :k].sum(axis=1)))),
                             {**scalar, "long_name": "stationarity residual ‖∂_t u‖ in L²(ρ)"}),
            "feature_speed": ((), float(np.sqrt(np.mean(speed[:, k:].sum(axis=1)))),
                              {**scalar, "long_name": "stationarity residual ‖∂_t (w, b)‖ in L²(ρ)"}),
            "mass": (("particle",), optimum.mass.values, {**scalar, "long_name": "optimal density on the flow's particles"}),
            "output_weight": (("particle", "output"), optimum.output_weight.values,
                              {**scalar, "long_name": "optimal output weights on the flow's particles"}),
        },
        coords={"particle": np.arange(N), "output": np.arange(k)},
        attrs={"Conventions": "CF-1.10", "title": f"global-minimum check of a {type(flow).__name__} flow at t = {t:g}",
               "time": t, "convex_result": optimum.attrs["result_message"]},
    )
    return out
