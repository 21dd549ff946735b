"""The integration driver shared by the time-stepping algorithms (`Particles`, `Units`, `Grid`).

An algorithm only discretises: it builds a *point*, an Equinox module that turns one problem into a system
(`point.system(problem)`: velocity, noise scale and observables on a flat state) and draws its initial state
(`point.start(problem, key)`), and it lays out the dataset. This module does the rest once: the default method and
tolerances, the integrator (adaptive diffrax or a fixed-step scan), and running a single problem, a checkpointed run
or a study (per-point or shared steps, batches, devices, a store to resume from, Dask).
"""

import abc
from pathlib import Path

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import mfpde
from mfpde.extend import ChunkStore, fingerprint, flatten_attrs, numerics

from ._batches import MaxRMSNorm, SharedSteps, merge_points, run_ensemble
from ._integrate import KINK_DEVIATION, implicit_solver, integrate_adaptive, integrate_scan, probe_velocity
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


def check_counts(**counts) -> None:
    """Refuse a count (`max_steps`, `batch_size`, …) that is not a positive integer, naming it."""
    for name, value in counts.items():
        if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
            raise ValueError(f"`{name}` must be a positive integer, got {value!r}.")


def default_tolerances(noisy: bool, dtype, kinked: bool = False) -> tuple[float, float]:
    """(rtol, atol) of the default controller. Deterministic: 1e-6/1e-8 in float64, 1e-4/1e-6 in float32; with
    kinks, 1e-5/1e-7 in float64 (the velocity's jumps cap the order any method reaches, so a tighter tolerance buys
    little accuracy for many steps; measured in benchmarks/method_choice.py). Noisy (a pathwise error, whose
    observables carry an O(N^{-1/2}) Monte-Carlo error anyway): 1e-3, and 1e-2 in float32."""
    if noisy:
        return (1e-3, 1e-3) if dtype == jnp.float64 else (1e-2, 1e-2)
    if kinked:
        return (1e-5, 1e-7) if dtype == jnp.float64 else (1e-4, 1e-6)
    return (1e-6, 1e-8) if dtype == jnp.float64 else (1e-4, 1e-6)


def integrator(algorithm, *, ts, dtype, noisy: bool, save: bool, span, probe, solver=None, stepsize_controller=None,
               rtol=None, atol=None, dt0=None, max_steps: int, brownian_tol=None, norm):
    """The integrator of one point, `integrate(system, y0, t0, span, key, meter, **restart)`, with the attributes that
    record it, and the (solver, controller) that identify it in a store's fingerprint.

    `algorithm.method` "scan" is fixed-step Euler(–Maruyama) with `algorithm.dt`. "adaptive" uses the diffrax `solver`
    and `stepsize_controller` as given; by default ShARK on a Brownian tree with milder PI coefficients for τ > 0,
    and for τ = 0, from probes of the velocity at `probe()` = (system, y0, t0): Kvaerno5 with matrix-free
    Newton–GMRES when its Jacobian is so large that an explicit method would need more than `algorithm.stiff_steps`
    steps for stability alone (λ·(t1 − t0)/3.5, λ its spectral radius by power iteration, stopped once it is
    decided: `spectral_radius`); Bosh3 (3rd order) at
    `default_tolerances(kinked=True)` when the velocity has kinks (`kink_deviation`, e.g. a ReLU network), whose jumps
    make a 5th-order error estimate reject step after step; else Tsit5."""
    ts = jnp.asarray(ts, dtype)
    if algorithm.method == "scan":
        integrate = jax.tree_util.Partial(integrate_scan, ts=ts, dt=algorithm.dt.astype(dtype), noisy=noisy, save=save)
        attrs = {"solver": "EulerMaruyama" if noisy else "Euler", "stepsize_controller": "constant", "dt": algorithm.dt}
        return integrate, attrs, (None, None)
    attrs = {"max_steps": max_steps, "stiff_detected": None, "kinks_detected": None}
    kinked = False
    if solver is None and noisy:
        solver = diffrax.ShARK()
    elif solver is None:
        system, y0, t0 = probe()
        # An explicit solver needs λ·(t1 − t0)/3.5 steps for stability alone.
        threshold = 3.5 * algorithm.stiff_steps / float(span[1] - span[0])
        lam, bound, iterations, deviation, resolved = (
            x.item() for x in probe_velocity(system, y0, t0, jnp.asarray(threshold, dtype)))
        stiff = lam > threshold
        kinked = bool(resolved) and deviation > KINK_DEVIATION and not stiff
        attrs.update(jacobian_spectral_radius=lam, jacobian_spectral_radius_bound=bound,
                     stiffness_probe_iterations=iterations, stiff_detected=stiff, kink_deviation=deviation,
                     kinks_detected=kinked)
        solver = implicit_solver() if stiff else diffrax.Bosh3() if kinked else diffrax.Tsit5()
    default_rtol, default_atol = default_tolerances(noisy, dtype, kinked)
    rtol, atol = tolerance(rtol, default_rtol, "rtol", dtype), tolerance(atol, default_atol, "atol", dtype)
    attrs.update(rtol=rtol, atol=atol)
    if stepsize_controller is None and noisy:
        # Milder PI coefficients, as diffrax recommends for noisy error estimates; steps land on the save times,
        # because interpolating an SDE solution between steps is only O(√h) accurate.
        stepsize_controller = diffrax.ClipStepSizeController(
            diffrax.PIDController(rtol=rtol, atol=atol, pcoeff=0.1, icoeff=0.3, norm=norm), step_ts=ts)
    elif stepsize_controller is None:
        stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=norm)
    if isinstance(norm, MaxRMSNorm) and isinstance(stepsize_controller, diffrax.AbstractAdaptiveStepSizeController):
        stepsize_controller = SharedSteps(stepsize_controller, norm.points)
    integrate = adaptive_integrator(ts=ts, dtype=dtype, span=span, solver=solver, controller=stepsize_controller,
                                    dt0=dt0, max_steps=max_steps, save=save, noisy=noisy, brownian_tol=brownian_tol)
    attrs.update(solver=type(solver).__name__, stepsize_controller=repr(stepsize_controller))
    return integrate, attrs, (solver, stepsize_controller)


def adaptive_integrator(*, ts, dtype, span, solver, controller, dt0, max_steps: int, save: bool, noisy: bool = False,
                        brownian_tol=None, imex: bool = False) -> jax.tree_util.Partial:
    """`integrate_adaptive` with its options bound: the diffrax `solver` and `controller` as given, the Brownian tree
    of a noisy run resolved to `brownian_tol` (default (t1 − t0)·2⁻¹⁸)."""
    length = float(span[1] - span[0])
    return jax.tree_util.Partial(
        integrate_adaptive, ts=jnp.asarray(ts, dtype), solver=solver, controller=controller,
        dt0=None if dt0 is None else jnp.asarray(dt0, dtype), max_steps=max_steps,
        brownian_tol=jnp.asarray(length * 2.0**-18 if brownian_tol is None else brownian_tol, dtype) if noisy else None,
        noisy=noisy, save=save, imex=imex,
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


def solve_per_kind(algorithm, ensemble, kinds, options) -> mfpde.Solution:
    """A study whose points get different default methods alone: `kinds[i]` labels point i (in the study's C order)
    by the method it would get alone (e.g. "deterministic" and "noisy"). Each kind is solved as its own zipped study
    with `algorithm.solve(..., **options)` (in a sub-folder of a `directory` named by its label) and the parts are put
    back in the study's order and shape (`merge_points`): each point equals its single solve."""
    kinds = np.asarray(kinds)
    points = ensemble.points()
    parts = []
    for label in dict.fromkeys(kinds.tolist()):
        index = np.flatnonzero(kinds == label)
        sweep = {name: np.asarray([points[i][name] for i in index]) for name in ensemble.sweep}
        sub_options = dict(options)
        if options.get("directory") is not None:
            sub_options["directory"] = Path(options["directory"]) / label
        sub = mfpde.EnsembleProblem(ensemble.problem, sweep, product=False)
        parts.append((label, index, algorithm.solve(sub, **sub_options).dataset))
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
        state = (jnp.asarray(out[2]), ts[stop - 1], taken)
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
    (the Brownian tree of the adaptive method spans the whole run), so segments do not change the noise."""
    if restart is None:
        return y0, t0, {}
    ts, state = restart
    options = {"ts": ts}
    if state is not None:
        y0, t0, steps = state
        if integrate.func is integrate_scan:
            options["first_step"] = steps
    return y0, t0, options
