"""Time integration shared by the Lagrangian algorithms: a system (velocity, noise scale and observables on a flat
state vector) integrated by diffrax, or by a fixed-step Euler–Maruyama scan."""

import os
import sys

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

from mfpde.extend import result_code

NONFINITE = result_code(diffrax.RESULTS.nonfinite)
MAX_STEPS_REACHED = result_code(diffrax.RESULTS.max_steps_reached)
_EVENT = result_code(diffrax.RESULTS.event_occurred)


class AbstractWrappedController(diffrax.AbstractAdaptiveStepSizeController):
    """An adaptive step-size controller that adjusts the decisions of `controller`, whose tolerances and norm are
    its own (so an implicit solver's root finder reads them as usual)."""

    controller: eqx.AbstractVar[diffrax.AbstractAdaptiveStepSizeController]

    @property
    def rtol(self):
        return self.controller.rtol

    @property
    def atol(self):
        return self.controller.atol

    @property
    def norm(self):
        return self.controller.norm


def as_key(key):
    if isinstance(key, (int, np.integer)):
        return jax.random.key(int(key)), int(key)
    if isinstance(key, jax.Array) and jnp.issubdtype(key.dtype, jax.dtypes.prng_key):
        return key, None
    if isinstance(key, jax.Array) and key.dtype == jnp.uint32:
        return jax.random.wrap_key_data(key), None
    raise TypeError(f"`key` must be an integer seed or a JAX PRNG key, got {type(key).__name__}.")


def probe_direction(y0):
    """A random direction orthogonal to y0, of norm about √(size): along y0 itself a ReLU velocity is positively
    homogeneous and shows no kink. One Gaussian draw z (the draws of a large state are a good part of the probes'
    cost) and its cyclic shift, of which the one that keeps more after the projection: particles drawn with the
    probe's own key would be exactly z."""
    square = jnp.vdot(y0, y0)

    def orthogonal(z):
        return z - jnp.where(square > 0, jnp.vdot(z, y0) / jnp.where(square > 0, square, 1.0), 0.0) * y0

    z = jax.random.normal(jax.random.key(0), y0.shape, y0.dtype)
    first, second = orthogonal(z), orthogonal(jnp.roll(z, 1))
    return jnp.where(jnp.linalg.norm(first) >= jnp.linalg.norm(second), first, second)


def spectral_radius(system, y0, t0, v0, threshold, z=None, iterations: int = 8, miss: float = 1e-3):
    """Power iteration for the largest |eigenvalue| λ of J = ∂v/∂y at y0 (v0 = v(y0)), with directional finite
    differences, stopped as soon as it tells whether λ exceeds `threshold`. From z_0 along `z` (default
    `probe_direction`), z_k = J z_{k−1}/n_k:

    - each n_k = ‖J z_{k−1}‖ is a lower estimate of λ (they rise towards it): n_k > threshold decides "above";
    - ‖J^k z_0‖ = n_1⋯n_k ≥ |c| λ^k, with c the component of z_0 along the top eigenvector (J symmetric, as a gradient
      flow's; a heuristic otherwise). A random z_0 in M dimensions has |c| < miss/√M with probability about
      miss·√(2/π) (0.08 % by default), so U_k = (n_1⋯n_k · √M/miss)^{1/k} bounds λ but for that chance, and
      U_k < threshold decides "below".

    A clearly non-stiff flow is decided after one or two evaluations, not `iterations`. Returns (n_k, U_k, k)."""
    eps = jnp.sqrt(jnp.finfo(y0.dtype).eps) * (1 + jnp.linalg.norm(y0))
    log_start = jnp.log(jnp.sqrt(jnp.asarray(y0.size, y0.dtype)) / miss)

    def undecided(carry):
        k, _, lam, _, upper = carry
        return (k < iterations) & (lam <= threshold) & (upper >= threshold)

    def step(carry):
        k, z, _, log_norms, _ = carry
        jz = (system.velocity(t0, y0 + eps * z) - v0) / eps
        norm = jnp.linalg.norm(jz)
        log_norms = log_norms + jnp.log(jnp.where(norm > 0, norm, jnp.finfo(y0.dtype).tiny))
        upper = jnp.exp((log_norms + log_start) / (k + 1).astype(y0.dtype))
        return k + 1, jz / jnp.where(norm > 0, norm, 1.0), norm, log_norms, upper

    z = probe_direction(y0) if z is None else z
    z = z / jnp.where(jnp.linalg.norm(z) > 0, jnp.linalg.norm(z), 1.0)
    zero = jnp.zeros((), y0.dtype)
    k, _, lam, _, upper = jax.lax.while_loop(undecided, step, (jnp.zeros((), jnp.int32), z, zero, zero, zero + jnp.inf))
    return lam, upper, k


KINK_DEVIATION = 0.25
"""`kink_deviation` above which a velocity is taken to have kinks: smooth flows measured below 0.04, kinked ones
above 1 (benchmarks/method_choice.py)."""


def kink_deviation(y0, v0, velocities):
    """Whether the velocity has kinks (jumps of its derivative, as ReLU networks do) near y0, from its second
    differences along a direction z at two scales, the vectors d(h) = v(y0 + hz) − 2v(y0) + v(y0 − hz) at
    h = ε(1 + rms y0), ε = 1e-2 (large enough that a small network has pre-activations crossing their kinks between
    the probe points), and h/4. For a smooth velocity d(h) = 16 d(h/4) + O(h⁴), so the relative deviation

        δ = ‖d(h) − 16 d(h/4)‖ / ‖d(h)‖

    is O(h²) (at most 0.04 measured on tanh, softplus and smooth multilayer nets); kinks crossed between the probe
    points break the scaling entry by entry (δ ≥ 1 on every ReLU net measured, also in directions where the norms
    ‖d(h)‖/‖d(h/4)‖ happen to come out near 16). Kinked: δ > `KINK_DEVIATION`.

    `velocities` are v at `kink_points(y0, z)` (v0 = v(y0)). Returns (δ, whether both differences lie above
    rounding)."""
    coarse = velocities[0] - 2 * v0 + velocities[1]
    fine = velocities[2] - 2 * v0 + velocities[3]
    size = jnp.linalg.norm(coarse)
    rounding = 64 * jnp.finfo(y0.dtype).eps * jnp.linalg.norm(v0)
    deviation = jnp.linalg.norm(coarse - 16 * fine) / jnp.where(size > 0, size, 1.0)
    return deviation, (size > rounding) & (jnp.linalg.norm(fine) > rounding)


def kink_points(y0, z, eps: float = 1e-2):
    """The four probe points y0 ± hz, y0 ± hz/4 of `kink_deviation` along `z` (`probe_direction`), stacked."""
    h = eps * (1 + jnp.sqrt(jnp.mean(y0**2)))
    return y0 + jnp.asarray([1, -1, 0.25, -0.25], y0.dtype)[:, None] * h * z


@eqx.filter_jit
def probe_velocity(system, y0, t0, threshold):
    """The probes of the default method choice in one program: (*`spectral_radius`, *`kink_deviation`), the power
    iteration deciding whether the spectral radius exceeds `threshold`, both along one `probe_direction`. v(y0) and
    the four kink points are evaluated as one batch, so that the velocity is compiled twice (batch and
    power-iteration body) rather than six times."""
    z = probe_direction(y0)
    batch = jnp.concatenate([y0[None], kink_points(y0, z)])
    v = jax.vmap(lambda y: system.velocity(t0, y))(batch)
    return *spectral_radius(system, y0, t0, v[0], threshold, z), *kink_deviation(y0, v[0], v[1:])


def implicit_solver(gmres_atol: float = 1e-10):
    """Kvaerno5 with a matrix-free Newton–GMRES stage solve: a dense Jacobian of a large particle state or grid does
    not fit in memory."""
    newton = diffrax.with_stepsize_controller_tols(optx.Newton)(
        linear_solver=lx.GMRES(rtol=1e-6, atol=gmres_atol, restart=40))
    return diffrax.Kvaerno5(root_finder=newton)


def watched() -> bool:
    """Whether a person is watching: running in a Jupyter kernel, and not under pytest (whose `PYTEST_CURRENT_TEST`
    the kernels of executed notebooks inherit)."""
    ipython = sys.modules.get("IPython")
    shell = ipython.get_ipython() if ipython is not None else None
    return type(shell).__name__ == "ZMQInteractiveShell" and "PYTEST_CURRENT_TEST" not in os.environ


def as_progress_meter(value) -> diffrax.AbstractProgressMeter:
    """A diffrax progress meter from `progress_meter=`: True for tqdm, False for none, None (the default) for tqdm
    when a person is watching (`watched`: a notebook), or a meter as given."""
    if value is None:
        value = watched()
    if value is True:
        return diffrax.TqdmProgressMeter()
    return diffrax.NoProgressMeter() if value is False else value


def _nonfinite(t, y, args, **kwargs):
    return jnp.any(~jnp.isfinite(y))


# Stops a solve at the first non-finite state, so that a blow-up keeps what was computed before it.
NONFINITE_EVENT = diffrax.Event(_nonfinite)


def solve_stats(sol: diffrax.Solution) -> dict:
    """Step counts and result code of a diffrax solve; a stop by `NONFINITE_EVENT` is reported as `nonfinite`."""
    return {
        "num_steps": sol.stats["num_steps"],
        "num_accepted_steps": sol.stats["num_accepted_steps"],
        "num_rejected_steps": sol.stats["num_rejected_steps"],
        "result": jnp.where(result_code(sol.result) == _EVENT, NONFINITE, result_code(sol.result)),
    }


class PredictableSteps(AbstractWrappedController):
    """`controller`'s step sizes without its rejections: a finite step is kept whatever its error estimate, and the
    next one has the size `controller` proposed (from the end of the kept step). A step's size then depends only on
    the steps before it (it is predictable), so its Brownian increment can be drawn afresh for each step
    (`IndependentIncrements`): no Brownian tree, which a retried step needs to see the same path and which costs a
    descent of every level per step, and no bias from redrawing the noise until a step passes (adaptive
    Euler–Maruyama with predictable steps: Lamba, Mattingly & Stuart, IMA J. Numer. Anal. 27, 2007). A step whose
    candidate or error is not finite is still rejected and retried smaller. The state is (`controller`'s, the size it
    proposed last), from which a run continued from a checkpoint takes the steps of the uninterrupted run."""

    controller: diffrax.AbstractAdaptiveStepSizeController

    def wrap(self, direction):
        return PredictableSteps(self.controller.wrap(direction))

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        first, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return first, (state, first - t0)

    def proposed_step(self, state):
        return state[1]

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        keep, next_t0, next_t1, jump, state, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state[0])
        finite = jnp.all(jnp.isfinite(y1_candidate)) & (True if y_error is None else jnp.all(jnp.isfinite(y_error)))
        size = next_t1 - next_t0
        overruled = finite & ~keep
        next_t0 = jnp.where(overruled, t1, next_t0)
        next_t1 = jnp.where(overruled, t1 + size, next_t1)
        return keep | finite, next_t0, next_t1, jump, (state, size), result


def proposed_step(controller, state):
    """The step size that the `PredictableSteps` inside `controller` (alone, or wrapped by diffrax's
    `ClipStepSizeController` or a controller with a `proposed_step(state)` method) proposed last, from `state`."""
    if isinstance(controller, diffrax.ClipStepSizeController):
        return proposed_step(controller.controller, state.inner_state)
    return controller.proposed_step(state)


class IndependentIncrements(diffrax.AbstractBrownianPath):
    """Brownian increments drawn afresh for each step: over the step [t0, t1] numbered `step`,
    W(t1) − W(t0) ~ N(0, (t1 − t0) I) and the space-time Lévy area H ~ N(0, (t1 − t0)/12 I), independent, from
    `fold_in(key, step)`. Steps that are never retried (fixed, or `PredictableSteps`) then see a Brownian motion, at
    the cost of two normal vectors a step, against a descent of every level of a `VirtualBrownianTree`. The step
    number is set by `StepIndexedNoise` before each step: keyed by its end times instead (as diffrax's
    `UnsafeBrownianPath`, which diffrax refuses under any adaptive controller), a last-bit difference in a step
    time, e.g. between a batch and a single solve, would change the whole draw."""

    shape: jax.ShapeDtypeStruct = eqx.field(static=True)
    key: jax.Array
    span: tuple
    step: jax.Array | int = 0

    levy_area = diffrax.SpaceTimeLevyArea

    @property
    def t0(self):
        return self.span[0]

    @property
    def t1(self):
        return self.span[1]

    def at_step(self, step):
        return eqx.tree_at(lambda path: path.step, self, step)

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        if t1 is None:
            raise ValueError("IndependentIncrements gives the increment over a step: pass t1.")
        key_w, key_h = jax.random.split(jax.random.fold_in(self.key, self.step))
        dt = jnp.asarray(t1 - t0, self.shape.dtype)
        W = jnp.sqrt(dt) * jax.random.normal(key_w, self.shape.shape, self.shape.dtype)
        H = jnp.sqrt(dt / 12) * jax.random.normal(key_h, self.shape.shape, self.shape.dtype)
        return diffrax.SpaceTimeLevyArea(dt=dt, W=W, H=H) if use_levy else W


class StepIndexedNoise(diffrax.AbstractWrappedSolver):
    """`solver`, numbering its kept steps for the noise: before step n it sets n on the Brownian paths in its terms
    (`path.at_step`), so that step n draws the n-th increment of `IndependentIncrements`. The count is the solver
    state, which diffrax advances on kept steps only."""

    solver: diffrax.AbstractSolver

    @property
    def term_structure(self):
        return self.solver.term_structure

    @property
    def interpolation_cls(self):
        return self.solver.interpolation_cls

    @property
    def term_compatible_contr_kwargs(self):
        return self.solver.term_compatible_contr_kwargs

    def order(self, terms):
        return self.solver.order(terms)

    def strong_order(self, terms):
        return self.solver.strong_order(terms)

    def error_order(self, terms):
        return self.solver.error_order(terms)

    def init(self, terms, t0, t1, y0, args):
        return jnp.zeros((), jnp.int32), self.solver.init(terms, t0, t1, y0, args)

    def step(self, terms, t0, t1, y0, args, solver_state, made_jump):
        count, inner = solver_state
        numbered = lambda x: hasattr(x, "at_step")  # noqa: E731
        terms = jax.tree.map(lambda x: x.at_step(count) if numbered(x) else x, terms, is_leaf=numbered)
        y1, y_error, dense, inner, result = self.solver.step(terms, t0, t1, y0, args, inner, made_jump)
        return y1, y_error, dense, (count + 1, inner), result

    def func(self, terms, t0, y0, args):
        return self.solver.func(terms, t0, y0, args)


def brownian_path(span, tol, key, like) -> diffrax.AbstractBrownianPath:
    """The Brownian path of one run, shaped like the state `like`, with the space-time Lévy area of ShARK-type solvers:
    a `VirtualBrownianTree` resolved to `tol` (the same path whatever the steps, as a controller that retries steps
    needs), or with `tol` None, `IndependentIncrements` (for predictable steps)."""
    shape = jax.ShapeDtypeStruct(like.shape, like.dtype)
    if tol is None:
        return IndependentIncrements(shape, key, span)
    return diffrax.VirtualBrownianTree(*span, tol=tol, shape=shape, key=key, levy_area=diffrax.SpaceTimeLevyArea)


def integrate_adaptive(system, y0, t0, span, key, meter, *, ts, solver, controller, dt0, max_steps, brownian_tol, noisy,
                        save, imex=False, predictable=False, resume=None, event=NONFINITE_EVENT):
    """Integrate from (t0, y0) to the last save time. `system.brownian(span, brownian_tol, key, y0)` gives the noise's
    path: a Brownian tree over the whole `span` of the problem, so that a run continued from a checkpoint sees the
    same path; or, with `predictable` steps (`integrate_intervals`), independent increments. `event` stops the solve
    (default: at the first non-finite state). With `imex`, the drift is the pair `MultiTerm(system.explicit,
    system.implicit)` of an IMEX solver. The system is diffrax's `args`, so that a controller can read it
    (`TransportCap`)."""
    if imex:
        drift = diffrax.MultiTerm(diffrax.ODETerm(system.explicit), diffrax.ODETerm(system.implicit))
    else:
        drift = diffrax.ODETerm(system.velocity)
    if noisy:
        brownian = system.brownian(span, brownian_tol, key, y0)
        scale = system.noise_scale(y0)
        terms = diffrax.MultiTerm(drift, diffrax.ControlTerm(lambda t, y, args: lx.DiagonalLinearOperator(scale), brownian))
    else:
        terms = drift
    if predictable:
        return integrate_intervals(system, terms, y0, t0, meter, ts=ts, solver=StepIndexedNoise(solver),
                                   controller=controller, dt0=dt0, max_steps=max_steps, noisy=noisy, save=save,
                                   resume=resume, event=event)
    sol = diffrax.diffeqsolve(
        terms, solver, t0, ts[-1], dt0, y0,
        saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: system.observe(t, y, noisy, save)),
                                    diffrax.SubSaveAt(t1=True)]),
        args=system, stepsize_controller=controller, event=event, max_steps=max_steps, throw=False,
        progress_meter=meter,
    )
    observed, final = sol.ys
    return observed, solve_stats(sol), final[-1]


def integrate_intervals(system, terms, y0, t0, meter, *, ts, solver, controller, dt0, max_steps, noisy, save, resume,
                        event):
    """Predictable steps (`controller` holding a `PredictableSteps`, landing on the save times), integrated save
    interval by save interval: one `diffeqsolve` from each save time to the next, carrying the solver's state (the
    step count that numbers the noise, `StepIndexedNoise`) and the controller's (with the step it proposed), so the
    steps and the noise are those of one uninterrupted solve; the observables are computed once per save time.
    (diffrax evaluates a `SubSaveAt(ts, fn)` at every step: with the k-NN entropy of the free energy that cost
    more than the step itself, benchmarks/RESULTS.md "Noisy flows".) Returns the final (y, solver state, controller
    state), from which `resume` continues a run with the steps of the uninterrupted one. `max_steps` bounds the
    steps of each interval and, checked after each, of the whole run (which may so take up to twice it; the saves
    after the budget ran out hold inf, as unreached)."""
    if resume is None:
        solver_state = solver.init(terms, t0, ts[-1], y0, system)
        _, controller_state = controller.init(terms, t0, ts[-1], y0, dt0, system, solver.func,
                                              solver.error_order(terms))
    else:
        solver_state, controller_state = resume
    span = jnp.where(ts[-1] > t0, ts[-1] - t0, 1.0)

    def interval(carry, t_next):
        y, t, solver_state, controller_state, counts, result, meter_state = carry
        # After a failure the interval is empty (0 steps): no lax.cond, which a vmapped batch would turn into a
        # select that runs the failed point's solve anyway. diffrax cuts the proposed step at the interval's end.
        t_end = jnp.where(result == 0, t_next, t)
        sol = diffrax.diffeqsolve(
            terms, solver, t, t_end, proposed_step(controller, controller_state), y,
            saveat=diffrax.SaveAt(t1=True, solver_state=True, controller_state=True), args=system,
            stepsize_controller=controller, event=event, max_steps=max_steps, throw=False, solver_state=solver_state,
            controller_state=controller_state)
        stats = solve_stats(sol)
        counts = counts + jnp.stack([stats[k] for k in ("num_steps", "num_accepted_steps", "num_rejected_steps")]
                                    ).astype(jnp.int32)
        code = stats["result"]
        reached = (result == 0) & (code == 0) & (counts[0] <= max_steps)
        y = sol.ys[-1]
        observed = system.observe(t_next, y, noisy, save)
        observed = jax.tree.map(lambda a: jnp.where(reached, a, jnp.inf), observed)  # as diffrax: inf if not reached
        result = jnp.where(result == 0, code, result)
        result = jnp.where((result == 0) & ~reached, MAX_STEPS_REACHED, result)
        meter_state = meter.step(meter_state, (t_next - t0) / span)
        return (y, jnp.where(reached, t_next, t), sol.solver_state, sol.controller_state, counts, result,
                meter_state), observed

    carry = (y0, t0, solver_state, controller_state, jnp.zeros(3, jnp.int32), jnp.zeros((), jnp.int32), meter.init())
    (y, _, solver_state, controller_state, counts, result, meter_state), observed = jax.lax.scan(interval, carry, ts)
    meter.close(meter_state)
    stats = {"num_steps": counts[0], "num_accepted_steps": counts[1], "num_rejected_steps": counts[2], "result": result}
    return observed, stats, (y, solver_state, controller_state)


def integrate_scan(system, y0, t0, span, key, meter, *, ts, dt, noisy, save, first_step=0):
    """Fixed-step Euler–Maruyama, landing exactly on each save time: each interval [s_k, s_{k+1}] is split into
    ⌈(s_{k+1} − s_k)/dt⌉ equal steps. Step k draws its noise from `fold_in(key, k)`, counting from `first_step` (the
    steps a run continued from a checkpoint has already taken), so a segmented run sees the noise of the whole one.
    Stops advancing (and saves NaN) once the state is non-finite."""
    scale = system.noise_scale(y0) if noisy else None
    t_end = ts[-1]
    span = jnp.where(t_end > t0, t_end - t0, 1.0)

    def interval(carry, t_next):
        y, t, steps, failed, meter_state = carry
        count = jnp.where(failed, 0, jnp.ceil((t_next - t) / dt - 1e-9)).astype(jnp.int32)
        h = (t_next - t) / jnp.maximum(count, 1).astype(t.dtype)

        def step(i, y):
            y_new = y + h * system.velocity(t + i.astype(t.dtype) * h, y)
            if noisy:
                noise = jax.random.normal(jax.random.fold_in(key, steps + i), y.shape, y.dtype)
                y_new = y_new + jnp.sqrt(h) * scale * noise
            return y_new

        y = jax.lax.fori_loop(0, count, step, y)
        failed = failed | jnp.any(~jnp.isfinite(y))
        observed = system.observe(t_next, y, noisy, save)
        observed = jax.tree.map(lambda a: jnp.where(failed, jnp.inf, a), observed)
        meter_state = meter.step(meter_state, (t_next - t0) / span)
        return (y, t_next, steps + count, failed, meter_state), observed

    first = jnp.asarray(first_step, jnp.int32)
    carry = (y0, t0, first, jnp.zeros((), bool), meter.init())
    (y, _, steps, failed, meter_state), ys = jax.lax.scan(interval, carry, ts)
    steps = steps - first
    meter.close(meter_state)
    zero = jnp.zeros((), jnp.int32)
    stats = {"num_steps": steps, "num_accepted_steps": steps, "num_rejected_steps": zero,
             "result": jnp.where(failed, NONFINITE, 0)}
    return ys, stats, y
