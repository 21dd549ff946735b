from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import mfpde
from mfpde.extend import as_float_array

from ._driver import AbstractIntegrationAlgorithm, AbstractPoint, integrator, time_coordinate


class Units(AbstractIntegrationAlgorithm):
    """The Lagrangian discretisation of a layered flow (e.g. `flows.Multilayer`): N_ℓ units in hidden layer ℓ,
    the state being the weight matrices between the units of consecutive layers. At finite widths this *is* the
    width-N network trained by gradient flow with the mean-field learning rates; the mean-field limit is
    approached as the widths grow (rate O(N^{−1/2}) in observables).

    **Arguments:**

    - `n`: (N_1, …, N_{L−1}), the number of units of each hidden layer (its width).
    - `method`: "adaptive" (diffrax; `Tsit5`, or `Kvaerno5` with matrix-free Newton–GMRES when the velocity's
      Jacobian makes an explicit solver take more than `stiff_steps` steps for stability alone, or `Bosh3` when the
      velocity has kinks, as for `Particles`) or "scan" (fixed-step Euler, i.e. plain gradient descent, with step
      `dt`).
    - `dt`: the step of the "scan" method.
    - `save_state`: also save the weight matrices at the save times.

    `solve` takes the options of every time-stepping algorithm (`AbstractIntegrationAlgorithm.solve`), with the
    default tolerances of `Particles` at τ = 0; a study sweeps the flow's parameters (e.g. `rates`, the
    learning-rate ratios), the `seed`, and `algorithm.dt` (method "scan").
    """

    n: tuple[int, ...] = eqx.field(static=True, converter=lambda w: tuple(int(x) for x in np.atleast_1d(w)))
    method: Literal["adaptive", "scan"] = eqx.field(static=True, default="adaptive")
    dt: Float[Array, ""] | None = eqx.field(default=None, converter=lambda v: None if v is None else as_float_array(v, "dt", "Units"))
    save_state: bool = eqx.field(static=True, default=False)
    stiff_steps: int = eqx.field(static=True, default=10_000)
    sweepable: ClassVar[tuple[str, ...]] = ("dt",)

    def __check_init__(self):
        if not self.n or any(w < 1 for w in self.n):
            raise ValueError(f"`n` of Units must be positive integers, got {self.n}.")
        if self.method not in ("adaptive", "scan"):
            raise ValueError(f"`method` of Units must be 'adaptive' or 'scan', got {self.method!r}.")
        if self.method == "scan" and (self.dt is None or not bool(self.dt > 0)):
            raise ValueError("`dt` of Units must be given and positive with method='scan'.")

    def check(self, problem, ensemble, options):
        if not isinstance(problem.flow, mfpde.flows.AbstractLayeredFlow):
            raise TypeError(f"`problem` of Units must have a layered flow (flows.AbstractLayeredFlow, e.g. "
                            f"flows.Multilayer), got {type(problem.flow).__name__}; a flow on measures is solved by "
                            f"solvers.Particles.")

    def discretise(self, problem, ensemble, key):
        shapes = problem.flow.shapes(self.n, problem.data)
        # Drawn here, outside any trace, so that the measure's checks can warn (e.g. an ill-conditioned Gram matrix).
        y0 = _initial_vector(problem.flow, problem.init, jax.random.split(key)[0], shapes, problem.data)
        return _UnitsPoint(None, tuple(shapes.items()), y0.dtype), y0, {"method": self.method}

    def integrator(self, point, problem, ensemble, y0, ts, options, probes, norm):
        return integrator(self, point.system(problem), y0, problem.tspan, ts, options, noisy=False,
                          save=self.save_state, norm=norm)

    def layout(self, problem, ensemble, ts, observed, attrs):
        flow, data = problem.flow, problem.data
        described = flow.describe(data) | flow.describe_state(self.n, data)
        used = {d for name in observed for d in described[name][0]}
        coords = {"time": time_coordinate(ts, "mean-field time (each weight of layer ℓ moves at rate N_{ℓ−1}N_ℓ)")}
        for dim, size in flow.dimension_sizes(self.n, data).items():
            if dim in used and dim not in ("sample", "output"):  # those two: `make_dataset`'s
                start = 1 if "layer" in dim else 0
                coords[dim] = ((dim,), np.arange(start, start + size), {"long_name": dim.replace("_", " ") + " index"})
        return described, coords, f"{type(flow).__name__} flow, Units (n = {list(self.n)})"


class _UnitsPoint(AbstractPoint):
    """The units of one layered problem: the weights drawn from its measure, then integrated."""

    integrate: jax.tree_util.Partial | None
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

