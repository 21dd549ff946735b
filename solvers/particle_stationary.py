from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

import mfpde
from mfpde.extend import is_concrete, make_dataset, result_code

from ._stationary import (AbstractStationaryAlgorithm, AbstractStationarySystem, check_measure_flow,
                          solve_stationary)
from .particles import _initial_masses, _initial_state


class ParticleStationary(AbstractStationaryAlgorithm):
    """A stationary point of a flow with τ = 0 on N particles of mass 1/N: positions θ_j where the mean-field
    velocity v_j = −N ∂R/∂θ_j = −∇_θ Φ_ρ(θ_j) vanishes (Φ_ρ = δR/δρ, the first variation), found from particles drawn from `problem.init`.

    What is solved depends on the optimistix solver passed to `solve`:

    - a minimiser (the default, `optx.LBFGS`): minimise R over the trained coordinates; it finds local minima only,
      never the saddles a root finder can land on. L-BFGS keeps O(N·p) memory at any width.
    - a root finder or least-squares solver (e.g. `optx.Newton`, `optx.LevenbergMarquardt`): a root of the velocity
      field itself, which also finds saddles and suits flows that are not gradient flows. Their Jacobians are dense
      (N·p)² matrices: for small N.

    Coordinates the flow keeps fixed (`flow.trainable`) stay at their initial values.

    **Arguments:**

    - `n`: the number of particles N.
    - `chunk_size`: evaluate the data term in chunks of this many training points.
    """

    n: int = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True, default=None)

    def __check_init__(self):
        if isinstance(self.n, bool) or not isinstance(self.n, (int, np.integer)) or self.n < 1:
            raise ValueError(f"`n` of ParticleStationary must be a positive integer (particles), got {self.n!r}.")
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise ValueError(f"`chunk_size` of ParticleStationary must be a positive integer, got {self.chunk_size!r}.")

    solver_kinds: ClassVar[tuple[type, ...]] = (optx.AbstractMinimiser, optx.AbstractRootFinder, optx.AbstractLeastSquaresSolver)
    default_max_steps: ClassVar[int] = 10_000

    def solve(self, problem: mfpde.StationaryProblem, *, solver=None, rtol: float | None = None,
              atol: float | None = None, max_steps: int | None = None, key=0, throw: bool = False) -> mfpde.Solution:
        """Find a stationary point of `problem` from N particles of `problem.init`.

        **Arguments:**

        - `problem`: an `mfpde.StationaryProblem` whose flow has τ = 0.
        - `solver`: an optimistix minimiser, root finder or least-squares solver, used as given (default
          `optx.LBFGS(rtol, atol)`).
        - `rtol`, `atol`: tolerances of the default solver (default 1e-8 in float64, 1e-5 in float32: L-BFGS
          then reaches velocities of about 1e-9 on a two-layer flow, near the floor that rounding in R sets).
        - `max_steps`: the iteration budget (default 10 000); reaching it returns the last iterate with result
          `nonlinear_max_steps_reached`.
        - `key`: an integer seed or PRNG key for the initial particles.
        - `throw`: raise `mfpde.IntegrationError` (carrying the last iterate) instead of warning on failure.

        **Returns:** an `mfpde.Solution` whose dataset holds the particles `theta` (particle, param) at the
        stationary point and at the start (`theta_init`), their velocities, the energy R and the flow's observables
        there, `velocity_max` = max_j |v_j| and `velocity_rms` (the gradient norm reached), `num_steps` and `result`.
        """
        return solve_stationary(self, problem, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, key=key,
                                throw=throw)

    def check(self, problem):
        check_measure_flow(problem, self)
        tau = problem.flow.temperature
        if is_concrete(tau) and float(tau) != 0:
            raise ValueError(
                f"`temperature` must be 0 for particle stationary points, got {float(tau)}: with noise the particles "
                f"never stop; find the Gibbs state with solvers.GibbsFixedPoint (on a grid) or run a long noisy flow."
            )

    def default_tolerances(self, problem, dtype):
        tol = 1e-8 if dtype == jnp.float64 else 1e-5
        return tol, tol

    def default_solvers(self, problem, rtol, atol):
        return (optx.LBFGS(rtol=rtol, atol=atol),)

    def discretise(self, problem, key, dtype):
        groups = problem.flow.groups(problem.data)
        theta0 = _initial_state(problem.init, key, self.n, groups).reshape(self.n, -1).astype(dtype)
        masses = _initial_masses(problem.init, self.n, dtype)
        return _ParticleSystem(problem.flow, problem.data, theta0, masses, self.chunk_size), None

    def layout(self, problem, context, observed, stats, timer, attrs):
        flow, data = problem.flow, problem.data
        described = {**_DESCRIPTIONS, **flow.describe(data)}
        variables = {name: (described[name][0], np.asarray(values), described[name][1])
                     for name, values in observed.items()}
        coords = {
            "particle": (("particle",), np.arange(self.n), {"long_name": "particle index"}),
            "param": (("param",), np.array(flow.coordinates(data), dtype=object), {"long_name": "coordinate of θ"}),
        }
        return make_dataset(variables=variables, coords=coords, problem=problem, algorithm=self,
                            stats={k: np.asarray(v) for k, v in stats.items()}, timing=timer, attrs=attrs,
                            title=f"{type(flow).__name__} stationary point, {self.n} particles")


class _ParticleSystem(AbstractStationarySystem):
    """N particles of fixed masses (1/N, or those of an explicit `measures.Particles`) from θ₀; coordinates the flow
    keeps fixed stay at their θ₀."""

    flow: mfpde.flows.AbstractFlow
    data: object
    theta0: jax.Array
    masses: jax.Array
    chunk_size: int | None = eqx.field(static=True)

    def find(self, solver, max_steps):
        flow, data, theta0, masses, chunk_size = self.flow, self.data, self.theta0, self.masses, self.chunk_size
        mask = jnp.asarray(flow.trainable(data))

        def positions(y):
            return jnp.where(mask, y, theta0)

        def velocity(y):
            return flow.velocity(0.0, positions(y), masses, data, chunk_size=chunk_size)

        if isinstance(solver, optx.AbstractMinimiser):
            sol = optx.minimise(lambda y, _: flow.energy(positions(y), masses, data, chunk_size=chunk_size), solver,
                                theta0, max_steps=max_steps, throw=False)
        else:
            # Fixed coordinates get the residual y − θ₀, which keeps the Jacobian non-singular.
            sol = optx.root_find(lambda y, _: jnp.where(mask, velocity(y), y - theta0), solver, theta0,
                                 max_steps=max_steps, throw=False)
        theta = positions(sol.value)
        v = velocity(theta)
        speed = jnp.linalg.norm(v, axis=1)
        observed = dict(flow.observables(theta, masses, data, chunk_size=chunk_size))
        observed.update(theta=theta, theta_init=theta0, velocity=v,
                        energy=flow.energy(theta, masses, data, chunk_size=chunk_size),
                        velocity_max=jnp.max(speed), velocity_rms=jnp.sqrt(jnp.mean(speed**2)))
        return observed, {"num_steps": sol.stats["num_steps"], "result": result_code(sol.result)}


_DESCRIPTIONS = {
    "theta": (("particle", "param"), {"long_name": "particle positions at the stationary point", "units": "1"}),
    "theta_init": (("particle", "param"), {"long_name": "initial particle positions", "units": "1"}),
    "velocity": (("particle", "param"), {"long_name": "mean-field velocity v_j = −N ∂R/∂θ_j at the stationary point",
                                         "units": "1"}),
    "energy": ((), {"long_name": "energy R(ρ) at the stationary point", "units": "1"}),
    "velocity_max": ((), {"long_name": "max_j |v_j|: the velocity (gradient) norm reached", "units": "1"}),
    "velocity_rms": ((), {"long_name": "root mean square of |v_j| over particles", "units": "1"}),
}
