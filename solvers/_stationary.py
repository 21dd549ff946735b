"""The driver shared by the stationary algorithms (`GibbsFixedPoint`, `ParticleStationary`, `Convex`).

A stationary algorithm only discretises: `discretise(problem, key, dtype, **options)` turns the problem into a
*system*, an Equinox module whose `find(solver, max_steps)` runs one optimistix solve from the system's start and
returns (observables, statistics), and `layout` turns what was found into the dataset. This module does the rest
once: the checks of the problem and of the arguments, the traced tolerances, the solvers tried in turn (each from the
same start, until one succeeds), the timing, the result code and the fields every stationary result has (`num_steps`
over all the solvers tried, `result` of the last, the attributes `solver`, `rtol`, `atol` and `max_steps`).
"""

import abc
from typing import Any

import equinox as eqx
import jax
import jax.numpy as jnp
import optimistix as optx

import mfpde
from mfpde.extend import Timer, warn_or_raise

from ._driver import check_counts
from ._integrate import as_key
from ._tolerances import tolerance


class AbstractStationarySystem(eqx.Module):
    """What a stationary algorithm solves: its unknowns' start and the equations, as an Equinox module (arrays are
    traced, so new data reuse the compiled program)."""

    @abc.abstractmethod
    def find(self, solver, max_steps: int) -> tuple[dict, dict]:
        """Run `solver` for at most `max_steps` iterations from the start; returns (observables, statistics), the
        statistics with `num_steps` and `result` (an `optx.RESULTS` code as an integer)."""


class AbstractStationaryAlgorithm(mfpde.AbstractAlgorithm):
    """A discretisation of a `StationaryProblem` (see the module docstring for the division of work)."""

    solver_kinds: eqx.AbstractClassVar[tuple[type, ...]]
    """The optimistix solver classes a user may pass as `solver`."""
    default_max_steps: eqx.AbstractClassVar[int]
    """The iterations each solver may take when `max_steps` is not given: a budget that stops a solver going nowhere,
    chosen per algorithm from the iterations its solves take (benchmarks/RESULTS.md, "Stationary iteration budgets")."""

    @abc.abstractmethod
    def check(self, problem: mfpde.StationaryProblem) -> None:
        """Refuse a problem this algorithm cannot solve (its flow, data or temperature), naming what is wrong."""

    @abc.abstractmethod
    def default_tolerances(self, problem, dtype) -> tuple[float, float]:
        """(rtol, atol) of the default solvers."""

    @abc.abstractmethod
    def default_solvers(self, problem, rtol, atol) -> tuple:
        """The optimistix solvers tried in turn when none is given."""

    @abc.abstractmethod
    def discretise(self, problem, key, dtype, **options) -> tuple[AbstractStationarySystem, Any]:
        """The system to solve, and whatever `layout` needs besides what was found."""

    @abc.abstractmethod
    def layout(self, problem, context, observed: dict, stats: dict, timer: Timer, attrs: dict):
        """The result's `xarray.Dataset` (through `mfpde.extend.make_dataset`, with `attrs` among its attributes)."""


def check_measure_flow(problem, algorithm: AbstractStationaryAlgorithm) -> None:
    """Refuse a flow that is not a flow on measures (a feature flow's stationary points are a convex program)."""
    if not isinstance(problem.flow, mfpde.flows.AbstractFlow):
        raise TypeError(f"`flow` of a {type(algorithm).__name__} problem must be a flow on measures (flows.AbstractFlow), "
                        f"got {type(problem.flow).__name__}; a feature flow's convex program is solvers.Convex.")


def _find(system: AbstractStationarySystem, solver, max_steps: int):
    return system.find(solver, max_steps)


_find_jit = eqx.filter_jit(_find)


def solve_stationary(algorithm: AbstractStationaryAlgorithm, problem, *, solver, rtol, atol, max_steps, key, throw,
                     **options) -> mfpde.Solution:
    """Solve `problem` with `algorithm`: `solver` alone when given, else each default solver in turn from the same
    start until one succeeds, each with at most `max_steps` iterations (`None`: the algorithm's `default_max_steps`).
    `options` go to `algorithm.discretise`."""
    name = type(algorithm).__name__
    if not isinstance(problem, mfpde.StationaryProblem):
        raise TypeError(f"`problem` of {name} must be an mfpde.StationaryProblem, got {type(problem).__name__}.")
    algorithm.check(problem)
    if not isinstance(solver, (type(None), *algorithm.solver_kinds)):
        kinds = {optx.AbstractMinimiser: "minimiser", optx.AbstractRootFinder: "root finder",
                 optx.AbstractLeastSquaresSolver: "least-squares solver"}
        wanted = " or ".join(kinds[kind] for kind in algorithm.solver_kinds)
        raise TypeError(f"`solver` of {name} must be an optimistix {wanted}, got {type(solver).__name__}.")
    max_steps = algorithm.default_max_steps if max_steps is None else max_steps
    check_counts(max_steps=max_steps)
    dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
    default_rtol, default_atol = algorithm.default_tolerances(problem, dtype)
    rtol, atol = tolerance(rtol, default_rtol, "rtol", dtype), tolerance(atol, default_atol, "atol", dtype)
    solvers = (solver,) if solver is not None else algorithm.default_solvers(problem, rtol, atol)
    key, _ = as_key(key)
    steps, tried = 0, []
    with Timer() as timer:
        system, context = algorithm.discretise(problem, key, dtype, **options)
        for each in solvers:
            tried.append(type(each).__name__)
            observed, stats = jax.device_get(_find_jit(system, each, max_steps))
            steps += int(stats["num_steps"])
            if int(stats["result"]) == 0:
                break
    stats = {**stats, "num_steps": steps}
    attrs = {"solver": ", then ".join(tried), "rtol": rtol, "atol": atol, "max_steps": max_steps}
    dataset = algorithm.layout(problem, context, dict(observed), stats, timer, attrs)
    return warn_or_raise(mfpde.Solution(dataset, problem), throw, "stationary solve")
