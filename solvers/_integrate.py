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


def brownian_tree(span, tol, key, like) -> diffrax.VirtualBrownianTree:
    """The Brownian path of one run, shaped like the state `like`, with the space-time Lévy area that ShARK uses."""
    shape = jax.ShapeDtypeStruct(like.shape, like.dtype)
    return diffrax.VirtualBrownianTree(*span, tol=tol, shape=shape, key=key, levy_area=diffrax.SpaceTimeLevyArea)


def integrate_adaptive(system, y0, t0, span, key, meter, *, ts, solver, controller, dt0, max_steps, brownian_tol, noisy,
                        save, imex=False, event=NONFINITE_EVENT):
    """Integrate from (t0, y0) to the last save time; the Brownian tree covers the whole `span` of the problem, so
    a run continued from a checkpoint sees the same Brownian path. `system.brownian(span, tol, key, y0)` gives the
    path; `event` stops the solve (default: at the first non-finite state). With `imex`, the drift is the pair
    `MultiTerm(system.explicit, system.implicit)` of an IMEX solver. The system is diffrax's `args`, so that a
    controller can read it (`TransportCap`)."""
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
    sol = diffrax.diffeqsolve(
        terms, solver, t0, ts[-1], dt0, y0,
        saveat=diffrax.SaveAt(subs=[diffrax.SubSaveAt(ts=ts, fn=lambda t, y, args: system.observe(t, y, noisy, save)),
                                    diffrax.SubSaveAt(t1=True)]),
        args=system, stepsize_controller=controller, event=event, max_steps=max_steps, throw=False,
        progress_meter=meter,
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
