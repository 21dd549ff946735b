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


def _direction(key, y0):
    """A random direction orthogonal to y0: along y0 itself a ReLU velocity is positively homogeneous and shows no
    kink. Of two draws, the one that keeps more after the projection (particles drawn with the key of one draw
    would be exactly that draw)."""
    square = jnp.vdot(y0, y0)

    def orthogonal(k):
        z = jax.random.normal(k, y0.shape, y0.dtype)
        return z - jnp.where(square > 0, jnp.vdot(z, y0) / jnp.where(square > 0, square, 1.0), 0.0) * y0

    first, second = orthogonal(key), orthogonal(jax.random.fold_in(key, 1))
    return jnp.where(jnp.linalg.norm(first) >= jnp.linalg.norm(second), first, second)


def spectral_radius(system, y0, t0, v0, iterations: int = 8):
    """Power iteration for the largest |eigenvalue| of ∂v/∂y at y0 (v0 = v(y0)), with directional finite differences."""
    eps = jnp.sqrt(jnp.finfo(y0.dtype).eps) * (1 + jnp.linalg.norm(y0))

    def step(_, carry):
        z, _ = carry
        jz = (system.velocity(t0, y0 + eps * z) - v0) / eps
        norm = jnp.linalg.norm(jz)
        return jz / jnp.where(norm > 0, norm, 1.0), norm

    z = _direction(jax.random.key(0), y0)
    z = z / jnp.where(jnp.linalg.norm(z) > 0, jnp.linalg.norm(z), 1.0)
    _, lam = jax.lax.fori_loop(0, iterations, step, (z, jnp.zeros((), y0.dtype)))
    return lam


def kink_ratio(y0, v0, velocities, eps: float = 1e-2):
    """Whether the velocity has kinks (jumps of its derivative, as ReLU networks do) near y0, from second differences
    along a random direction z at two scales, d(h) = ‖v(y0 + hz) − 2v(y0) + v(y0 − hz)‖, h = ε(1 + rms y0), ε = 1e-2
    (large enough that a small network has pre-activations crossing their kinks between the probe points):
    d(h)/d(h/4) is 16 for a smooth velocity; kinks crossed between the probe points break that scaling (many of
    them bring it down to about 2–4, a few seen at h but not at h/4 push it far above 16).

    `velocities` are v at `kink_points(y0, eps)` (v0 = v(y0)). Returns (d(h)/d(h/4), whether both differences lie
    above rounding)."""
    coarse = jnp.linalg.norm(velocities[0] - 2 * v0 + velocities[1])
    fine = jnp.linalg.norm(velocities[2] - 2 * v0 + velocities[3])
    rounding = 64 * jnp.finfo(y0.dtype).eps * jnp.linalg.norm(v0)
    return coarse / jnp.where(fine > 0, fine, jnp.inf), (coarse > rounding) & (fine > rounding)


def kink_points(y0, eps: float = 1e-2):
    """The four probe points y0 ± hz, y0 ± hz/4 of `kink_ratio`, stacked."""
    z = _direction(jax.random.key(1), y0)
    h = eps * (1 + jnp.sqrt(jnp.mean(y0**2)))
    return y0 + jnp.asarray([1, -1, 0.25, -0.25], y0.dtype)[:, None] * h * z


@eqx.filter_jit
def probe_velocity(system, y0, t0):
    """The probes of the default method choice in one program: (`spectral_radius`, *`kink_ratio`). v(y0) and the
    four kink points are evaluated as one batch, so that the velocity is compiled twice (batch and power-iteration
    body) rather than six times."""
    batch = jnp.concatenate([y0[None], kink_points(y0)])
    v = jax.vmap(lambda y: system.velocity(t0, y))(batch)
    return spectral_radius(system, y0, t0, v[0]), *kink_ratio(y0, v[0], v[1:])


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


def brownian_tree(span, tol, key, like) -> diffrax.VirtualBrownianTree:
    """The Brownian path of one run, shaped like the state `like`, with the space-time Lévy area that ShARK uses."""
    shape = jax.ShapeDtypeStruct(like.shape, like.dtype)
    return diffrax.VirtualBrownianTree(*span, tol=tol, shape=shape, key=key, levy_area=diffrax.SpaceTimeLevyArea)


def integrate_adaptive(system, y0, t0, span, key, meter, *, ts, solver, controller, dt0, max_steps, brownian_tol, noisy,
                        save, event=NONFINITE_EVENT):
    """Integrate from (t0, y0) to the last save time; the Brownian tree covers the whole `span` of the problem, so
    a run continued from a checkpoint sees the same Brownian path. `system.brownian(span, tol, key, y0)` gives the
    path; `event` stops the solve (default: at the first non-finite state)."""
    drift = diffrax.ODETerm(system.velocity)
    if noisy:
        brownian = system.brownian(span, brownian_tol, key, y0)
        scale = system.noise_scale(y0)
        terms = diffrax.MultiTerm(drift, diffrax.ControlTerm(lambda t, y, args: lx.DiagonalLinearOperator(scale), brownian))
    else:
        terms = drift
    sol = diffrax.diffeqsolve(
        terms, solver, t0, ts[-1], dt0, y0,
        saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: system.observe(t, y, noisy, save)),
                                    diffrax.SubSaveAt(t1=True)]),
        stepsize_controller=controller, event=event, max_steps=max_steps, throw=False, progress_meter=meter,
    )
    observed, final = sol.ys
    return observed, solve_stats(sol), final[-1]


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
