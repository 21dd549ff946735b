from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import mfpde
from mfpde._checks import as_float_array
from mfpde._netcdf import flatten_attrs
from mfpde._solution import make_dataset, warn_or_raise
from mfpde._store import ChunkStore, fingerprint, numerics
from mfpde._timing import Timer

from ._batches import error_norm, run_ensemble, sweep_variables
from ._integrate import as_key, as_progress_meter, implicit_solver, integrate_adaptive, integrate_scan, spectral_radius
from ._saveat import save_times


class Units(mfpde.AbstractAlgorithm):
    """The Lagrangian discretisation of a layered flow (e.g. `flows.Multilayer`): N_ℓ units in hidden layer ℓ,
    the state being the weight matrices between the units of consecutive layers. At finite widths this *is* the
    width-N network trained by gradient flow with the mean-field learning rates; the mean-field limit is
    approached as the widths grow (rate O(N^{−1/2}) in observables).

    **Arguments:**

    - `widths`: (N_1, …, N_{L−1}), one width per hidden layer.
    - `method`: "adaptive" (diffrax; `Tsit5`, or `Kvaerno5` with matrix-free Newton–GMRES when the velocity's
      Jacobian makes an explicit solver take more than `stiff_steps` steps for stability alone) or "scan"
      (fixed-step Euler, i.e. plain gradient descent, with step `dt`).
    - `dt`: the step of the "scan" method.
    - `save_state`: also save the weight matrices at the save times.
    """

    widths: tuple[int, ...] = eqx.field(static=True, converter=lambda w: tuple(int(x) for x in np.atleast_1d(w)))
    method: Literal["adaptive", "scan"] = eqx.field(static=True, default="adaptive")
    dt: Float[Array, ""] | None = eqx.field(default=None, converter=lambda v: None if v is None else as_float_array(v, "dt", "Units"))
    save_state: bool = eqx.field(static=True, default=False)
    stiff_steps: int = eqx.field(static=True, default=10_000)

    def __check_init__(self):
        if not self.widths or any(w < 1 for w in self.widths):
            raise ValueError(f"`widths` of Units must be positive integers, got {self.widths}.")
        if self.method not in ("adaptive", "scan"):
            raise ValueError(f"`method` of Units must be 'adaptive' or 'scan', got {self.method!r}.")
        if self.method == "scan" and (self.dt is None or not bool(self.dt > 0)):
            raise ValueError("`dt` of Units must be given and positive with method='scan'.")

    def solve(self, problem, *, saveat=None, key=0, solver=None, stepsize_controller=None, rtol=None, atol=None,
              dt0=None, max_steps: int = 100_000, progress_meter=False, batch_size: int = 64,
              batch_stepping: Literal["per_point", "shared"] = "per_point", directory=None, client=None,
              throw: bool = False) -> mfpde.Solution:
        """Integrate `problem`: a `FlowProblem` with a layered flow and a layered initial measure such as
        `measures.IIDLayers`, or an `EnsembleProblem` of one (e.g. a sweep of `rates`, the learning-rate ratios,
        and seeds), whose points run batched through one compiled program. Options as for `Particles.solve`."""
        ensemble = problem if isinstance(problem, mfpde.EnsembleProblem) else None
        base = ensemble.problem if ensemble is not None else problem
        if not isinstance(base, mfpde.FlowProblem) or not isinstance(base.flow, mfpde.flows.AbstractLayeredFlow):
            raise TypeError("`problem` of Units must be a FlowProblem with a layered flow, e.g. flows.Multilayer.")
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
        norm = error_norm(batch_stepping, ensemble, batch_size, self.method)
        if ensemble is not None:
            for name in ensemble.sweep:
                if name.startswith("algorithm.") and not (name == "algorithm.dt" and self.method == "scan"):
                    raise ValueError(f"sweep `{name}`: Units can sweep `algorithm.dt` (method='scan') only.")
        flow, data = base.flow, base.data
        shapes = flow.shapes(self.widths, data)
        ts = save_times(saveat, base.tspan)
        key, seed = as_key(key)
        # Drawn here, outside any trace, so that the measure's checks can warn (e.g. an ill-conditioned Gram matrix);
        # a single solve and the stiffness probe start from it, an ensemble's points draw their own.
        y0 = _initial_vector(flow, base.init, jax.random.split(key)[0], shapes, data)
        dtype = y0.dtype
        default_rtol = 1e-6 if dtype == jnp.float64 else 1e-4
        rtol = jnp.asarray(default_rtol if rtol is None else rtol, dtype)
        atol = jnp.asarray(rtol * 1e-2 if atol is None else atol, dtype)
        meter = as_progress_meter(progress_meter)
        span = tuple(jnp.asarray(t, dtype) for t in base.tspan)
        attrs = {"seed": seed, "method": self.method}
        with Timer() as timer:
            if self.method == "scan":
                integrate = jax.tree_util.Partial(integrate_scan, ts=jnp.asarray(ts, dtype), dt=self.dt.astype(dtype),
                                                  noisy=False, save=self.save_state)
                attrs.update(solver="Euler", stepsize_controller="constant", dt=self.dt)
            else:
                stiff = None
                if solver is None:
                    system = _LayeredSystem(flow, data, tuple(shapes.items()))
                    lam = float(spectral_radius(system, y0, span[0]))
                    stiff = lam * float(span[1] - span[0]) / 3.5 > self.stiff_steps
                    attrs["jacobian_spectral_radius"] = lam
                    solver = implicit_solver() if stiff else diffrax.Tsit5()
                if stepsize_controller is None:
                    stepsize_controller = diffrax.PIDController(rtol=rtol, atol=atol, norm=norm)
                integrate = jax.tree_util.Partial(
                    integrate_adaptive, ts=jnp.asarray(ts, dtype), solver=solver, controller=stepsize_controller,
                    dt0=None if dt0 is None else jnp.asarray(dt0, dtype), max_steps=max_steps, brownian_tol=None,
                    noisy=False, save=self.save_state,
                )
                attrs.update(solver=type(solver).__name__, stepsize_controller=repr(stepsize_controller), rtol=rtol,
                             atol=atol, max_steps=max_steps, stiff_detected=stiff)
            point = _UnitsPoint(integrate, tuple(shapes.items()), dtype)
            settings = numerics(solver, stepsize_controller)
            if ensemble is None:
                observed, stats, _ = jax.device_get(_run(point, base, key, meter, y0))
            else:
                if client is not None and directory is None:
                    raise ValueError("`client` needs `directory`: a folder every worker can write its batches to.")
                store = None
                attrs.update(batch_size=batch_size, batch_stepping=batch_stepping)
                if directory is not None:
                    study = (flatten_attrs(flow, "flow"), flatten_attrs(base.init, "init"), flatten_attrs(self, "algorithm"),
                             attrs, base.data, ensemble.sweep, ensemble.product, ts, key, batch_size, settings)
                    store = ChunkStore(directory, fingerprint(*study))
                observed, stats = run_ensemble(point, ensemble, key, batch_size, meter, store, jax.devices(), client,
                                               batch_stepping)
        dataset = _dataset(base, self, shapes, ts, observed, stats, timer, attrs, ensemble)
        return warn_or_raise(mfpde.Solution(dataset, problem), throw)


class _UnitsPoint(eqx.Module):
    """Solves one layered problem from its key: samples the weights, then integrates. Pure, so it vmaps."""

    integrate: jax.tree_util.Partial
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = eqx.field(static=True)
    dtype: np.dtype = eqx.field(static=True)

    def system(self, problem) -> "_LayeredSystem":
        return _LayeredSystem(problem.flow, problem.data, self.shapes)

    def start(self, problem, key):
        """The weights at t = 0, drawn with the first half of `key`, and the second half (which would drive noise)."""
        init_key, noise_key = jax.random.split(key)
        y0 = _initial_vector(problem.flow, problem.init, init_key, dict(self.shapes), problem.data)
        return y0.astype(self.dtype), noise_key

    def __call__(self, problem, key, meter, y0=None):
        """Solve from `y0`, or from weights drawn with `key`'s first half (the second drives the noise)."""
        drawn, noise_key = self.start(problem, key)
        y0 = drawn if y0 is None else y0.astype(self.dtype)
        span = tuple(jnp.asarray(t, self.dtype) for t in problem.tspan)
        return self.integrate(self.system(problem), y0, span[0], span, noise_key, meter)


def _initial_vector(flow, init, key, shapes: dict, data):
    """The state at t = 0 drawn from `init`, raveled in the order of `shapes`."""
    state = flow.initial_state(init, key, shapes, data)
    return jnp.concatenate([state[name].reshape(-1) for name in shapes])


class _LayeredSystem(eqx.Module):
    """A layered flow on a flat state vector: the weight matrices, in layer order, raveled."""

    flow: mfpde.flows.AbstractLayeredFlow
    data: mfpde.Dataset
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = eqx.field(static=True)

    def unflatten(self, y) -> dict:
        out, start = {}, 0
        for name, shape in self.shapes:
            size = int(np.prod(shape))
            out[name] = y[start : start + size].reshape(shape)
            start += size
        return out

    def velocity(self, t, y, args=None):
        v = self.flow.velocity(t, self.unflatten(y), self.data)
        return jnp.concatenate([v[name].reshape(-1) for name, _ in self.shapes])

    def observe(self, t, y, noisy: bool, save: bool):
        state = self.unflatten(y)
        out = dict(self.flow.observables(t, state, self.data))
        if save:
            out.update(state)
        return out


@eqx.filter_jit
def _run(point, problem, key, meter, y0):
    return point(problem, key, meter, y0)


def _dataset(problem, algorithm, shapes, ts, observed, stats, timer, attrs, ensemble):
    flow, data = problem.flow, problem.data
    described = flow.describe(data) | flow.describe_state(algorithm.widths, data)
    variables, coords, stats = sweep_variables(observed, described, ts, stats, ensemble)
    sizes = flow.dimension_sizes(algorithm.widths, data)
    used = {d for dims, _, _ in variables.values() for d in dims}
    coords["time"] = (("time",), ts, {"long_name": "time", "units": "1",
                                      "description": "mean-field time (each weight of layer ℓ moves at rate N_{ℓ−1}N_ℓ)"})
    for dim, size in sizes.items():
        if dim in used:
            start = 1 if "layer" in dim else 0
            coords[dim] = ((dim,), np.arange(start, start + size), {"long_name": dim.replace("_", " ") + " index"})
    title = f"{type(flow).__name__} flow, {type(algorithm).__name__} (widths {list(algorithm.widths)})"
    return make_dataset(variables=variables, coords=coords, problem=problem, algorithm=algorithm, stats=stats,
                        timing=timer, attrs=attrs, title=title, stat_dims=ensemble.dims if ensemble is not None else ())
