import dataclasses
import math
import typing
from collections.abc import Mapping, Sequence
from typing import ClassVar

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
from jaxtyping import Array, Float

import mfpde
from mfpde.extend import as_float_array, is_concrete

from ._driver import AbstractIntegrationAlgorithm, AbstractPoint, adaptive_integrator
from ._grid_init import check_masses, initial_masses
from ._grid_ops import SpectralDiffusion, SpectralRootFinder, _next, diffusion_rate, sg_rate
from ._integrate import AbstractWrappedController, as_key, implicit_solver
from ._tolerances import tolerance


def _bounds(value) -> tuple[tuple[float, float], ...]:
    try:
        pairs = tuple((float(lo), float(hi)) for lo, hi in value)
    except (TypeError, ValueError):
        raise ValueError(f"`bounds` of Grid must be a sequence of (low, high) pairs, one per axis, got {value!r}.") from None
    if not 1 <= len(pairs) <= 3:
        raise ValueError(f"`bounds` of Grid must have 1, 2 or 3 (low, high) pairs, got {len(pairs)}.")
    for axis, (lo, hi) in enumerate(pairs):
        if not (math.isfinite(lo) and math.isfinite(hi)) or not hi > lo:
            raise ValueError(f"`bounds` of Grid: axis {axis} must have finite low < high, got ({lo}, {hi}).")
    return pairs


def _cells(value, dims: int) -> tuple[int, ...]:
    if isinstance(value, (int, np.integer)):
        value = (value,) * dims
    try:
        cells = tuple(value)
    except TypeError:
        raise ValueError(f"`cells` of Grid must be an integer or a sequence of integers, got {value!r}.") from None
    if len(cells) != dims:
        raise ValueError(f"`cells` of Grid has {len(cells)} entries but `bounds` has {dims} axes.")
    for n in cells:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 2:
            raise ValueError(f"`cells` of Grid must be integers ≥ 2 (cells per axis), got {value!r}.")
    return tuple(int(n) for n in cells)


class Grid(AbstractIntegrationAlgorithm):
    """The Eulerian discretisation: the measure as masses m_k ≥ 0 (Σ m_k = 1) on the cells of a fixed grid over
    1, 2 or 3 of the flow's coordinates, moved by the finite-volume scheme of docs/algorithms/grid.md,

        ṁ_k = −Σ_a (F_{k+½} − F_{k−½}),   F_{k+½} = (τ/h_a²) [B(ΔΦ/τ) m_k − B(−ΔΦ/τ) m_{k+1}],   B(z) = z/(e^z − 1),

    (the Scharfetter–Gummel flux J (docs/algorithms/grid.md) times the face area V/h_a, with ρ_k = m_k/V, V = Π h_a), where the
    potential Φ_k = ∂R/∂m_k is the gradient of the flow's own `energy` at the nodes θ_k with masses m — the same
    function the particle solver differentiates in θ. Walls carry no flux; periodic axes wrap round. Hence:

    - mass is conserved to rounding (the fluxes telescope);
    - exp(−Φ/τ) is an exact stationary state for a linear energy (B(−z) = e^z B(z) makes every flux vanish), and
      the Gibbs fixed points m ∝ exp(−Φ[m]/τ) are the stationary states in general;
    - the semi-discrete scheme preserves positivity and dissipates the discrete free energy
      F = R + τ Σ_k m_k log(m_k/V), which the results report exactly;
    - it is second order in h where the density is smooth.

    The time stepping keeps these to its tolerance: masses of order −atol can appear where the density is tiny.

    For τ = 0 the flux is its upwind limit, F_{k+½} = [max(−ΔΦ, 0) m_k − max(ΔΦ, 0) m_{k+1}]/h²: pure transport
    with velocity −∇Φ, first order in h, positivity preserving (no diffusion, so no stiffness either).

    The default time integrator, chosen from the initial state:

    - τ > 0, diffusion-dominated (the default case): diffrax's `KenCarp4` (adaptive, L-stable, 4th-order IMEX
      Runge–Kutta) with the diffusion τΔ_h implicit and the rest of the Scharfetter–Gummel flux (B − 1 in place of B,
      same conservative form) explicit. Its implicit stages are linear in the diffusion, which the discrete cosine
      transform diagonalises (Fourier transform on periodic axes): `SpectralRootFinder` solves each stage exactly in
      O(K log K), never forming a matrix. Each part is a conservative flux difference and the two tableaux share
      their nodes and weights, so mass stays exact and the Gibbs state is a fixed point of every step.
    - τ > 0, drift-dominated: when the explicit part alone would need more than `stiff_steps` steps over the span for
      stability (its transport rate |ΔΦ|/h² on faces with cell Péclet number |ΔΦ|/τ > 1, times the span), the whole
      flux goes implicit: `Kvaerno5` with a Newton–GMRES stage solve (lineax), matrix-free.
    - τ = 0 (pure upwind transport, no stiffness): `Heun`, with the step capped at 1/(largest outflow rate of a
      cell), where each Euler stage and so their average keep the masses non-negative: once for a potential that
      does not depend on the masses, at every step (`TransportCap`) for an interacting flow.

    Timings against py-pde on the 2D Ornstein–Uhlenbeck problem are in `benchmarks/RESULTS.md`
    (`benchmarks/grid_vs_pypde.py`).

    Any diffrax `solver` and `stepsize_controller` given to `solve` are used as given: an IMEX solver (KenCarp3/4/5,
    Sil3) gets the same explicit/implicit split, any other solver the whole right-hand side.

    `solve` takes the options of every time-stepping algorithm (`AbstractIntegrationAlgorithm.solve`). The default
    tolerances on the masses are rtol 1e-6 (1e-4 in float32) and atol = rtol / (number of cells), i.e. relative to the
    mean cell mass. The `key` is used only to estimate by sampling how much of an initial measure without a known
    distribution function lies outside the box. A study sweeps parameters of the flow and of the data, each point
    with its own steps (`batch_stepping="per_point"`); the initial masses are those of the base problem at every
    point, so `init` and `seed` are not swept.

    **Arguments:**

    - `bounds`: ((low, high), ...) of the box, one pair per gridded axis (1 to 3 axes).
    - `cells`: cells per axis (integers ≥ 2, or one integer for all axes); nodes are the cell centres.
    - `axes`: names of the gridded coordinates of the flow (`flow.coordinates(data)`, e.g. ("w_0", "w_1") for a
      two-layer network with d = 2). Default: all coordinates, which suits `flows.Potential` and
      `flows.OrnsteinUhlenbeck`.
    - `periodic`: which axes are periodic (the box is then one period): a bool for all, one bool per axis, or the
      names of the periodic axes. Default: none (zero-flux walls everywhere).
    - `fixed`: values of the coordinates that are not gridded, by coordinate name (`{"u": 1.0}`) or group name (a
      value per coordinate of the group). They must be coordinates the flow does not train (e.g.
      `TwoLayer(train_output=False)`): a grid cannot move mass along a coordinate it does not resolve.
    - `chunk_size`: evaluate the data term of the energy in chunks of this many training points.
    - `save_state`: save the density at every save time (data variable `density`).
    - `max_outside`: the largest fraction of the initial mass allowed outside the box (default 1e-6).
    - `stiff_steps`: the explicit step count above which the default integrator goes fully implicit (default 5000).

    The initial masses are the cell probabilities of `problem.init` (exact for Gaussian, Uniform and their Product;
    the histogram for explicit `measures.Particles`; density × cell volume otherwise), renormalised to one after the
    check that at most `max_outside` of the mass falls outside the box.
    """

    bounds: tuple[tuple[float, float], ...] = eqx.field(static=True)
    cells: tuple[int, ...] = eqx.field(static=True)
    axes: tuple[str, ...] | None = eqx.field(static=True)
    periodic: tuple[bool, ...] = eqx.field(static=True)
    fixed: dict[str, Float[Array, "..."]]
    chunk_size: int | None = eqx.field(static=True)
    save_state: bool = eqx.field(static=True)
    max_outside: float = eqx.field(static=True)
    stiff_steps: int = eqx.field(static=True)
    sweepable: ClassVar[tuple[str, ...]] = ()

    def __init__(self, bounds, cells, axes: Sequence[str] | None = None, periodic=None, fixed: Mapping | None = None,
                 chunk_size: int | None = None, save_state: bool = True, max_outside: float = 1e-6,
                 stiff_steps: int = 5_000):
        self.bounds = _bounds(bounds)
        dims = len(self.bounds)
        self.cells = _cells(cells, dims)
        if axes is not None:
            if isinstance(axes, str) or not all(isinstance(a, str) for a in axes):
                raise ValueError(f"`axes` of Grid must be a sequence of coordinate names, got {axes!r}.")
            axes = tuple(axes)
            if len(axes) != dims:
                raise ValueError(f"`axes` of Grid names {len(axes)} coordinates but `bounds` has {dims} axes.")
            if len(set(axes)) != len(axes):
                raise ValueError(f"`axes` of Grid names a coordinate twice: {axes}.")
        self.axes = axes
        self.periodic = self._periodic(periodic, dims, axes)
        if fixed is None:
            fixed = {}
        if not isinstance(fixed, Mapping) or not all(isinstance(k, str) for k in fixed):
            raise ValueError(f"`fixed` of Grid must be a mapping from coordinate names to values, got {fixed!r}.")
        self.fixed = {name: as_float_array(value, f"fixed[{name!r}]", "Grid") for name, value in fixed.items()}
        for name, value in self.fixed.items():
            if value.ndim > 1:
                raise ValueError(f"`fixed` of Grid: the value of {name!r} must be a scalar or a vector, got shape {value.shape}.")
        if chunk_size is not None and (not isinstance(chunk_size, int) or chunk_size < 1):
            raise ValueError(f"`chunk_size` of Grid must be a positive integer, got {chunk_size!r}.")
        self.chunk_size = chunk_size
        self.save_state = bool(save_state)
        if not 0 <= max_outside < 1:
            raise ValueError(f"`max_outside` of Grid must lie in [0, 1), got {max_outside!r}.")
        self.max_outside = float(max_outside)
        if isinstance(stiff_steps, bool) or not isinstance(stiff_steps, (int, np.integer)) or stiff_steps < 1:
            raise ValueError(f"`stiff_steps` of Grid must be a positive integer, got {stiff_steps!r}.")
        self.stiff_steps = int(stiff_steps)

    @staticmethod
    def _periodic(value, dims, axes):
        if value is None or isinstance(value, (bool, np.bool_)):
            return (bool(value),) * dims
        value = tuple(value)
        if all(isinstance(v, str) for v in value):
            if axes is None:
                raise ValueError("`periodic` of Grid names axes, so `axes` must be given too (or give one bool per axis).")
            unknown = [v for v in value if v not in axes]
            if unknown:
                raise ValueError(f"`periodic` of Grid names {unknown}, which are not among `axes` {axes}.")
            return tuple(a in value for a in axes)
        if len(value) != dims or not all(isinstance(v, (bool, np.bool_)) for v in value):
            raise ValueError(f"`periodic` of Grid must be a bool, {dims} bools, or names of axes; got {value!r}.")
        return tuple(bool(v) for v in value)

    @property
    def spacing(self) -> tuple[float, ...]:
        """The cell widths h_a."""
        return tuple((hi - lo) / n for (lo, hi), n in zip(self.bounds, self.cells))

    @property
    def cell_volume(self) -> float:
        """V = Π h_a."""
        return float(np.prod(self.spacing))

    def edges(self) -> list[np.ndarray]:
        """Cell edges along each axis."""
        return [np.linspace(lo, hi, n + 1) for (lo, hi), n in zip(self.bounds, self.cells)]

    def nodes(self) -> list[np.ndarray]:
        """Cell centres θ_k along each axis."""
        return [lo + (np.arange(n) + 0.5) * h for (lo, _), n, h in zip(self.bounds, self.cells, self.spacing)]

    def gridded_axes(self, flow: mfpde.flows.AbstractFlow, data) -> tuple[tuple[str, ...], tuple[int, ...], np.ndarray]:
        """(gridded axis names, their indices among the flow's coordinates, the fixed value of every coordinate with
        NaN at the gridded ones), after checking `axes` and `fixed` against the flow."""
        names = flow.coordinates(data)
        groups = flow.groups(data)
        axes = self.axes
        if axes is None:
            if len(names) != len(self.bounds):
                raise ValueError(
                    f"`axes` of Grid: the flow has {len(names)} coordinates {names} but the grid {len(self.bounds)} "
                    f"axes; name the gridded coordinates with `axes` and give the others in `fixed`."
                )
            axes = names
        unknown = [a for a in axes if a not in names]
        if unknown:
            raise ValueError(f"`axes` of Grid: {unknown} are not coordinates of the flow; it has {names}.")
        index = tuple(names.index(a) for a in axes)
        trained = flow.trainable(data)
        frozen = [a for a, i in zip(axes, index) if not trained[i]]
        if frozen:
            raise ValueError(f"`axes` of Grid: the flow keeps {frozen} fixed, so the grid cannot move mass along them.")
        values = np.full(len(names), np.nan)
        offsets, start = {}, 0
        for group, size in groups.items():
            offsets[group] = (start, size)
            start += size
        for key, value in self.fixed.items():
            value = np.asarray(value, dtype=float)
            if key in offsets:
                start, size = offsets[key]
                columns = list(range(start, start + size))
            elif key in names:
                columns = [names.index(key)]
            else:
                raise ValueError(f"`fixed` of Grid: {key!r} is neither a coordinate nor a group of the flow ({names}).")
            if value.size not in (1, len(columns)):
                raise ValueError(f"`fixed` of Grid: {key!r} needs a scalar or {len(columns)} values, got shape {value.shape}.")
            clash = [names[c] for c in columns if c in index]
            if clash:
                raise ValueError(f"`fixed` of Grid: {clash} are gridded (in `axes`), they cannot also be fixed.")
            values[columns] = np.broadcast_to(value.reshape(-1), (len(columns),))
        missing = [n for i, n in enumerate(names) if i not in index and np.isnan(values[i])]
        if missing:
            raise ValueError(f"`fixed` of Grid: give values for the coordinates that are not gridded: {missing}.")
        moving = [n for i, n in enumerate(names) if i not in index and trained[i]]
        if moving:
            raise ValueError(
                f"`axes` of Grid: the flow trains {moving}, which the grid holds fixed; grid them too, or build a flow "
                f"that keeps them fixed (e.g. TwoLayer(train_output=False) for u)."
            )
        return tuple(axes), index, values

    @staticmethod
    def _check_fixed(init, flow, data, index, fixed_values, key, samples: int = 1024):
        """Refuse fixed values that the initial measure does not give: a grid holds those coordinates where they
        are, so `init` must be a point mass at the fixed value along each of them (checked on samples of `init`)."""
        names = flow.coordinates(data)
        groups = flow.groups(data)
        try:
            sampled = init.sample(key, samples, groups)
        except (NotImplementedError, ValueError):  # e.g. an explicit measure of another size: its histogram is used
            sampled = init.sample(key, init.n, groups) if hasattr(init, "n") else None
        if sampled is None:
            return
        theta = np.concatenate([np.asarray(sampled[g]).reshape(-1, size) for g, size in groups.items()], axis=1)
        for i, name in enumerate(names):
            if i in index:
                continue
            value, column = fixed_values[i], theta[:, i]
            if np.max(np.abs(column - value)) > 1e-12 * (1 + abs(value)):
                low, high = np.min(column), np.max(column)
                where = f"{low:g}" if low == high else f"values from {low:g} to {high:g}"
                raise ValueError(
                    f"`fixed` of Grid: {name} = {value:g}, but the initial measure puts {name} at {where}; the grid holds {name} fixed, so `init` must be a point "
                    f"mass there (e.g. measures.Gaussian(mean={value:g}, std=0) for that group)."
                )

    def discretise_measure(self, problem, key=0):
        """The grid form of `problem` (a `FlowProblem` or `StationaryProblem`): (gridded axis names, their indices
        among the flow's coordinates, the nodes θ_k as a (K, p) array, the initial masses m_k (shape `cells`, summing
        to one), the fraction of the initial mass outside the box, and how that fraction was found)."""
        flow, data = problem.flow, problem.data
        axes, index, fixed_values = self.gridded_axes(flow, data)
        mesh = np.meshgrid(*self.nodes(), indexing="ij")
        theta = np.tile(fixed_values, (int(np.prod(self.cells)), 1))
        for a, i in enumerate(index):
            theta[:, i] = mesh[a].reshape(-1)
        key, _ = as_key(key)
        self._check_fixed(problem.init, flow, data, index, fixed_values, key)
        masses, outside, how = initial_masses(problem.init, flow.groups(data), index, self.edges(), theta,
                                              self.cell_volume, key)
        m0 = check_masses(masses, outside, how, self.max_outside, self.bounds)
        return axes, index, theta, m0, outside, how

    def check(self, problem, ensemble, options):
        if options.batch_stepping != "per_point":
            raise ValueError("`batch_stepping` of Grid must be 'per_point': its points cannot share steps (the IMEX "
                             "terms of a stacked grid system are not written).")
        if ensemble is not None:
            _check_sweep(ensemble)
        flow = problem.flow
        if getattr(flow, "evolves_masses", False) and is_concrete(flow.temperature) and float(flow.temperature) > 0:
            raise ValueError(f"`temperature` must be 0 for {type(flow).__name__} on Grid: its reaction term is the "
                             "first variation of R, without the entropy's.")

    def devices(self):
        return jax.devices()[:1]

    def discretise(self, problem, ensemble, key):
        dtype = jax.dtypes.canonicalize_dtype(jnp.float64)
        axes, index, theta, m0, outside, how = self.discretise_measure(problem, key)
        system = _GridSystem(problem.flow, problem.data, jnp.asarray(theta, dtype), self.cells, self.spacing,
                             self.periodic, self.cell_volume, self.chunk_size, tuple(index))
        m0 = jnp.asarray(m0, dtype)
        attrs = {"axes": list(axes), "cell_volume": self.cell_volume, "initial_mass_outside": outside,
                 "initial_mass_outside_method": how}
        return _GridPoint(None, system, m0, dtype), m0, attrs

    def kinds(self, point, problem, ensemble, y0, options):
        """Per point, from probes of the initial masses: "transport" (τ = 0), "imex" (diffusion-dominated) or
        "implicit" (drift-dominated; see the class docstring)."""
        if options.solver is not None:
            return None, None
        probes = _probe_points(point, problem, ensemble)
        steps = probes["explicit_rate"] * float(problem.tspan[1] - problem.tspan[0])
        kinds = np.where(~probes["diffusive"], "transport", np.where(steps > self.stiff_steps, "implicit", "imex"))
        return kinds, probes | {"kind": kinds[0], "explicit_steps": steps}

    def integrator(self, point, problem, ensemble, y0, ts, options, probes, norm):
        dtype = point.dtype
        rtol = tolerance(options.rtol, 1e-6 if dtype == jnp.float64 else 1e-4, "rtol", dtype)
        atol = tolerance(options.atol, rtol / y0.size, "atol", dtype)
        solver, controller, cap, attrs = options.solver, options.stepsize_controller, None, {}
        if probes is not None and probes["kind"] == "transport":
            # Pure transport (upwind): Heun is a convex combination of Euler steps, which keep masses non-negative
            # for dt ≤ 1/(largest outflow rate of a cell): the default caps every step so. Without interaction the
            # potential, and so the cap, is the same for every density: one cap for a problem.
            solver = diffrax.Heun()
            every_step = ensemble is not None or bool(np.any(probes["interacting"]))
            rate = float(np.max(probes["outflow_rate"]))
            cap = None if every_step or not rate > 0 else jnp.asarray(1.0 / rate, dtype)
            attrs.update(transport_dtmax=1.0 / rate if rate > 0 else None,
                         transport_cap="every step" if every_step else "constant")
        elif probes is not None:
            stiff = probes["kind"] == "implicit"
            attrs.update(explicit_stability_steps=float(np.max(probes["explicit_steps"])), stiff_detected=stiff)
            solver = implicit_solver(gmres_atol=1e-12) if stiff else default_solver(
                SpectralDiffusion(self.cells, self.spacing, self.periodic, dtype))
        if controller is None:
            controller = diffrax.PIDController(rtol=rtol, atol=atol, dtmax=cap)
            if attrs.get("transport_cap") == "every step":
                controller = TransportCap(controller)
        imex = is_imex(solver)
        attrs.update(solver=type(solver).__name__, stepsize_controller=repr(controller), rtol=rtol, atol=atol,
                     max_steps=options.max_steps, imex_split=imex)
        span = tuple(jnp.asarray(t, dtype) for t in problem.tspan)
        integrate = adaptive_integrator(ts=ts, dtype=dtype, span=span, solver=solver, controller=controller,
                                        dt0=options.dt0, max_steps=options.max_steps, save=self.save_state, imex=imex)
        return integrate, attrs, (solver, controller)

    def layout(self, problem, ensemble, ts, observed, attrs):
        described, coords = grid_layout(self, problem.flow, problem.data, attrs["axes"])
        return described, coords, f"{type(problem.flow).__name__} flow, Grid {'×'.join(map(str, self.cells))}"


def _check_sweep(ensemble):
    """Refuse what a grid study cannot sweep: the initial measure (its masses are discretised once) and the seed (a
    grid solve draws no noise)."""
    for name, values in ensemble.sweep.items():
        if name == "seed":
            raise ValueError(f"sweep `{name}`: Grid sweeps parameters of the flow and the data only (a grid solve draws "
                             f"no noise).")
        init = ensemble.problem.init
        if not all(bool(eqx.tree_equal(mfpde.remake(ensemble.problem, **{name: v}).init, init)) for v in values):
            raise ValueError(f"sweep `{name}`: Grid discretises the initial measure once, so a study cannot change "
                             f"`init`; solve each initial measure as its own problem.")


def default_solver(diffusion: SpectralDiffusion) -> diffrax.AbstractSolver:
    """KenCarp4 with the diffusion implicit, its stages solved exactly by `SpectralRootFinder`."""
    return diffrax.KenCarp4(root_finder=SpectralRootFinder(diffusion))


def _probe(point, base, values):
    # Everything traced (an argument of the jitted callers): the problem's checks run on concrete values only.
    system = point.system(mfpde.remake(base, **values))
    m = point.m0
    return {"diffusive": system.tau > 0, "explicit_rate": _explicit_steps(system, m),
            "outflow_rate": _outflow_rate(system, m), "interacting": _interacting(system, m)}


_probe_one = eqx.filter_jit(_probe)
_probe_each = eqx.filter_jit(eqx.filter_vmap(_probe, in_axes=(None, None, 0)))


def _probe_points(point, base, ensemble) -> dict:
    """The probes of the default integrator at the initial masses, per point of `ensemble` (or for `base` alone):
    whether τ > 0 (`diffusive`), the steps per unit time the explicit part needs (`_explicit_steps`), the largest
    outflow rate of a cell at τ = 0 (`_outflow_rate`), and whether the potential depends on the masses
    (`_interacting`), as NumPy arrays."""
    if ensemble is None:
        out = _probe_one(point, base, {})
    else:
        values = {name: jnp.asarray(np.asarray([p[name] for p in ensemble.points()]), point.dtype)
                  for name in ensemble.sweep}
        out = _probe_each(point, base, values)
    return {name: np.atleast_1d(np.asarray(value)) for name, value in out.items()}


def _explicit_steps(system, m):
    """Steps per unit time the explicit part of the IMEX split needs for stability alone: its transport rate
    |ΔΦ|/h² on the faces where drift beats diffusion (cell Péclet |ΔΦ|/τ > 1; every face when τ = 0)."""
    phi = system.potential(m)
    tau = system.tau
    rate = jnp.zeros((), m.dtype)
    for axis, (h, per) in enumerate(zip(system.spacing, system.periodic)):
        p0, p1 = _next(phi, axis, per)
        dphi = jnp.abs(p1 - p0)
        rate = jnp.maximum(rate, jnp.max(jnp.where(dphi > tau, dphi, 0.0)) / (h * h))
    return rate


def _outflow_rate(system, m):
    """The largest rate at which a cell loses mass under the upwind (τ = 0) flux: Σ over its faces of
    max(±ΔΦ, 0)/h², the outflow through each."""
    phi = system.potential(m)
    total = jnp.zeros_like(m)
    for axis, (h, per) in enumerate(zip(system.spacing, system.periodic)):
        p0, p1 = _next(phi, axis, per)
        forward, backward = jnp.maximum(p0 - p1, 0.0) / (h * h), jnp.maximum(p1 - p0, 0.0) / (h * h)
        # forward leaves the lower cell of each face, backward the upper one
        total = total + _face_to_cells(forward, backward, axis, per)
    return jnp.max(total)


def _interacting(system, m):
    """Whether the potential Φ = ∂R/∂m depends on the masses: it differs between m and the uniform masses (an
    energy linear in m, ∫V dρ, gives the same Φ for both to rounding)."""
    uniform = jnp.full_like(m, jnp.sum(m) / m.size)
    phi, other = system.potential(m), system.potential(uniform)
    scale = jnp.max(jnp.abs(phi)) + jnp.finfo(m.dtype).tiny
    return jnp.max(jnp.abs(phi - other)) > 1e3 * jnp.finfo(m.dtype).eps * scale


class TransportCap(AbstractWrappedController):
    """`controller`'s steps, each capped at 1/(largest outflow rate of a cell) of the masses it starts from, where
    the upwind (τ = 0) Euler stages, and so Heun's average of them, keep every mass non-negative. The rate is taken
    afresh at every step, from the grid system that the solve passes as diffrax's `args`: an interacting flow's rate
    grows as its mass gathers (an aggregation's by ×3 and more), so a cap from the initial density alone lets large
    steps drive masses negative."""

    controller: diffrax.AbstractAdaptiveStepSizeController

    def __repr__(self):
        return f"TransportCap({self.controller!r})"

    def wrap(self, direction):
        return TransportCap(self.controller.wrap(direction))

    @staticmethod
    def _cap(system, t0, t1, m):
        rate = _outflow_rate(system, m)
        return jnp.where(rate > 0, jnp.minimum(t1, t0 + 1 / jnp.where(rate > 0, rate, 1.0)), t1)

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        t1, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return self._cap(args, t0, t1, y0), state

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        keep, next_t0, next_t1, jump, state, result = self.controller.adapt_step_size(
            t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state)
        start = jnp.where(keep, y1_candidate, y0)
        return keep, next_t0, self._cap(args, next_t0, next_t1, start), jump, state, result


def _face_to_cells(leaving_lower, leaving_upper, axis, periodic):
    """Per cell, the sum of the face rates that take mass out of it."""
    if periodic:
        return leaving_lower + jnp.roll(leaving_upper, 1, axis=axis)
    pad_lower = [(0, 0)] * leaving_lower.ndim
    pad_upper = [(0, 0)] * leaving_lower.ndim
    pad_lower[axis], pad_upper[axis] = (0, 1), (1, 0)
    return jnp.pad(leaving_lower, pad_lower) + jnp.pad(leaving_upper, pad_upper)


def is_imex(solver) -> bool:
    """Whether `solver` takes a `MultiTerm(explicit, implicit)` pair (KenCarp3/4/5, Sil3)."""
    structure = getattr(solver, "term_structure", None)
    origin = typing.get_origin(structure) or structure
    return isinstance(origin, type) and issubclass(origin, diffrax.MultiTerm)


class _GridPoint(AbstractPoint):
    """One problem on the grid, from the initial masses `m0` (the same for every point of a study). `base` is the
    base problem's system, whose flow and data a point's problem replaces."""

    integrate: jax.tree_util.Partial | None
    base: "_GridSystem"
    m0: Float[Array, "..."]
    dtype: np.dtype = eqx.field(static=True)

    def system(self, problem) -> "_GridSystem":
        return dataclasses.replace(self.base, flow=problem.flow, data=problem.data)

    def start(self, problem, key):
        return self.m0, key


class _GridSystem(eqx.Module):
    """The flow at the grid nodes: potential, rates and observables of the masses (shape `cells`)."""

    flow: mfpde.flows.AbstractFlow
    data: mfpde.Dataset | None
    theta: Float[Array, "K p"]
    cells: tuple[int, ...] = eqx.field(static=True)
    spacing: tuple[float, ...] = eqx.field(static=True)
    periodic: tuple[bool, ...] = eqx.field(static=True)
    volume: float = eqx.field(static=True)
    chunk_size: int | None = eqx.field(static=True)
    index: tuple[int, ...] = eqx.field(static=True)

    @property
    def tau(self):
        """τ as an array of the masses' dtype (a flow may hold it as a Python number)."""
        return jnp.asarray(self.flow.temperature, self.theta.dtype)

    def energy(self, m):
        return self.flow.energy(self.theta, m.reshape(-1), self.data, chunk_size=self.chunk_size)

    def potential(self, m):
        """Φ_k = ∂R/∂m_k, by autodiff of the flow's energy."""
        return jax.grad(self.energy)(m)

    def reaction(self, m, potential):
        """The masses' rate of birth and death, for a flow that has it (`flows.BirthDeath`), else 0."""
        if not self.flow.evolves_masses:
            return 0.0
        return self.flow.mass_rate(potential.reshape(-1), m.reshape(-1)).reshape(m.shape)

    def velocity(self, t, m, args=None):
        """ṁ, the Scharfetter–Gummel rate of the masses (plus their reaction rate)."""
        potential = self.potential(m)
        return sg_rate(m, potential, self.tau, self.spacing, self.periodic) + self.reaction(m, potential)

    def explicit(self, t, m, args=None):
        potential = self.potential(m)
        return (sg_rate(m, potential, self.tau, self.spacing, self.periodic, subtract_diffusion=True)
                + self.reaction(m, potential))

    def implicit(self, t, m, args=None):
        return diffusion_rate(m, self.tau, self.spacing, self.periodic)

    def observe(self, t, m, noisy: bool = False, save: bool = False):
        flat = m.reshape(-1)
        out = dict(self.flow.observables(self.theta, flat, self.data, chunk_size=self.chunk_size))
        risk = self.energy(m)
        positive = flat > 0
        entropy = -jnp.sum(jnp.where(positive, flat * jnp.log(jnp.where(positive, flat, 1.0) / self.volume), 0.0))
        out["risk"] = risk
        out["entropy"] = entropy
        out["free_energy"] = risk - self.tau * entropy
        out["mass"] = jnp.sum(flat)
        gridded = self.theta[:, list(self.index)]
        mean = flat @ gridded / out["mass"]
        centred = gridded - mean
        out["theta_mean"] = mean
        out["theta_cov"] = (centred * flat[:, None]).T @ centred / out["mass"]
        if save:
            out["density"] = m / self.volume
        return out


_DESCRIPTIONS = {
    "risk": ((), {"long_name": "risk R(ρ): the flow's energy at the grid masses", "units": "1"}),
    "free_energy": ((), {"long_name": "free energy F = R + τ Σ_k m_k log(m_k/V) on the grid (exact)", "units": "1"}),
    "entropy": ((), {"long_name": "entropy −Σ_k m_k log(m_k/V) of the grid density over the gridded axes", "units": "1"}),
    "mass": ((), {"long_name": "total mass Σ_k m_k", "units": "1"}),
    "theta_mean": (("param",), {"long_name": "mean of the gridded coordinates of θ", "units": "1"}),
    "theta_cov": (("param", "param2"), {"long_name": "covariance of the gridded coordinates of θ", "units": "1"}),
}


def grid_layout(grid: Grid, flow, data, axes) -> tuple[dict, dict]:
    """(the dims and CF attributes of a grid result's observables, its coordinates: the nodes of the gridded axes
    and their names along `param`), shared with the Gibbs state on a grid."""
    described = {**_DESCRIPTIONS, **flow.describe(data), "density": (tuple(axes), {
        "long_name": "density ρ = m_k / V of the measure over the gridded coordinates", "units": "1"})}
    names = np.array(axes, dtype=object)
    coords = {
        "param": (("param",), names, {"long_name": "gridded coordinate of θ"}),
        "param2": (("param2",), names, {"long_name": "gridded coordinate of θ"}),
    }
    for name, values, (lo, hi), per in zip(axes, grid.nodes(), grid.bounds, grid.periodic):
        coords[name] = ((name,), values, {"long_name": f"grid node (cell centre) of coordinate {name}", "units": "1",
                                          "bounds_low": lo, "bounds_high": hi, "periodic": int(per)})
    return described, coords
