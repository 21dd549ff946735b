from typing import ClassVar, Literal

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import mfpde
from mfpde.extend import as_float_array

from ._driver import AbstractIntegrationAlgorithm, AbstractPoint, integrator
from ._entropy import knn_entropy
from ._integrate import brownian_path

# Above N·n = 2²⁴ the data term is evaluated in chunks of 2²⁴/N training points, and at least 128: thinner chunks
# make skinny matrix products (16 points at N = 10⁶: 1.9× slower; benchmarks/RESULTS.md, "A million particles").
_AUTO_CHUNK_ELEMENTS = 2**24
_MIN_AUTO_CHUNK = 128


class Particles(AbstractIntegrationAlgorithm):
    """The Lagrangian discretisation: N particles of masses m_j (1/N, or those of an explicit `measures.Particles`)
    moving with the flow's velocity,

        dθ_j = v(θ_j, ρ_N) dt + √(2τ) dB_j,   v = −(1/m_j) ∂R/∂θ_j,   ρ_N = Σ_j m_j δ_{θ_j}.

    For τ = 0 this is continuous-time gradient descent of the width-N network; for τ > 0, noisy gradient descent. A
    flow that evolves its masses (`flows.BirthDeath`) adds them to the state, ṁ_j = `flow.mass_rate`(∂R/∂m_j, m_j),
    and reports the total `mass` (and `particle_mass` with `save_state`).

    **Arguments:**

    - `n`: number of particles N (may be omitted when the initial measure is an explicit `measures.Particles`).
    - `method`: "adaptive" (diffrax, error-controlled) or "scan" (fixed-step Euler–Maruyama in a `lax.scan`, lean
      for long cheap runs; exact at the save times).
    - `dt`: the step of the "scan" method.
    - `chunk_size`: evaluate the data term in chunks of this many training points, keeping memory
      O(N·(d + k) + N·chunk) also for gradients. Default: when N·n > 2²⁴, chunks of 2²⁴/N training points and at
      least 128 (thinner ones are slow: benchmarks/RESULTS.md, "A million particles").
    - `save_state`: also save the full state θ(t) at the save times (data variable `theta`).
    - `shard`: with several JAX devices, split the particle axis of a run (N divisible by the device count), or
      the point axis of a study (`batch_size` divisible by it), across all of them.
    - `entropy_samples`: for τ > 0, the entropy term of the free energy is a Kozachenko–Leonenko k-NN estimate from
      the first `entropy_samples` particles (exchangeable, so a fair subsample), at cost O(entropy_samples²).

    How the adaptive method chooses when no diffrax `solver` is passed to `solve`:

    - τ = 0: `Tsit5` (explicit, 5th order), unless the flow is stiff over the time span: the spectral radius λ of the
      velocity's Jacobian at t0 (power iteration) gives the number of steps an explicit solver needs for stability
      alone, λ·(t1 − t0)/3.5; above `stiff_steps` the solve uses `Kvaerno5` with a matrix-free Newton–GMRES root
      finder (never a dense Jacobian of the N·p state). A flow whose velocity has kinks (ReLU: second differences
      of the velocity at t0 scale like h, not h²) uses `Bosh3` at rtol 1e-5, atol 1e-7 instead.
    - τ > 0: `Heun` (for additive noise Itô = Stratonovich; weak order 2) with predictable steps (`PredictableSteps`: the
      PI controller's sizes, no step rejected, so each step's Brownian increment is drawn afresh, without the
      Brownian tree a retried step needs), landing on the save times (an SDE solution interpolated between steps
      would be only O(√h) accurate there), save interval by save interval so that the observables are computed
      once per save time: 13× faster than ShARK on a Brownian tree at the same weak accuracy, and as fast as a
      hand-written Euler–Maruyama loop (benchmarks/RESULTS.md, "Noisy flows"). A `stepsize_controller` of your own rejects
      steps as usual, on a `VirtualBrownianTree`.

    The default tolerances (`rtol`, `atol` of `solve`): for τ = 0, 1e-6/1e-8 in float64 (1e-5/1e-7 with kinks) and
    1e-4/1e-6 in float32; for τ > 0 (a pathwise error, whose observables carry an O(N^{−1/2}) Monte-Carlo error
    anyway), 1e-3 in float64 and 1e-2 in float32. `solve` takes the options of every time-stepping algorithm
    (`AbstractIntegrationAlgorithm.solve`); a study sweeps the flow's and the data's parameters, the `seed`, the
    initial measure's, and `algorithm.n` (one compiled program per width) or `algorithm.dt` (method "scan").
    """

    n: int | None = eqx.field(static=True, default=None)
    method: Literal["adaptive", "scan"] = eqx.field(static=True, default="adaptive")
    dt: Float[Array, ""] | None = eqx.field(
        converter=lambda v: None if v is None else as_float_array(v, "dt", "Particles"), default=None
    )
    chunk_size: int | None = eqx.field(static=True, default=None)
    save_state: bool = eqx.field(static=True, default=False)
    entropy_samples: int = eqx.field(static=True, default=4096)
    stiff_steps: int = eqx.field(static=True, default=10_000)
    shard: bool = eqx.field(static=True, default=True)
    sweepable: ClassVar[tuple[str, ...]] = ("n", "dt")

    def __check_init__(self):
        if self.n is not None and (not isinstance(self.n, (int, np.integer)) or self.n < 1):
            raise ValueError(f"`n` of Particles must be a positive integer, got {self.n!r}.")
        if self.method not in ("adaptive", "scan"):
            raise ValueError(f"`method` of Particles must be 'adaptive' or 'scan', got {self.method!r}.")
        if self.method == "scan":
            if self.dt is None:
                raise ValueError("`dt` of Particles is required with method='scan'.")
            if not bool(self.dt > 0):
                raise ValueError(f"`dt` of Particles must be positive, got {float(self.dt)}.")
        if self.chunk_size is not None and (not isinstance(self.chunk_size, int) or self.chunk_size < 1):
            raise ValueError(f"`chunk_size` of Particles must be a positive integer, got {self.chunk_size!r}.")

    def check(self, problem, ensemble, options):
        if not isinstance(problem.flow, mfpde.flows.AbstractFlow):
            raise TypeError(f"`problem` of Particles must have a flow on measures (flows.AbstractFlow), got "
                            f"{type(problem.flow).__name__}; a layered flow is solved by solvers.Units.")
        if problem.flow.evolves_masses and np.any(_temperatures(problem, ensemble) > 0):
            raise ValueError(f"`temperature` must be 0 for {type(problem.flow).__name__} on Particles: the entropy of "
                             "weighted particles is not estimated.")

    def devices(self):
        return jax.devices() if self.shard else jax.devices()[:1]

    def discretise(self, problem, ensemble, key):
        flow, data = problem.flow, problem.data
        groups = flow.groups(data)
        n = self.n if self.n is not None else getattr(problem.init, "n", None)
        if n is None:
            raise ValueError("`n` of Particles is required unless the initial measure is explicit `measures.Particles`.")
        y0 = _initial_state(problem.init, jax.random.split(key)[0], n, groups)  # checks the measure against the flow
        chunk = self.chunk_size
        if chunk is None and hasattr(data, "n") and n * data.n > _AUTO_CHUNK_ELEMENTS:  # a Population blocks its own
            chunk = max(_MIN_AUTO_CHUNK, _AUTO_CHUNK_ELEMENTS // n)
            chunk = -(-data.n // -(-data.n // chunk))  # as many chunks, balanced: no padded rows beyond one per chunk
        noisy = bool(np.any(_temperatures(problem, ensemble) > 0))
        if noisy and min(n, self.entropy_samples) < 2:  # the entropy of the free energy is a nearest-neighbour estimate
            name, value = ("n", n) if n < 2 else ("entropy_samples", self.entropy_samples)
            raise ValueError(f"`{name}` of Particles must be at least 2 with temperature > 0 (the entropy of the free "
                             f"energy is estimated from nearest neighbours), got {value}.")
        devices = self.devices()
        sharding = None
        if ensemble is None and len(devices) > 1 and n % len(devices) == 0:  # a study splits its point axis instead
            sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("particles",)),
                                                  jax.sharding.PartitionSpec("particles"))
        point = _Point(None, n, groups, y0.dtype, chunk, self.entropy_samples, noisy, problem.flow.evolves_masses,
                       sharding)
        return point, point.state(problem, y0), {"chunk_size": chunk, "noisy": noisy, "method": self.method, "devices": len(devices)}

    def kinds(self, point, problem, ensemble, y0, options):
        """Deterministic and noisy points: an ODE and an SDE method."""
        if ensemble is None or options.solver is not None or self.method == "scan":
            return None, None
        return np.where(_temperatures(problem, ensemble) > 0, "noisy", "deterministic"), None

    def integrator(self, point, problem, ensemble, y0, ts, options, probes, norm):
        return integrator(self, point.system(problem), y0, problem.tspan, ts, options, noisy=point.noisy,
                          save=self.save_state, norm=norm)

    def layout(self, problem, ensemble, ts, observed, attrs):
        flow, data = problem.flow, problem.data
        names = np.array(flow.coordinates(data), dtype=object)
        coords = {"param": (("param",), names, {"long_name": "coordinate of θ"})}
        if "theta_cov" in observed:
            coords["param2"] = (("param2",), names, {"long_name": "coordinate of θ"})
        if "theta" in observed:
            n = observed["theta"].shape[-2]
            coords["particle"] = (("particle",), np.arange(n), {"long_name": "particle index"})
        title = f"{type(flow).__name__} flow, Particles ({'noisy' if attrs['noisy'] else 'deterministic'})"
        return {**_DESCRIPTIONS, **flow.describe(data)}, coords, title


def _temperatures(problem, ensemble) -> np.ndarray:
    """The temperature of `problem`, or of each point of `ensemble` (C order)."""
    problems = [problem] if ensemble is None else [ensemble.point_problem(p) for p in ensemble.points()]
    return np.asarray([float(p.flow.temperature) for p in problems])


def _initial_state(init, key, n, groups):
    sampled = init.sample(key, n, groups)
    return jnp.concatenate([jnp.asarray(sampled[g]).reshape(n, size) for g, size in groups.items()], axis=1).reshape(-1)


def _initial_masses(init, n, dtype):
    """The masses of an explicit `measures.Particles` that has them, else 1/N each."""
    masses = getattr(init, "masses", None)
    return jnp.full((n,), 1.0 / n, dtype) if masses is None else jnp.asarray(masses, dtype)


class _Point(AbstractPoint):
    """N particles of one problem: the initial particles drawn from its measure, then integrated."""

    integrate: jax.tree_util.Partial | None
    n: int = eqx.field(static=True)
    groups: tuple[tuple[str, int], ...] = eqx.field(static=True, converter=lambda g: tuple(dict(g).items()))
    dtype: np.dtype = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    entropy_samples: int = eqx.field(static=True)
    noisy: bool = eqx.field(static=True)
    evolves_masses: bool = eqx.field(static=True)
    sharding: jax.sharding.Sharding | None = eqx.field(static=True, default=None)

    def system(self, problem) -> "_System":
        masses = _initial_masses(problem.init, self.n, self.dtype)
        return _System(problem.flow, problem.data, masses, self.chunk_size, self.entropy_samples, self.evolves_masses)

    def start(self, problem, key):
        init_key, noise_key = jax.random.split(key)
        theta = _initial_state(problem.init, init_key, self.n, dict(self.groups)).astype(self.dtype)
        return self.state(problem, theta), noise_key

    def state(self, problem, theta):
        """The flat state from the particles' N·p coordinates: then N times their N masses when the flow evolves
        them."""
        if not self.evolves_masses:
            return theta
        return jnp.concatenate([theta, self.n * _initial_masses(problem.init, self.n, self.dtype)])

    def constrain(self, y):
        return y if self.sharding is None else jax.lax.with_sharding_constraint(y, self.sharding)


class _System(eqx.Module):
    """The particle system: flow, data and masses, with the state flattened to a vector of N·p entries, then, for a
    flow that evolves them, the N masses times N (of the order of the coordinates, for the error control and the
    method probes; `masses` are then the initial ones)."""

    flow: mfpde.flows.AbstractFlow
    data: mfpde.Dataset | None
    masses: Array
    chunk_size: int | None = eqx.field(static=True)
    entropy_samples: int = eqx.field(static=True)
    evolves_masses: bool = eqx.field(static=True, default=False)

    def unflatten(self, y):
        """The particles θ (N, p) and their masses (N,) in the flat state `y`."""
        n = self.masses.shape[0]
        if self.evolves_masses:
            return y[:-n].reshape(n, -1), y[-n:] / n
        return y.reshape(n, -1), self.masses

    def velocity(self, t, y, args=None):
        theta, masses = self.unflatten(y)
        v = self.flow.velocity(t, theta, masses, self.data, chunk_size=self.chunk_size).reshape(-1)
        if not self.evolves_masses:
            return v
        potential = jax.grad(lambda m: self.flow.energy(theta, m, self.data, chunk_size=self.chunk_size))(masses)
        return jnp.concatenate([v, masses.shape[0] * self.flow.mass_rate(potential, masses)])

    def brownian(self, span, tol, key, like):
        return brownian_path(span, tol, key, like)

    def noise_scale(self, y):
        """√(2τ) on trained coordinates, 0 on fixed ones, per entry of the flat state."""
        mask = jnp.asarray(self.flow.trainable(self.data), y.dtype)
        return jnp.tile(jnp.sqrt(2 * self.flow.temperature).astype(y.dtype) * mask, self.masses.shape[0])

    def observe(self, t, y, noisy: bool, save_state: bool):
        theta, masses = self.unflatten(y)
        out = dict(self.flow.observables(theta, masses, self.data, chunk_size=self.chunk_size))
        risk = self.flow.energy(theta, masses, self.data, chunk_size=self.chunk_size)
        out["risk"] = risk
        if noisy:
            trained = theta[: self.entropy_samples, np.flatnonzero(self.flow.trainable(self.data))]
            out["entropy"] = knn_entropy(trained)
            out["free_energy"] = risk - self.flow.temperature * out["entropy"]
        else:
            out["free_energy"] = risk
        # The moments of ρ_N itself (normalised by its mass), as the grid's are of its density.
        total = jnp.sum(masses)
        out["theta_mean"] = masses @ theta / total
        centred = theta - out["theta_mean"]
        if theta.shape[1] <= 32:
            out["theta_cov"] = (centred * masses[:, None]).T @ centred / total
        else:
            out["theta_var"] = masses @ centred**2 / total
        if self.evolves_masses:
            out["mass"] = total
        if save_state:
            out["theta"] = theta
            if self.evolves_masses:
                out["particle_mass"] = masses
        return out


_DESCRIPTIONS = {
    "risk": ((), {"long_name": "risk R(ρ): training loss plus regularisers", "units": "1"}),
    "free_energy": ((), {"long_name": "free energy F = R + τ ∫ρ log ρ (entropy by k-NN estimate for particles)", "units": "1"}),
    "entropy": ((), {"long_name": "differential entropy of the trained coordinates (Kozachenko–Leonenko estimate)", "units": "1"}),
    "theta_mean": (("param",), {"long_name": "mean of θ over particles", "units": "1"}),
    "theta_cov": (("param", "param2"), {"long_name": "covariance of θ under the empirical measure (1/N)", "units": "1"}),
    "theta_var": (("param",), {"long_name": "variance of θ under the empirical measure (1/N)", "units": "1"}),
    "theta": (("particle", "param"), {"long_name": "particle positions θ_j", "units": "1"}),
    "mass": ((), {"long_name": "total mass Σ_j m_j", "units": "1"}),
    "particle_mass": (("particle",), {"long_name": "particle masses m_j", "units": "1"}),
}

