import dataclasses
from pathlib import Path
from typing import Literal

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import xarray as xr
from jaxtyping import Array, Float, PRNGKeyArray

import mfpde
from mfpde.extend import Timer, as_float_array, make_dataset, save_times, warn_or_raise

from ._batches import error_norm, sweep_variables
from ._driver import MAX_STEPS, AbstractPoint, check_counts, integrator, run, solve_per_kind
from ._entropy import knn_entropy
from ._integrate import as_key, as_progress_meter, brownian_tree

_AUTO_CHUNK_ELEMENTS = 2**24  # N·n above which the data term is evaluated in chunks of training points


class Particles(mfpde.AbstractAlgorithm):
    """The Lagrangian discretisation: N particles of mass 1/N moving with the flow's velocity,

        dθ_j = v(θ_j, ρ_N) dt + √(2τ) dB_j,   v = −(1/m_j) ∂R/∂θ_j,   ρ_N = (1/N) Σ_j δ_{θ_j}.

    For τ = 0 this is continuous-time gradient descent of the width-N network; for τ > 0, noisy gradient descent.

    **Arguments:**

    - `n`: number of particles N (may be omitted when the initial measure is an explicit `measures.Particles`).
    - `method`: "adaptive" (diffrax, error-controlled) or "scan" (fixed-step Euler–Maruyama in a `lax.scan`, lean
      for long cheap runs; exact at the save times).
    - `dt`: the step of the "scan" method.
    - `chunk_size`: evaluate the data term in chunks of this many training points, keeping memory
      O(N·(d + k) + N·chunk) also for gradients. Default: chunks only when N·n > 2²⁴.
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
    - τ > 0: `ShARK` (additive-noise SRK, strong order 1.5 here) on a `VirtualBrownianTree`, with steps landing on
      the save times (an SDE solution interpolated between steps would be only O(√h) accurate there).
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

    def solve(
        self,
        problem: mfpde.FlowProblem,
        *,
        saveat=None,
        key: int | PRNGKeyArray = 0,
        solver: diffrax.AbstractSolver | None = None,
        stepsize_controller: diffrax.AbstractStepSizeController | None = None,
        rtol: float | None = None,
        atol: float | None = None,
        dt0: float | None = None,
        max_steps: int = MAX_STEPS,
        progress_meter: diffrax.AbstractProgressMeter | bool | None = None,
        brownian_tol: float | None = None,
        batch_size: int = 64,
        batch_stepping: Literal["per_point", "shared"] = "per_point",
        directory=None,
        checkpoint_every: int = 10,
        client=None,
        throw: bool = False,
    ) -> mfpde.Solution:
        """Integrate `problem` with N particles.

        **Arguments:**

        - `problem`: an `mfpde.FlowProblem`, or an `mfpde.EnsembleProblem` (all points batched through one compiled
          program; the result has one dimension per swept parameter). Each point gets the default method it would
          get alone: a study mixing τ = 0 and τ > 0 runs its two kinds as two studies, ODE and SDE.
        - `saveat`: times (array) or a `diffrax.SaveAt(ts=...)`; default 101 times over the span. Observables are
          computed at these times only; no step is kept in memory.
        - `key`: an integer seed or a JAX PRNG key, for the initial particles and the noise.
        - `solver`, `stepsize_controller`: diffrax objects, passed through (default: see the class docstring;
          a `PIDController(rtol, atol)`).
        - `rtol`, `atol`: tolerances of the default controller (traced: changing them does not recompile).
          Default for τ = 0: 1e-6/1e-8 in float64, 1e-4/1e-6 in float32; for τ > 0 (pathwise error of the
          SDE): 1e-3 in float64, 1e-2 in float32.
        - `dt0`: initial step (default: chosen by the controller).
        - `max_steps`: step budget; reaching it returns what was computed, with result `max_steps_reached`.
        - `progress_meter`: a diffrax progress meter, True for `diffrax.TqdmProgressMeter()`, False for none;
          by default a progress bar in a notebook (not under pytest), none elsewhere.
        - `brownian_tol`: resolution of the Brownian tree (τ > 0), default (t1 − t0)·2⁻¹⁸. It must stay below the
          steps the controller takes (below it the noise of two steps is no longer independent), and it sets the cost
          of the noise: each step descends the tree, one level per halving, drawing the increment and Lévy area of
          every coordinate at each level. With the default 18 levels that is most of a step's cost for a small
          network (about two thirds for N = 1024, d = 10, n = 256 on a CPU); a coarser value that still lies below
          the steps taken makes each step cheaper.
        - `batch_size`: for an `mfpde.EnsembleProblem`, the number of points run together in one compiled program.
        - `batch_stepping`: how the points of a batch take their adaptive steps. "per_point": each with its own step
          sizes and error control, so each point equals its single solve (to rounding). On a GPU the batch is
          vmapped and runs in lock step, as many iterations as its slowest point needs; on CPUs small groups of
          points are vmapped and the groups run one after another (vmapping more is slower there).
          "shared": the batch is one system with one step size, a step being accepted only when every point meets
          the tolerance (`solvers.MaxRMSNorm`, the default controller's norm here; give a controller of your own
          that norm too), and the points with the same seed share one draw of their Brownian path per step. The
          noise then costs one tree descent per distinct seed, not per point: in a temperature × seed sweep it
          drops by the number of temperatures. Each point agrees with its single solve to the solver's tolerance,
          not to rounding. A point whose state stops being finite even at the smallest steps (10⁻⁹ of the span) is
          marked failed (`nonfinite`) and leaves the error control, keeping its earlier saves; the others go on.
        - `directory`: for an `mfpde.EnsembleProblem`, a folder where each finished batch is written at once (one
          NetCDF file per batch, atomically); solving the same study again with the same folder skips the batches
          already there, so an interrupted study resumes and the merged result equals an uninterrupted run.
        - `checkpoint_every`: with a `directory` and a single problem, the run is integrated in segments of this
          many save times; each finished segment (its observables and final state) is written at once, and a rerun
          continues from the last one. The Brownian tree spans the whole run, so segments do not change the noise.
        - `client`: a `dask.distributed.Client`: each batch of an `EnsembleProblem` becomes a task that a worker
          runs and writes into `directory` (required, and visible to every worker); the driver then reads them all.
        - `throw`: raise `mfpde.IntegrationError` (carrying the partial solution) instead of warning on failure.
        """
        ensemble = problem if isinstance(problem, mfpde.EnsembleProblem) else None
        if ensemble is not None:
            unknown = [k for k in ensemble.sweep if k.startswith("algorithm.") and k not in ("algorithm.n", "algorithm.dt")]
            if unknown:
                raise ValueError(f"sweep `{unknown[0]}`: Particles can sweep `algorithm.n` and `algorithm.dt` only.")
            if "algorithm.dt" in ensemble.sweep and self.method != "scan":
                raise ValueError("sweep `algorithm.dt` needs method='scan'.")
            if "algorithm.n" in ensemble.sweep:
                return _solve_per_width(self, ensemble, dict(saveat=saveat, key=key, solver=solver,
                    stepsize_controller=stepsize_controller, rtol=rtol, atol=atol, dt0=dt0, max_steps=max_steps,
                    progress_meter=progress_meter, brownian_tol=brownian_tol, batch_size=batch_size,
                    batch_stepping=batch_stepping,
                    directory=directory, checkpoint_every=checkpoint_every, client=client, throw=throw))
            if solver is None and self.method == "adaptive":
                kinds = ["noisy" if float(ensemble.point_problem(p).flow.temperature) > 0 else "deterministic"
                         for p in ensemble.points()]
                if len(set(kinds)) > 1:
                    return solve_per_kind(self, ensemble, kinds, dict(
                        saveat=saveat, key=key, stepsize_controller=stepsize_controller, rtol=rtol, atol=atol, dt0=dt0,
                        max_steps=max_steps, progress_meter=progress_meter, brownian_tol=brownian_tol,
                        batch_size=batch_size, batch_stepping=batch_stepping, directory=directory,
                        checkpoint_every=checkpoint_every, client=client, throw=throw))
        base = ensemble.problem if ensemble is not None else problem
        if not isinstance(base, mfpde.FlowProblem):
            raise TypeError(f"`problem` must be an mfpde.FlowProblem or EnsembleProblem, got {type(problem).__name__}.")
        flow, data = base.flow, base.data
        ts = save_times(saveat, base.tspan)
        key, seed = as_key(key)
        check_counts(max_steps=max_steps, batch_size=batch_size)
        norm = error_norm(batch_stepping, ensemble, batch_size, self.method)
        groups = flow.groups(data)
        n = self.n if self.n is not None else getattr(base.init, "n", None)
        if n is None:
            raise ValueError("`n` of Particles is required unless the initial measure is explicit `measures.Particles`.")
        y0 = _initial_state(base.init, jax.random.split(key)[0], n, groups)  # checks the measure against the flow
        dtype = y0.dtype
        chunk = self.chunk_size
        if chunk is None and hasattr(data, "n") and n * data.n > _AUTO_CHUNK_ELEMENTS:  # a Population blocks its own
            chunk = max(1, _AUTO_CHUNK_ELEMENTS // n)
        temperatures = [base.flow.temperature] if ensemble is None else [
            ensemble.point_problem(point).flow.temperature for point in ensemble.points()
        ]
        noisy = bool(np.any(np.asarray(temperatures) > 0))
        if noisy and min(n, self.entropy_samples) < 2:  # the entropy of the free energy is a nearest-neighbour estimate
            name, value = ("n", n) if n < 2 else ("entropy_samples", self.entropy_samples)
            raise ValueError(f"`{name}` of Particles must be at least 2 with temperature > 0 (the entropy of the free "
                             f"energy is estimated from nearest neighbours), got {value}.")
        progress_meter = as_progress_meter(progress_meter)
        attrs = {"seed": seed, "chunk_size": chunk, "noisy": noisy, "method": self.method}
        masses = jnp.full((n,), 1.0 / n, dtype=dtype)
        span = tuple(jnp.asarray(t, dtype) for t in base.tspan)

        with Timer() as timer:
            probe = lambda: (_System(flow, data, masses, chunk, self.entropy_samples), y0, span[0])  # noqa: E731
            integrate, described, numerics_ = integrator(
                self, ts=ts, dtype=dtype, noisy=noisy, save=self.save_state, span=span, probe=probe, solver=solver,
                stepsize_controller=stepsize_controller, rtol=rtol, atol=atol, dt0=dt0, max_steps=max_steps,
                brownian_tol=brownian_tol, norm=norm)
            attrs.update(described)
            devices = jax.devices() if self.shard else jax.devices()[:1]
            # Many devices: the particle axis of one run, or the point axis of a study, is split across them.
            sharding = None
            if ensemble is None and len(devices) > 1 and n % len(devices) == 0:
                sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("particles",)), jax.sharding.PartitionSpec("particles"))
            attrs["devices"] = len(devices)
            point = _Point(integrate, n, groups, dtype, chunk, self.entropy_samples, sharding)
            out = run(point, base, ensemble, self, key, progress_meter, attrs, numerics_, ts=ts, directory=directory,
                      checkpoint_every=checkpoint_every, batch_size=batch_size, batch_stepping=batch_stepping,
                      client=client, devices=devices)

        observables, stats = out
        dataset = _dataset(base, self, flow, data, ts, observables, stats, timer, attrs, noisy, ensemble)
        return warn_or_raise(mfpde.Solution(dataset, problem), throw)


def _solve_per_width(algorithm, ensemble, options):
    """A sweep over the width N: one batched, compiled program per width, concatenated along `algorithm_n`."""
    if not ensemble.product:
        raise ValueError("sweep `algorithm.n` needs a product sweep (product=True).")
    widths = ensemble.sweep["algorithm.n"]
    rest = {k: v for k, v in ensemble.sweep.items() if k != "algorithm.n"}
    parts = []
    for n in widths:
        sub = dataclasses.replace(algorithm, n=int(n))
        sub_options = dict(options)
        if options["directory"] is not None:
            sub_options["directory"] = Path(options["directory"]) / f"n={int(n)}"
        problem = mfpde.EnsembleProblem(ensemble.problem, rest) if rest else ensemble.problem
        parts.append(sub.solve(problem, **sub_options).dataset)
    dataset = xr.concat(parts, dim=xr.Variable("algorithm_n", widths, {"long_name": "swept parameter algorithm.n"}),
                        combine_attrs="override", data_vars="all")
    dataset = dataset.transpose(*ensemble.dims, ...)
    for name in ("wall_time_s", "compile_time_s", "run_time_s"):
        dataset.attrs[name] = sum(part.attrs[name] for part in parts)
    dataset.attrs["algorithm_n"] = "swept"
    return mfpde.Solution(dataset)


def _initial_state(init, key, n, groups):
    sampled = init.sample(key, n, groups)
    return jnp.concatenate([jnp.asarray(sampled[g]).reshape(n, size) for g, size in groups.items()], axis=1).reshape(-1)


class _Point(AbstractPoint):
    """N particles of one problem: the initial particles drawn from its measure, then integrated."""

    integrate: jax.tree_util.Partial
    n: int = eqx.field(static=True)
    groups: tuple[tuple[str, int], ...] = eqx.field(static=True, converter=lambda g: tuple(dict(g).items()))
    dtype: np.dtype = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    entropy_samples: int = eqx.field(static=True)
    sharding: jax.sharding.Sharding | None = eqx.field(static=True, default=None)

    def system(self, problem) -> "_System":
        masses = jnp.full((self.n,), 1.0 / self.n, dtype=self.dtype)
        return _System(problem.flow, problem.data, masses, self.chunk_size, self.entropy_samples)

    def start(self, problem, key):
        init_key, noise_key = jax.random.split(key)
        return _initial_state(problem.init, init_key, self.n, dict(self.groups)).astype(self.dtype), noise_key

    def constrain(self, y):
        return y if self.sharding is None else jax.lax.with_sharding_constraint(y, self.sharding)


class _System(eqx.Module):
    """The particle system: flow, data and masses, with the state flattened to a vector of N·p entries."""

    flow: mfpde.flows.AbstractFlow
    data: mfpde.Dataset | None
    masses: Array
    chunk_size: int | None = eqx.field(static=True)
    entropy_samples: int = eqx.field(static=True)

    def unflatten(self, y):
        return y.reshape(self.masses.shape[0], -1)

    def velocity(self, t, y, args=None):
        theta = self.unflatten(y)
        return self.flow.velocity(t, theta, self.masses, self.data, chunk_size=self.chunk_size).reshape(-1)

    def brownian(self, span, tol, key, like):
        return brownian_tree(span, tol, key, like)

    def noise_scale(self, y):
        """√(2τ) on trained coordinates, 0 on fixed ones, per entry of the flat state."""
        mask = jnp.asarray(self.flow.trainable(self.data), y.dtype)
        return jnp.tile(jnp.sqrt(2 * self.flow.temperature).astype(y.dtype) * mask, self.masses.shape[0])

    def observe(self, t, y, noisy: bool, save_state: bool):
        theta = self.unflatten(y)
        out = dict(self.flow.observables(theta, self.masses, self.data, chunk_size=self.chunk_size))
        risk = self.flow.energy(theta, self.masses, self.data, chunk_size=self.chunk_size)
        out["risk"] = risk
        if noisy:
            trained = theta[: self.entropy_samples, np.flatnonzero(self.flow.trainable(self.data))]
            out["entropy"] = knn_entropy(trained)
            out["free_energy"] = risk - self.flow.temperature * out["entropy"]
        else:
            out["free_energy"] = risk
        out["theta_mean"] = jnp.mean(theta, axis=0)
        if theta.shape[1] <= 32:
            # The moments of ρ_N itself (normalised by 1/N), as the grid's are of its density.
            out["theta_cov"] = jnp.cov(theta, rowvar=False, bias=True).reshape(theta.shape[1], theta.shape[1])
        else:
            out["theta_var"] = jnp.var(theta, axis=0)
        if save_state:
            out["theta"] = theta
        return out


_DESCRIPTIONS = {
    "risk": ((), {"long_name": "risk R(ρ): training loss plus regularisers", "units": "1"}),
    "free_energy": ((), {"long_name": "free energy F = R + τ ∫ρ log ρ (entropy by k-NN estimate for particles)", "units": "1"}),
    "entropy": ((), {"long_name": "differential entropy of the trained coordinates (Kozachenko–Leonenko estimate)", "units": "1"}),
    "theta_mean": (("param",), {"long_name": "mean of θ over particles", "units": "1"}),
    "theta_cov": (("param", "param2"), {"long_name": "covariance of θ under the empirical measure (1/N)", "units": "1"}),
    "theta_var": (("param",), {"long_name": "variance of θ under the empirical measure (1/N)", "units": "1"}),
    "theta": (("particle", "param"), {"long_name": "particle positions θ_j", "units": "1"}),
}


def _dataset(problem, algorithm, flow, data, ts, observables, stats, timer, attrs, noisy, ensemble):
    described = {**_DESCRIPTIONS, **flow.describe(data)}
    variables, sweep_coords, stats = sweep_variables(observables, described, ts, stats, ensemble)
    names = np.array(flow.coordinates(data), dtype=object)
    coords = {
        "time": (("time",), ts, {"long_name": "time", "units": "1",
                                 "description": "mean-field time: t = k·η/N after k gradient-descent steps of learning rate η"}),
        "param": (("param",), names, {"long_name": "coordinate of θ"}),
    }
    if "theta_cov" in observables:
        coords["param2"] = (("param2",), names, {"long_name": "coordinate of θ"})
    if "theta" in observables:
        coords["particle"] = (("particle",), np.arange(variables["theta"][1].shape[-2]), {"long_name": "particle index"})
    if data is not None and "prediction" in observables:
        coords["sample"] = (("sample",), np.arange(data.n), {"long_name": "training point index"})
        coords["output"] = (("output",), np.arange(data.k), {"long_name": "output index"})
    coords.update(sweep_coords)
    title = f"{type(flow).__name__} flow, {type(algorithm).__name__} ({'noisy' if noisy else 'deterministic'})"
    return make_dataset(variables=variables, coords=coords, problem=problem, algorithm=algorithm, stats=stats,
                        timing=timer, attrs=attrs, title=title, stat_dims=ensemble.dims if ensemble is not None else ())
