from typing import Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import mfpde
from mfpde.extend import Timer, as_float_array, make_dataset, save_times, warn_or_raise

from ._batches import error_norm, sweep_variables
from ._driver import MAX_STEPS, AbstractPoint, check_counts, integrator, run
from ._integrate import as_key, as_progress_meter


class Units(mfpde.AbstractAlgorithm):
    """The Lagrangian discretisation of a layered flow (e.g. `flows.Multilayer`): N_ℓ units in hidden layer ℓ,
    the state being the weight matrices between the units of consecutive layers. At finite widths this *is* the
    width-N network trained by gradient flow with the mean-field learning rates; the mean-field limit is
    approached as the widths grow (rate O(N^{−1/2}) in observables).

    **Arguments:**

    - `n`: (N_1, …, N_{L−1}), the number of units of each hidden layer (its width).
    - `method`: "adaptive" (diffrax; `Tsit5`, or `Kvaerno5` with matrix-free Newton–GMRES when the velocity's
      Jacobian makes an explicit solver take more than `stiff_steps` steps for stability alone) or "scan"
      (fixed-step Euler, i.e. plain gradient descent, with step `dt`).
    - `dt`: the step of the "scan" method.
    - `save_state`: also save the weight matrices at the save times.
    """

    n: tuple[int, ...] = eqx.field(static=True, converter=lambda w: tuple(int(x) for x in np.atleast_1d(w)))
    method: Literal["adaptive", "scan"] = eqx.field(static=True, default="adaptive")
    dt: Float[Array, ""] | None = eqx.field(default=None, converter=lambda v: None if v is None else as_float_array(v, "dt", "Units"))
    save_state: bool = eqx.field(static=True, default=False)
    stiff_steps: int = eqx.field(static=True, default=10_000)

    def __check_init__(self):
        if not self.n or any(w < 1 for w in self.n):
            raise ValueError(f"`n` of Units must be positive integers, got {self.n}.")
        if self.method not in ("adaptive", "scan"):
            raise ValueError(f"`method` of Units must be 'adaptive' or 'scan', got {self.method!r}.")
        if self.method == "scan" and (self.dt is None or not bool(self.dt > 0)):
            raise ValueError("`dt` of Units must be given and positive with method='scan'.")

    def solve(self, problem, *, saveat=None, key=0, solver=None, stepsize_controller=None, rtol=None, atol=None,
              dt0=None, max_steps: int = MAX_STEPS, progress_meter=None, batch_size: int = 64,
              batch_stepping: Literal["per_point", "shared"] = "per_point", directory=None, checkpoint_every: int = 10,
              client=None, throw: bool = False) -> mfpde.Solution:
        """Integrate `problem`: a `FlowProblem` with a layered flow and a layered initial measure such as
        `measures.IIDLayers`, or an `EnsembleProblem` of one (e.g. a sweep of `rates`, the learning-rate ratios,
        and seeds), whose points run batched through one compiled program. Options as for `Particles.solve`."""
        ensemble = problem if isinstance(problem, mfpde.EnsembleProblem) else None
        base = ensemble.problem if ensemble is not None else problem
        if not isinstance(base, mfpde.FlowProblem) or not isinstance(base.flow, mfpde.flows.AbstractLayeredFlow):
            raise TypeError("`problem` of Units must be a FlowProblem with a layered flow, e.g. flows.Multilayer.")
        check_counts(max_steps=max_steps, batch_size=batch_size)
        norm = error_norm(batch_stepping, ensemble, batch_size, self.method)
        if ensemble is not None:
            for name in ensemble.sweep:
                if name.startswith("algorithm.") and not (name == "algorithm.dt" and self.method == "scan"):
                    raise ValueError(f"sweep `{name}`: Units can sweep `algorithm.dt` (method='scan') only.")
        flow, data = base.flow, base.data
        shapes = flow.shapes(self.n, data)
        ts = save_times(saveat, base.tspan)
        key, seed = as_key(key)
        # Drawn here, outside any trace, so that the measure's checks can warn (e.g. an ill-conditioned Gram matrix);
        # the stiffness probe starts from it.
        y0 = _initial_vector(flow, base.init, jax.random.split(key)[0], shapes, data)
        dtype = y0.dtype
        meter = as_progress_meter(progress_meter)
        span = tuple(jnp.asarray(t, dtype) for t in base.tspan)
        attrs = {"seed": seed, "method": self.method}
        with Timer() as timer:
            probe = lambda: (_LayeredSystem(flow, data, tuple(shapes.items())), y0, span[0])  # noqa: E731
            integrate, described, numerics_ = integrator(
                self, ts=ts, dtype=dtype, noisy=False, save=self.save_state, span=span, probe=probe, solver=solver,
                stepsize_controller=stepsize_controller, rtol=rtol, atol=atol, dt0=dt0, max_steps=max_steps, norm=norm)
            attrs.update(described)
            point = _UnitsPoint(integrate, tuple(shapes.items()), dtype)
            observed, stats = run(point, base, ensemble, self, key, meter, attrs, numerics_, ts=ts, directory=directory,
                                  checkpoint_every=checkpoint_every, batch_size=batch_size,
                                  batch_stepping=batch_stepping, client=client, devices=jax.devices())
        dataset = _dataset(base, self, shapes, ts, observed, stats, timer, attrs, ensemble)
        return warn_or_raise(mfpde.Solution(dataset, problem), throw)


class _UnitsPoint(AbstractPoint):
    """The units of one layered problem: the weights drawn from its measure, then integrated."""

    integrate: jax.tree_util.Partial
    shapes: tuple[tuple[str, tuple[int, ...]], ...] = eqx.field(static=True)
    dtype: np.dtype = eqx.field(static=True)

    def system(self, problem) -> "_LayeredSystem":
        return _LayeredSystem(problem.flow, problem.data, self.shapes)

    def start(self, problem, key):
        init_key, noise_key = jax.random.split(key)
        y0 = _initial_vector(problem.flow, problem.init, init_key, dict(self.shapes), problem.data)
        return y0.astype(self.dtype), noise_key


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


def _dataset(problem, algorithm, shapes, ts, observed, stats, timer, attrs, ensemble):
    flow, data = problem.flow, problem.data
    described = flow.describe(data) | flow.describe_state(algorithm.n, data)
    variables, coords, stats = sweep_variables(observed, described, ts, stats, ensemble)
    sizes = flow.dimension_sizes(algorithm.n, data)
    used = {d for dims, _, _ in variables.values() for d in dims}
    coords["time"] = (("time",), ts, {"long_name": "time", "units": "1",
                                      "description": "mean-field time (each weight of layer ℓ moves at rate N_{ℓ−1}N_ℓ)"})
    for dim, size in sizes.items():
        if dim in used:
            start = 1 if "layer" in dim else 0
            coords[dim] = ((dim,), np.arange(start, start + size), {"long_name": dim.replace("_", " ") + " index"})
    title = f"{type(flow).__name__} flow, {type(algorithm).__name__} (n = {list(algorithm.n)})"
    return make_dataset(variables=variables, coords=coords, problem=problem, algorithm=algorithm, stats=stats,
                        timing=timer, attrs=attrs, title=title, stat_dims=ensemble.dims if ensemble is not None else ())
