import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import mfpde
from mfpde._checks import is_concrete
from mfpde._solution import warn_or_raise
from mfpde._timing import Timer

from ._grid_ops import sg_rate
from .grid import Grid, _dataset, _GridSystem


class GibbsFixedPoint(mfpde.AbstractAlgorithm):
    """The self-consistent Gibbs state of a flow with temperature τ > 0 on a grid: the masses m with

        m_k = exp(−Φ_k[m]/τ) / Σ_l exp(−Φ_l[m]/τ),   Φ_k = ∂R/∂m_k,

    the stationary points of the grid dynamics (`solvers.Grid`: the Scharfetter–Gummel flux vanishes on every face
    exactly when m_k ∝ exp(−Φ_k/τ)), and for an energy convex in ρ (the two-layer model with a convex loss) the unique
    minimiser of the free energy F = R + τ Σ_k m_k log(m_k/V).

    It is found in two optimistix stages, both from the same energy:

    1. descent: minimise the free energy over logits z, F(softmax(z)) (default `optx.BFGS`; `optx.LBFGS` beyond
       `dense_cells` cells). The gradient of F(softmax(z)) vanishes exactly at the Gibbs states, and descent on F
       cannot diverge, so this stage brings any initial guess into the basin of a stable state (the one the
       long-time dynamics reaches) at a loose tolerance;
    2. root: solve r(ψ) = ψ − log softmax(−Φ[e^ψ]/τ) = 0 for the log-masses ψ = log m to the final tolerance
       (default `optx.Newton`, quadratic near the root).

    Positivity and the mass constraint are built in: the masses returned, softmax(−Φ[e^ψ]/τ), are positive and sum to
    one to rounding whatever the iterate. Newton's Jacobian I + (1/τ)(I − 1 mᵀ)(∂Φ/∂m) diag(m) is never formed
    beyond `dense_cells` cells: there lineax's GMRES solves the Newton systems from Jacobian-vector products. For
    the two-layer flow ∂Φ/∂m has rank at most the number of training points, so GMRES converges in that many
    iterations. Newton alone (`minimiser=False`) diverges from a poor guess when Φ varies by many τ over the grid.

    **Arguments:**

    - `grid`: a `solvers.Grid`: the box, cells, gridded axes, periodic axes and fixed coordinates.
    - `dense_cells`: up to this many cells the Newton systems are solved by a dense LU factorisation (default 2048).
    """

    grid: Grid
    dense_cells: int = eqx.field(static=True, default=2048)

    def __check_init__(self):
        if not isinstance(self.grid, Grid):
            raise TypeError(f"`grid` of GibbsFixedPoint must be a solvers.Grid, got {type(self.grid).__name__}.")
        if isinstance(self.dense_cells, bool) or not isinstance(self.dense_cells, int) or self.dense_cells < 0:
            raise ValueError(f"`dense_cells` of GibbsFixedPoint must be a non-negative integer, got {self.dense_cells!r}.")

    def solve(self, problem: mfpde.StationaryProblem, *, minimiser=None, root_finder=None, rtol: float | None = None,
              atol: float | None = None, max_steps: int = 256, key=0, throw: bool = False) -> mfpde.Solution:
        """Find the Gibbs state of `problem`, starting from the Gibbs state of the initial guess's potential,
        softmax(−Φ[m₀]/τ) (the answer already for an energy linear in ρ).

        **Arguments:**

        - `problem`: an `mfpde.StationaryProblem` whose flow has τ > 0; `problem.init` is the initial guess.
        - `minimiser`: an optimistix minimiser for the descent stage, used as given; False skips that stage
          (default: `optx.BFGS` or `optx.LBFGS` at tolerance 1e-6, see the class docstring).
        - `root_finder`: an optimistix root finder, least-squares solver or minimiser for the root stage, used as
          given (default: `optx.Newton(rtol, atol)`).
        - `rtol`, `atol`: tolerances of the default root finder on the log-masses (default 1e-10 and 1e-10; 1e-5 in
          float32).
        - `max_steps`: the iteration budget of each stage; when the root stage reaches it, the last iterate is
          returned with result `nonlinear_max_steps_reached`.
        - `key`: as for `Grid.solve` (only to estimate how much initial mass falls outside the box).
        - `throw`: raise `mfpde.IntegrationError` (carrying the last iterate) instead of warning on failure.

        **Returns:** an `mfpde.Solution` whose dataset has the density over the gridded axes (no time dimension),
        the flow's observables, risk, entropy and free energy at the fixed point, `residual` (max |r(ψ)|),
        `flux_residual` (the largest |ṁ_k| of the grid dynamics at the returned masses, relative to max m_k),
        `num_steps` (of both stages) and `result` (of the root stage).
        """
        if not isinstance(problem, mfpde.StationaryProblem):
            raise TypeError(f"`problem` of GibbsFixedPoint must be an mfpde.StationaryProblem, got {type(problem).__name__}.")
        tau = problem.flow.temperature
        if is_concrete(tau) and not float(tau) > 0:
            raise ValueError(
                f"`temperature` must be > 0 for a Gibbs fixed point, got {float(tau)}; for τ = 0 find particle "
                f"stationary points with solvers.ParticleStationary."
            )
        if not isinstance(max_steps, int) or max_steps < 1:
            raise ValueError(f"`max_steps` must be a positive integer, got {max_steps!r}.")
        grid, flow, data = self.grid, problem.flow, problem.data
        dtype = jnp.zeros(()).dtype
        axes, index, theta, m0, outside, how = grid.discretise(problem, key)
        system = _GridSystem(flow, data, jnp.asarray(theta, dtype), grid.cells, grid.spacing, grid.periodic,
                             grid.cell_volume, grid.chunk_size, grid.save_density, tuple(index))
        default_tol = 1e-10 if dtype == jnp.float64 else 1e-5
        rtol, atol = rtol or default_tol, atol or default_tol
        dense = m0.size <= self.dense_cells
        if minimiser is None:
            minimiser = (optx.BFGS if dense else optx.LBFGS)(rtol=max(rtol, 1e-6), atol=max(atol, 1e-6))
        if root_finder is None:
            linear_solver = (lx.AutoLinearSolver(well_posed=True) if dense
                             else lx.GMRES(rtol=1e-3 * rtol, atol=1e-3 * atol, restart=100))
            root_finder = optx.Newton(rtol=rtol, atol=atol, linear_solver=linear_solver)
        with Timer() as timer:
            out = jax.device_get(_find(system, jnp.asarray(m0, dtype), minimiser or None, root_finder, max_steps))
        observed, stats, residual, flux_residual = out
        observed = dict(observed)
        described = {
            "residual": ((), {"long_name": "max |ψ − log softmax(−Φ[e^ψ]/τ)| at the returned iterate", "units": "1"}),
            "flux_residual": ((), {"long_name": "max_k |dm_k/dt| of the grid dynamics at the returned masses, "
                                                "relative to max_k m_k", "units": "1"}),
        }
        observed.update(residual=residual, flux_residual=flux_residual)
        attrs = {"minimiser": type(minimiser).__name__ if minimiser else "none", "root_finder": type(root_finder).__name__, "axes": list(axes), "cell_volume": grid.cell_volume,
                 "initial_mass_outside": outside, "initial_mass_outside_method": how}
        title = f"{type(flow).__name__} Gibbs state, grid {'×'.join(map(str, grid.cells))}"
        dataset = _dataset(problem, self, grid, flow, data, axes, grid.nodes(), None, observed, stats, timer, attrs,
                           title=title, extra=described)
        return warn_or_raise(mfpde.Solution(dataset, problem), throw, "stationary solve")


def _gibbs_map(system: _GridSystem, psi):
    """log softmax(−Φ[e^ψ]/τ) over all cells."""
    phi = system.potential(jnp.exp(psi).reshape(system.cells)).reshape(-1)
    return jax.nn.log_softmax(-phi / system.tau.astype(psi.dtype))


def _free_energy(system: _GridSystem, z):
    """F(softmax(z)) = R(m) + τ Σ_k m_k log m_k (up to the constant −τ log V)."""
    m = jax.nn.softmax(z)
    return system.energy(m.reshape(system.cells)) + system.tau.astype(z.dtype) * jnp.sum(m * jax.nn.log_softmax(z))


@eqx.filter_jit
def _find(system: _GridSystem, m0, minimiser, root_finder, max_steps):
    psi = _gibbs_map(system, jnp.log(jnp.clip(m0.reshape(-1), jnp.finfo(m0.dtype).tiny)))
    steps = jnp.zeros((), jnp.int64 if psi.dtype == jnp.float64 else jnp.int32)
    if minimiser is not None:
        descent = optx.minimise(lambda z, _: _free_energy(system, z), minimiser, psi, max_steps=max_steps, throw=False)
        psi, steps = jax.nn.log_softmax(descent.value), steps + descent.stats["num_steps"]
    sol = optx.root_find(lambda psi, _: psi - _gibbs_map(system, psi), root_finder, psi, max_steps=max_steps,
                         throw=False)
    psi = _gibbs_map(system, sol.value)
    m = jnp.exp(psi).reshape(system.cells)
    residual = jnp.max(jnp.abs(sol.value - psi))
    rate = sg_rate(m, system.potential(m), system.tau.astype(m.dtype), system.spacing, system.periodic)
    stats = {"num_steps": steps + sol.stats["num_steps"], "result": sol.result._value}
    return system.observe(None, m), stats, residual, jnp.max(jnp.abs(rate)) / jnp.max(m)
