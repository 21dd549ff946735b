"""The integration driver shared by the time-stepping algorithms (`Particles`, `Units`, `Grid`).

An algorithm only discretises (`AbstractIntegrationAlgorithm`): it builds a *point*, an Equinox module that turns one
problem into a system (`point.system(problem)`: velocity, noise scale and observables on a flat state) and draws its
initial state (`point.start(problem, key)`); it tells the kinds of default method its points need apart and builds
the integrator of one kind; and it lays out its dataset. `solve_flow` does the rest once: the checks, the sweeps of
the algorithm's own fields, the split of a study by kind, running a single problem, a checkpointed run or a study
(per-point or shared steps, batches, devices, a store to resume from, Dask), the timing and the dataset.
"""

import abc
import dataclasses
import sys
import warnings
from pathlib import Path
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr

import mfpde
from mfpde.extend import (ChunkStore, Timer, fingerprint, flatten_attrs, make_dataset, numerics, save_times,
                          warn_or_raise)

from ._batches import MaxRMSNorm, SharedSteps, error_norm, merge_points, run_ensemble, sweep_variables
from ._integrate import (KINK_DEVIATION, PredictableSteps, as_key, as_progress_meter, implicit_solver, integrate_adaptive,
                         integrate_scan, probe_velocity, watched)
from ._tolerances import tolerance

MAX_STEPS = 100_000
"""The default `max_steps` of every integration (`Particles`, `Units`, `Grid`): a budget that stops a run whose steps
collapse, far above what a converging run takes (a few thousand adaptive steps in benchmarks/RESULTS.md)."""


class AbstractPoint(eqx.Module):
    """One problem of a run or a study, solved from its key: pure, so it vmaps. A discretisation says what the system
    of a problem is and how its state starts; `__call__` integrates it, from the start or from a restart."""

    integrate: eqx.AbstractVar[jax.tree_util.Partial | None]
    dtype: eqx.AbstractVar[np.dtype]

    @abc.abstractmethod
    def system(self, problem: mfpde.FlowProblem) -> eqx.Module:
        """The system of `problem` on the flat state: `velocity(t, y)`, `observe(t, y, noisy, save)` and, for noise,
        `noise_scale(y)` and `brownian(span, tol, key, like)`."""

    @abc.abstractmethod
    def start(self, problem: mfpde.FlowProblem, key) -> tuple[jax.Array, jax.Array]:
        """(the flat state at t0 drawn with the first half of `key`, the second half, which drives the noise)."""

    def constrain(self, y: jax.Array) -> jax.Array:
        """The initial state as the integration holds it (e.g. sharded across devices)."""
        return y

    def __call__(self, problem, key, meter, restart=None):
        """(observables at the save times, statistics, final state). With `restart = (ts, state)` it integrates over
        the save times ts only, from `state = (y, t, steps taken)` if given, else from the start (`restart_options`)."""
        y0, noise_key = self.start(problem, key)  # a restart's state replaces y0 (and XLA drops the draw)
        span = tuple(jnp.asarray(t, self.dtype) for t in problem.tspan)
        y0, t_start, options = restart_options(self.integrate, y0, span[0], restart)
        return self.integrate(self.system(problem), self.constrain(y0), t_start, span, noise_key, meter, **options)


@dataclasses.dataclass(frozen=True)
class SolveOptions:
    """The options of `AbstractIntegrationAlgorithm.solve`, as the user gave them (see its docstring)."""

    saveat: object = None
    key: object = 0
    solver: diffrax.AbstractSolver | None = None
    stepsize_controller: diffrax.AbstractStepSizeController | None = None
    rtol: float | None = None
    atol: float | None = None
    dt0: float | None = None
    max_steps: int = MAX_STEPS
    progress_meter: object = None
    brownian_tol: float | None = None
    batch_size: int = 64
    batch_stepping: Literal["per_point", "shared"] = "per_point"
    directory: object = None
    checkpoint_every: int = 10
    client: object = None
    throw: bool = False


class AbstractIntegrationAlgorithm(mfpde.AbstractAlgorithm):
    """An algorithm that integrates a `FlowProblem` in time by discretising it: it turns one problem into a point
    (`discretise`), chooses the method of its points (`kinds`, `integrator`) and lays out its dataset (`layout`);
    `solve`, the same for every such algorithm, does the rest (module docstring)."""

    save_state: eqx.AbstractVar[bool]
    sweepable: eqx.AbstractClassVar[tuple[str, ...]]
    """The fields of the algorithm a study may sweep (as `algorithm.<field>`): a static one (a size, e.g. `n`) runs
    one study per value, a traced one (e.g. `dt`) inside the batches."""

    @abc.abstractmethod
    def check(self, problem: mfpde.FlowProblem, ensemble: mfpde.EnsembleProblem | None, options: SolveOptions) -> None:
        """Refuse a problem, a study or an option this algorithm cannot take, naming it, before anything runs."""

    @abc.abstractmethod
    def discretise(self, problem: mfpde.FlowProblem, ensemble, key) -> tuple[AbstractPoint, jax.Array, dict]:
        """(the point that solves one problem of the run or study, its `integrate` not yet set; the initial state of
        `problem`, drawn eagerly with the first half of `key` so that the measure's checks can warn; the attributes
        of the discretisation)."""

    def kinds(self, point, problem, ensemble, y0, options: SolveOptions) -> tuple[np.ndarray | None, object]:
        """The kind of default method each point of a study would get alone (labels, in the study's C order), and
        whatever `integrator` needs of the probes that told them apart. None: one kind for all (the default)."""
        return None, None

    @abc.abstractmethod
    def integrator(self, point, problem, ensemble, y0, ts, options: SolveOptions, probes, norm):
        """(`integrate(system, y0, t0, span, key, meter, **restart)`, the attributes that record the method, the
        (solver, controller) that identify it in a store's fingerprint), for points of one kind; `norm` is the error
        norm of the default controller."""

    @abc.abstractmethod
    def layout(self, problem, ensemble, ts, observed: dict, attrs: dict) -> tuple[dict, dict, str]:
        """(for each observable its dims beyond `time` and its CF attributes; the coordinates besides the sweep's and
        `time`, which may be given to describe it; the dataset's title)."""

    def devices(self) -> list:
        """The devices a run or a study is split across."""
        return jax.devices()

    def solve(self, problem, *, saveat=None, key=0, solver: diffrax.AbstractSolver | None = None,
              stepsize_controller: diffrax.AbstractStepSizeController | None = None, rtol: float | None = None,
              atol: float | None = None, dt0: float | None = None, max_steps: int = MAX_STEPS,
              progress_meter: diffrax.AbstractProgressMeter | bool | None = None, brownian_tol: float | None = None,
              batch_size: int = 64, batch_stepping: Literal["per_point", "shared"] = "per_point", directory=None,
              checkpoint_every: int = 10, client=None, throw: bool = False) -> mfpde.Solution:
        """Integrate `problem`.

        **Arguments:**

        - `problem`: an `mfpde.FlowProblem`, or an `mfpde.EnsembleProblem` (its points batched through one compiled
          program; the result has one dimension per swept parameter). Each point gets the default method it would
          get alone: a study whose points differ in kind (τ = 0 and τ > 0 on particles; transport, diffusion- or
          drift-dominated on a grid) runs one study per kind.
        - `saveat`: times (array) or a `diffrax.SaveAt(ts=...)`; default 101 times over the span. Observables are
          computed at these times only; no step is kept in memory.
        - `key`: an integer seed or a JAX PRNG key, for the initial state and the noise.
        - `solver`, `stepsize_controller`: diffrax objects, used as given (default: see the algorithm's docstring,
          with a `PIDController(rtol, atol)`).
        - `rtol`, `atol`: tolerances of the default controller (traced: changing them does not recompile); the
          algorithm's docstring gives their defaults.
        - `dt0`: initial step (default: chosen by the controller).
        - `max_steps`: step budget (default 100 000); reaching it returns what was computed, with result
          `max_steps_reached`.
        - `progress_meter`: a diffrax progress meter, True for `diffrax.TqdmProgressMeter()`, False for none;
          by default a progress bar in a notebook (not under pytest), none elsewhere.
        - `brownian_tol`: for τ > 0 with a `stepsize_controller` of your own (the default one draws the noise per
          step, without a tree), the resolution of the Brownian tree, default (t1 − t0)·2⁻¹⁸. It must stay below
          the steps the controller takes (below it the noise of two steps is no longer independent), and it sets the
          cost of the noise: each step descends the tree, one level per halving, drawing the increment and Lévy area
          of every coordinate at each level. With the default 18 levels that is most of a step's cost for a small
          network (about two thirds for N = 1024, d = 10, n = 256 on a CPU); a coarser value that still lies below
          the steps taken makes each step cheaper.
        - `batch_size`: for an `mfpde.EnsembleProblem`, the number of points run together in one compiled program.
        - `batch_stepping`: how the points of a batch take their adaptive steps. "per_point": each with its own step
          sizes and error control, so each point equals its single solve (to rounding). On a GPU the batch is
          vmapped and runs in lock step, as many iterations as its slowest point needs; on CPUs small groups of
          points are vmapped and the groups run one after another (vmapping more is slower there).
          "shared" (`Particles`, `Units`): the batch is one system with one step size, a step being accepted only
          when every point meets the tolerance (`solvers.MaxRMSNorm`, the default controller's norm here; give a
          controller of your own that norm too), and the points with the same seed share one draw of their Brownian
          path per step (with the default noisy method, the increments of the batch's steps: each point is then a
          draw of the same law as its single solve, not the same path; a controller of your own keeps the tree). The noise then costs one tree descent per distinct seed, not per point: in a temperature ×
          seed sweep it drops by the number of temperatures. Each point agrees with its single solve to the solver's
          tolerance, not to rounding. A point whose state stops being finite even at the smallest steps (10⁻⁹ of the
          span) is marked failed (`nonfinite`) and leaves the error control, keeping its earlier saves; the others
          go on.
        - `directory`: for an `mfpde.EnsembleProblem`, a folder where each finished batch is written at once (one
          NetCDF file per batch, atomically); solving the same study again with the same folder skips the batches
          already there, so an interrupted study resumes and the merged result equals an uninterrupted run.
        - `checkpoint_every`: with a `directory` and a single problem, the run is integrated in segments of this
          many save times; each finished segment (its observables and final state) is written at once, and a rerun
          continues from the last one, with the steps and the noise of an uninterrupted run (the default noisy
          method resumes its controller's state; a Brownian tree spans the whole run).
        - `client`: a `dask.distributed.Client`: each batch of an `EnsembleProblem` becomes a task that a worker
          runs and writes into `directory` (required, and visible to every worker); the driver then reads them all.
        - `throw`: raise `mfpde.IntegrationError` (carrying the partial solution) instead of warning on failure.
        """
        options = SolveOptions(saveat, key, solver, stepsize_controller, rtol, atol, dt0, max_steps, progress_meter,
                               brownian_tol, batch_size, batch_stepping, directory, checkpoint_every, client, throw)
        return solve_flow(self, problem, options)


def solve_flow(algorithm: AbstractIntegrationAlgorithm, problem, options: SolveOptions) -> mfpde.Solution:
    """`algorithm.solve(problem, **options)`: the checks, the study's split by static swept fields and by kinds of
    method, the integrator, the run (`run`), the timing and the dataset."""
    name = type(algorithm).__name__
    ensemble = problem if isinstance(problem, mfpde.EnsembleProblem) else None
    base = ensemble.problem if ensemble is not None else problem
    if not isinstance(base, mfpde.FlowProblem):
        raise TypeError(f"`problem` of {name} must be an mfpde.FlowProblem or EnsembleProblem, got {type(problem).__name__}.")
    check_counts(max_steps=options.max_steps, batch_size=options.batch_size)
    norm = error_norm(options.batch_stepping, ensemble, options.batch_size)
    if ensemble is not None:
        static = _check_swept_fields(algorithm, ensemble)
        if static is not None:
            return solve_per_value(algorithm, ensemble, static, options)
    algorithm.check(base, ensemble, options)
    ts = save_times(options.saveat, base.tspan)
    key, seed = as_key(options.key)
    point, y0, attrs = algorithm.discretise(base, ensemble, key)
    attrs = {"seed": seed, **attrs}
    meter = as_progress_meter(options.progress_meter)
    with Timer() as timer:
        kinds, probes = algorithm.kinds(point, base, ensemble, y0, options)
        if kinds is not None and len(set(kinds.tolist())) > 1:
            return solve_per_kind(algorithm, ensemble, kinds, options)
        if watched() and not isinstance(meter, diffrax.NoProgressMeter):  # the bar shows once the compiled loop runs
            print(f"{name}: solving (a first solve of this problem's shapes compiles first: seconds to a minute) ...",
                  file=sys.stderr, flush=True)
        integrate, described, numerics_ = algorithm.integrator(point, base, ensemble, y0, ts, options, probes, norm)
        attrs.update(described)
        point = dataclasses.replace(point, integrate=integrate)
        observed, stats = run(point, base, ensemble, algorithm, key, meter, attrs, numerics_, ts=ts,
                              directory=options.directory, checkpoint_every=options.checkpoint_every,
                              batch_size=options.batch_size, batch_stepping=options.batch_stepping,
                              client=options.client, devices=algorithm.devices())
    described, coords, title = algorithm.layout(base, ensemble, ts, observed, attrs)
    variables, sweep_coords, stats = sweep_variables(observed, described, ts, stats, ensemble)
    coords = {"time": time_coordinate(ts), **coords, **sweep_coords}
    dataset = make_dataset(variables=variables, coords=coords, problem=base, algorithm=algorithm, stats=stats,
                           timing=timer, attrs=attrs, title=title, stat_dims=ensemble.dims if ensemble is not None else ())
    return warn_or_raise(mfpde.Solution(dataset, problem), options.throw)


def time_coordinate(ts, description: str = "mean-field time: t = k·η/N after k gradient-descent steps of learning "
                                           "rate η") -> tuple:
    """The `time` coordinate of a dataset: the save times, described."""
    return ("time",), ts, {"long_name": "time", "units": "1", "description": description}


def _check_swept_fields(algorithm, ensemble) -> str | None:
    """Refuse a swept `algorithm.<field>` that `algorithm.sweepable` does not name (and `dt` of an adaptive method);
    return the static one swept, if any."""
    name = type(algorithm).__name__
    static = None
    for key in ensemble.sweep:
        if not key.startswith("algorithm."):
            continue
        field = key.removeprefix("algorithm.")
        if field not in algorithm.sweepable:
            allowed = " and ".join(f"`algorithm.{f}`" for f in algorithm.sweepable)
            raise ValueError(f"sweep `{key}`: {name} can sweep {allowed} only." if allowed else
                             f"sweep `{key}`: {name} can sweep no field of its own.")
        if field == "dt" and algorithm.method != "scan":
            raise ValueError("sweep `algorithm.dt` needs method='scan'.")
        if _is_static(algorithm, field):
            static = key
    return static


def _is_static(module, field: str) -> bool:
    return any(f.name == field and f.metadata.get("static", False) for f in dataclasses.fields(module))


def solve_per_value(algorithm, ensemble, key: str, options: SolveOptions) -> mfpde.Solution:
    """A sweep of a static field of the algorithm (`key` = "algorithm.n", the width): one batched, compiled study per
    value (in a sub-folder of a `directory` named by it), concatenated along its dimension."""
    if not ensemble.product:
        raise ValueError(f"sweep `{key}` needs a product sweep (product=True).")
    field = key.removeprefix("algorithm.")
    label = key.replace(".", "_")
    values = ensemble.sweep[key]
    rest = {k: v for k, v in ensemble.sweep.items() if k != key}
    parts = []
    for value in values:
        value = value.item()
        sub = dataclasses.replace(algorithm, **{field: value})
        directory = None if options.directory is None else Path(options.directory) / f"{field}={value}"
        problem = mfpde.EnsembleProblem(ensemble.problem, rest) if rest else ensemble.problem
        parts.append(sub.solve(problem, **vars(dataclasses.replace(options, directory=directory))).dataset)
    dataset = xr.concat(parts, dim=xr.Variable(label, values, {"long_name": f"swept parameter {key}"}),
                        combine_attrs="override", data_vars="all")
    dataset = dataset.transpose(*ensemble.dims, ...)
    for name in ("wall_time_s", "compile_time_s", "run_time_s"):
        dataset.attrs[name] = sum(part.attrs[name] for part in parts)
    dataset.attrs[label] = "swept"
    return mfpde.Solution(dataset)


def check_counts(**counts) -> None:
    """Refuse a count (`max_steps`, `batch_size`, …) that is not a positive integer, naming it."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def default_tolerances(noisy: bool, dtype, kinked: bool = False) -> tuple[float, float]:
    """(rtol, atol) of the default controller. Deterministic: 1e-6/1e-8 in float64, 1e-4/1e-6 in float32; with
    kinks, 1e-5/1e-7 in float64 (the velocity's jumps cap the order any method reaches, so a tighter tolerance buys
    little accuracy for many steps; measured in benchmarks/method_choice.py). Noisy (a pathwise error, whose
    observables carry an O(N^{-1/2}) Monte-Carlo error anyway): 1e-3, and 1e-2 in float32 (Heun's weak error at 1e-3
    is below the Monte-Carlo floor of 16 seeds at N = 1024, at 1e-2 it is resolved; benchmarks/RESULTS.md "Noisy
    flows")."""
    if noisy:
        return (1e-3, 1e-3) if dtype == jnp.float64 else (1e-2, 1e-2)
    if kinked:
        return (1e-5, 1e-7) if dtype == jnp.float64 else (1e-4, 1e-6)
    return (1e-6, 1e-8) if dtype == jnp.float64 else (1e-4, 1e-6)


def integrator(algorithm, system, y0, tspan, ts, options: SolveOptions, *, noisy: bool, save: bool, norm):
    """The integrator of points of one kind, `integrate(system, y0, t0, span, key, meter, **restart)`, with the
    attributes that record it, and the (solver, controller) that identify it in a store's fingerprint.

    `algorithm.method` "scan" is fixed-step Euler(–Maruyama) with `algorithm.dt`. "adaptive" uses the diffrax `solver`
    and `stepsize_controller` of `options` as given; by default for τ > 0 Heun with milder PI coefficients and
    predictable steps (`PredictableSteps`, the noise drawn per step; a solver or controller of one's own steps on a
    Brownian tree), and for τ = 0, from probes of the velocity of `system` at (tspan[0], y0): Kvaerno5 with matrix-free
    Newton–GMRES when its Jacobian is so large that an explicit method would need more than `algorithm.stiff_steps`
    steps for stability alone (λ·(t1 − t0)/3.5, λ its spectral radius by power iteration, stopped once it is
    decided: `spectral_radius`); Bosh3 (3rd order) at `default_tolerances(kinked=True)` when the velocity has kinks
    (`kink_deviation`, e.g. a ReLU network), whose jumps make a 5th-order error estimate reject step after step;
    else Tsit5."""
    dtype = y0.dtype
    ts = jnp.asarray(ts, dtype)
    span = tuple(jnp.asarray(t, dtype) for t in tspan)
    if algorithm.method == "scan":
        if options.batch_stepping == "shared":
            raise ValueError("`batch_stepping='shared'` needs method='adaptive' (the scan's fixed steps are shared anyway).")
        integrate = jax.tree_util.Partial(integrate_scan, ts=ts, dt=algorithm.dt.astype(dtype), noisy=noisy, save=save)
        attrs = {"solver": "EulerMaruyama" if noisy else "Euler", "stepsize_controller": "constant", "dt": algorithm.dt}
        return integrate, attrs, (None, None)
    solver, controller = options.solver, options.stepsize_controller
    attrs = {"max_steps": options.max_steps, "stiff_detected": None, "kinks_detected": None}
    kinked = False
    if solver is None and noisy:
        # Heun (2 evaluations a step; for additive noise Itô = Stratonovich, weak order 2): at equal weak accuracy
        # cheaper than ShARK, which also draws a Lévy area (benchmarks/RESULTS.md, "Noisy flows").
        solver = diffrax.Heun()
    elif solver is None:
        # An explicit solver needs λ·(t1 − t0)/3.5 steps for stability alone.
        threshold = 3.5 * algorithm.stiff_steps / float(span[1] - span[0])
        lam, bound, iterations, deviation, resolved = (
            x.item() for x in probe_velocity(system, y0, span[0], jnp.asarray(threshold, dtype)))
        stiff = lam > threshold
        kinked = bool(resolved) and deviation > KINK_DEVIATION and not stiff
        attrs.update(jacobian_spectral_radius=lam, jacobian_spectral_radius_bound=bound,
                     stiffness_probe_iterations=iterations, stiff_detected=stiff, kink_deviation=deviation,
                     kinks_detected=kinked)
        solver = implicit_solver() if stiff else diffrax.Bosh3() if kinked else diffrax.Tsit5()
    default_rtol, default_atol = default_tolerances(noisy, dtype, kinked)
    rtol = tolerance(options.rtol, default_rtol, "rtol", dtype)
    atol = tolerance(options.atol, default_atol, "atol", dtype)
    attrs.update(rtol=rtol, atol=atol)
    predictable = controller is None and options.solver is None and noisy  # a solver of one's own may query the
    # noise more than once a step (e.g. HalfSolver): it gets the tree
    if predictable and options.brownian_tol is not None:
        warnings.warn("`brownian_tol` is ignored: the default noisy method draws each step's noise afresh, without a "
                      "Brownian tree; pass a `stepsize_controller` of your own to step on a tree.", UserWarning, stacklevel=2)
    if predictable:
        # Predictable steps, whose noise is drawn afresh per step instead of from a Brownian tree (benchmarks/
        # RESULTS.md, "Noisy flows"); milder PI coefficients, as diffrax recommends for noisy error estimates; steps
        # land on the save times, because interpolating an SDE solution between steps is only O(√h) accurate.
        controller = diffrax.ClipStepSizeController(
            PredictableSteps(diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0.1, icoeff=0.3, norm=norm)), step_ts=ts)
    elif controller is None:
        controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=norm)
    if isinstance(norm, MaxRMSNorm) and isinstance(controller, diffrax.AbstractAdaptiveStepSizeController):
        controller = SharedSteps(controller, norm.points)
    integrate = adaptive_integrator(ts=ts, dtype=dtype, span=span, solver=solver, controller=controller,
                                    dt0=options.dt0, max_steps=options.max_steps, save=save, noisy=noisy,
                                    brownian_tol=options.brownian_tol, predictable=predictable)
    attrs.update(solver=type(solver).__name__, stepsize_controller=repr(controller))
    return integrate, attrs, (solver, controller)


def adaptive_integrator(*, ts, dtype, span, solver, controller, dt0, max_steps: int, save: bool, noisy: bool = False,
                        brownian_tol=None, imex: bool = False, predictable: bool = False) -> jax.tree_util.Partial:
    """`integrate_adaptive` with its options bound: the diffrax `solver` and `controller` as given; the noise of a
    noisy run drawn per step with `predictable` steps, else from a Brownian tree resolved to `brownian_tol`
    (default (t1 − t0)·2⁻¹⁸)."""
    length = float(span[1] - span[0])
    tree = noisy and not predictable
    return jax.tree_util.Partial(
        integrate_adaptive, ts=jnp.asarray(ts, dtype), solver=solver, controller=controller,
        dt0=None if dt0 is None else jnp.asarray(dt0, dtype), max_steps=max_steps,
        brownian_tol=jnp.asarray(length * 2.0**-18 if brownian_tol is None else brownian_tol, dtype) if tree else None,
        noisy=noisy, save=save, imex=imex, predictable=predictable,
    )


def _solve_point(point, problem, key, meter, restart=None):
    return point(problem, key, meter, restart)


run_point = eqx.filter_jit(_solve_point)


def run(point, base, ensemble, algorithm, key, meter, attrs, numerics_, *, ts, directory=None, checkpoint_every=10,
        batch_size=64, batch_stepping="per_point", client=None, devices=None):
    """Run `point` on the problem `base`, or on every point of `ensemble`; returns (observables, statistics).

    A single problem runs in one compiled program, or, with a `directory`, in segments of `checkpoint_every` save
    times, each stored as it finishes (a rerun continues from the last). A study runs in batches (`run_ensemble`),
    stored in `directory` when given. A store is tied to everything that identifies the run (`fingerprint`)."""
    identity = (flatten_attrs(base.flow, "flow"), flatten_attrs(base.init, "init"), flatten_attrs(algorithm, "algorithm"),
                attrs, base.data, base.init)
    settings = numerics(*numerics_)
    if ensemble is None and directory is None:
        return jax.device_get(run_point(point, base, key, meter))[:2]
    if ensemble is None:
        check_counts(checkpoint_every=checkpoint_every)
        store = ChunkStore(directory, fingerprint(*identity, ts, key, checkpoint_every, settings))
        attrs["checkpoint_every"] = checkpoint_every
        out = run_checkpointed(point, base, key, meter, jnp.asarray(ts, point.dtype), checkpoint_every, store)
        attrs["resumed_wall_time_s"] = store.earlier_wall_time  # added to this call's by `make_dataset`
        return out
    if client is not None and directory is None:
        raise ValueError("`client` needs `directory`: a folder every worker can write its batches to.")
    attrs.update(batch_size=batch_size, batch_stepping=batch_stepping)
    store = None
    if directory is not None:
        study = (*identity, ensemble.sweep, ensemble.product, ts, key, batch_size, settings)
        store = ChunkStore(directory, fingerprint(*study))
    out = run_ensemble(point, ensemble, key, batch_size, meter, store, devices or jax.devices()[:1], client,
                       batch_stepping)
    if store is not None:
        attrs["resumed_wall_time_s"] = store.earlier_wall_time
    return out


def solve_per_kind(algorithm, ensemble, kinds, options: SolveOptions) -> mfpde.Solution:
    """A study whose points get different default methods alone: `kinds[i]` labels point i (in the study's C order)
    by the method it would get alone (e.g. "deterministic" and "noisy"). Each kind is solved as its own zipped study
    (in a sub-folder of a `directory` named by its label) and the parts are put back in the study's order and shape
    (`merge_points`): each point equals its single solve."""
    kinds = np.asarray(kinds)
    points = ensemble.points()
    parts = []
    for label in dict.fromkeys(kinds.tolist()):
        index = np.flatnonzero(kinds == label)
        sweep = {name: np.asarray([points[i][name] for i in index]) for name in ensemble.sweep}
        directory = None if options.directory is None else Path(options.directory) / label
        sub = mfpde.EnsembleProblem(ensemble.problem, sweep, product=False)
        parts.append((label, index, algorithm.solve(sub, **vars(dataclasses.replace(options, directory=directory))).dataset))
    return mfpde.Solution(merge_points(ensemble, parts))


def run_checkpointed(point, problem, key, meter, ts, every, store):
    """Integrate segment by segment (`every` save times each), storing each segment's observables, statistics and
    final state as it finishes, and continuing from the last stored segment. Stops at the first failed segment."""
    outs, state = [], None
    for start in range(0, len(ts), every):
        stop = min(start + every, len(ts))
        restart = (ts[start:stop], state)
        if store.path(start, stop).exists():
            shapes = eqx.filter_eval_shape(run_point, point, problem, key, meter, restart)
            out = store.load(start, stop, jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes))
        else:
            out = jax.device_get(run_point(point, problem, key, meter, restart))
            store.save(start, stop, out)
        outs.append(out[:2])
        if out[1]["result"] != 0:
            break
        taken = jnp.asarray(sum(int(o[1]["num_steps"]) for o in outs), jnp.int32)  # traced: one program for all segments
        state = (jax.tree.map(jnp.asarray, out[2]), ts[stop - 1], taken)
    observed = jax.tree.map(lambda *a: np.concatenate(a), *[o[0] for o in outs])
    missing = len(ts) - len(jax.tree.leaves(observed)[0])
    if missing:  # after a failed segment: the remaining times were not reached
        observed = jax.tree.map(lambda a: np.concatenate([a, np.full((missing, *a.shape[1:]), np.inf, a.dtype)]), observed)
    stats = {k: sum(int(o[1][k]) for o in outs) for k in outs[0][1] if k != "result"}
    stats["result"] = int(outs[-1][1]["result"])
    return observed, stats


def restart_options(integrate, y0, t0, restart):
    """The initial state, start time and integrator options of a run continued from `restart = (ts, state)`, with
    `state = (y, t, steps taken)` or None (the run's start): the scan draws the noise of the steps after those taken
    (the adaptive method's Brownian tree spans the whole run; with predictable steps it continues from the stored
    controller state, taking the steps of the whole run), so segments do not change the noise."""
    if restart is None:
        return y0, t0, {}
    ts, state = restart
    options = {"ts": ts}
    if state is not None:
        y0, t0, steps = state
        if integrate.func is integrate_scan:
            options["first_step"] = steps
        elif integrate.keywords.get("predictable"):
            y0, *resume = y0
            options["resume"] = tuple(resume)
    return y0, t0, options
