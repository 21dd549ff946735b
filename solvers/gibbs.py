import math
import warnings

from typing import ClassVar

import equinox as eqx
import jax
import jax.numpy as jnp
import lineax as lx
import numpy as np
import optimistix as optx

import mfpde
from mfpde.extend import is_concrete, make_dataset, result_code

from ._grid_ops import sg_rate
from ._stationary import (AbstractStationaryAlgorithm, AbstractStationarySystem, check_measure_flow,
                          solve_stationary)
from .grid import Grid, _GridSystem, grid_layout


class GibbsFixedPoint(AbstractStationaryAlgorithm):
    """The self-consistent Gibbs state of a flow with temperature τ > 0 on a grid: the masses m with

        m_k = exp(−Φ_k[m]/τ) / Σ_l exp(−Φ_l[m]/τ),   Φ_k = ∂R/∂m_k,

    the stationary points of the grid dynamics (`solvers.Grid`: the Scharfetter–Gummel flux vanishes on every face
    exactly when m_k ∝ exp(−Φ_k/τ)), and for an energy convex in ρ (the two-layer model with a convex loss) the unique
    minimiser of the free energy F = R + τ Σ_k m_k log(m_k/V).

    The unknowns are the masses themselves, with the residual r(m) = m − G(m), G(m) = softmax(−Φ[m]/τ), and the
    masses returned are G(m) at the last iterate: positive, summing to one to rounding, whatever the iterate. The
    root is found by optimistix from the Gibbs state of the initial guess's potential, G(m₀) (already the answer for
    an energy linear in ρ):

    1. `optx.Newton` (quadratic convergence near the root). Its Jacobian I + (diag(G) − G Gᵀ)(∂Φ/∂m)/τ is never
       formed beyond `dense_cells` cells: there lineax's GMRES solves the Newton systems from Jacobian-vector
       products. For the two-layer flow ∂Φ/∂m has rank at most the number of training points, so GMRES converges in
       that many iterations.
    2. If Newton fails (it diverges when Φ[m] varies by many τ over the grid: small temperatures), `optx.Dogleg`, a
       trust-region method on ½|r|² that cannot diverge, from the same start. Slower: it takes shorter steps while
       far from the root.

    A root finder passed to `solve` is used alone, as given. (Newton on log-masses, or descent on the free energy
    F(softmax(z)) first, were tried and rejected: the log-masses of nearly empty cells are ill-determined, which
    stalls the descent and throws Newton far off.)

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

    solver_kinds: ClassVar[tuple[type, ...]] = (optx.AbstractRootFinder, optx.AbstractLeastSquaresSolver)
    default_max_steps: ClassVar[int] = 256

    def solve(self, problem: mfpde.StationaryProblem, *, solver=None, rtol: float | None = None,
              atol: float | None = None, max_steps: int | None = None, key=0, throw: bool = False) -> mfpde.Solution:
        """Find the Gibbs state of `problem` (see the class docstring for the method).

        **Arguments:**

        - `problem`: an `mfpde.StationaryProblem` whose flow has τ > 0; `problem.init` is the initial guess.
        - `solver`: an optimistix root finder or least-squares solver, used alone and as given (default:
          `optx.Newton(rtol, atol)`, then `optx.Dogleg(rtol, atol)` if Newton fails).
        - `rtol`, `atol`: tolerances of the default root finders on the masses (default 1e-10 and 1e-10/cells;
          1e-5 and 1e-5/cells in float32).
        - `max_steps`: the iteration budget of each root finder (default 256; a Newton solve that converges takes at
          most a dozen); when it is reached, the last iterate is returned with result `nonlinear_max_steps_reached`.
        - `key`: as for `Grid.solve` (only to estimate how much initial mass falls outside the box).
        - `throw`: raise `mfpde.IntegrationError` (carrying the last iterate) instead of warning on failure.

        **Returns:** an `mfpde.Solution` whose dataset has the density over the gridded axes (no time dimension),
        the flow's observables, risk, entropy and free energy at the fixed point, `residual` (max_k |m_k − G(m)_k|
        at the last iterate), `flux_residual` (the largest |ṁ_k| of the grid dynamics at the returned masses, relative to max m_k),
        `num_steps` (of every root finder tried) and `result` (of the last); the attribute `mass_on_walls` is the
        mass of the cells next to a wall (not periodic). Above the grid's `max_outside` it warns: the box cuts off the
        Gibbs state, and the masses are those of the flow confined to the box.
        """
        return solve_stationary(self, problem, solver=solver, rtol=rtol, atol=atol, max_steps=max_steps, key=key,
                                throw=throw)

    def check(self, problem):
        check_measure_flow(problem, self)
        tau = problem.flow.temperature
        if is_concrete(tau) and not float(tau) > 0:
            raise ValueError(
                f"`temperature` must be > 0 for a Gibbs fixed point, got {float(tau)}; for τ = 0 find particle "
                f"stationary points with solvers.ParticleStationary."
            )

    def default_tolerances(self, problem, dtype):
        tol = 1e-10 if dtype == jnp.float64 else 1e-5
        return tol, tol / math.prod(self.grid.cells)

    def default_solvers(self, problem, rtol, atol):
        dense = math.prod(self.grid.cells) <= self.dense_cells
        linear_solver = (lx.AutoLinearSolver(well_posed=True) if dense
                         else lx.GMRES(rtol=1e-3 * rtol, atol=1e-3 * atol, restart=100))
        return (optx.Newton(rtol=rtol, atol=atol, linear_solver=linear_solver),
                optx.Dogleg(rtol=rtol, atol=atol, linear_solver=linear_solver))

    def discretise(self, problem, key, dtype):
        grid = self.grid
        axes, index, theta, m0, outside, how = grid.discretise_measure(problem, key)
        system = _GridSystem(problem.flow, problem.data, jnp.asarray(theta, dtype), grid.cells, grid.spacing,
                             grid.periodic, grid.cell_volume, grid.chunk_size, tuple(index))
        return _GibbsSystem(system, jnp.asarray(m0, dtype), grid.save_state), (axes, outside, how)

    def layout(self, problem, context, observed, stats, timer, attrs):
        (axes, outside, how), grid, flow = context, self.grid, problem.flow
        on_walls = float(observed.pop("mass_on_walls"))
        if on_walls > grid.max_outside:
            warnings.warn(
                f"GibbsFixedPoint: the cells on the walls of its box hold {on_walls:.2g} of the mass (more than "
                f"`max_outside` = {grid.max_outside:g} of the Grid): the box cuts the Gibbs state off, and what is "
                f"returned is the Gibbs state of the flow confined to the box; enlarge `bounds`.",
                RuntimeWarning, stacklevel=5)
        described, coords = grid_layout(grid, flow, problem.data, axes)
        described |= {
            "residual": ((), {"long_name": "max_k |m_k − softmax(−Φ[m]/τ)_k| at the last iterate", "units": "1"}),
            "flux_residual": ((), {"long_name": "max_k |dm_k/dt| of the grid dynamics at the returned masses, "
                                                "relative to max_k m_k", "units": "1"}),
        }
        variables = {name: (described[name][0], np.asarray(values), described[name][1]) for name, values in observed.items()}
        attrs |= {"axes": list(axes), "cell_volume": grid.cell_volume, "initial_mass_outside": outside,
                  "initial_mass_outside_method": how, "mass_on_walls": on_walls}
        return make_dataset(variables=variables, coords=coords, problem=problem, algorithm=self,
                            stats={k: np.asarray(v) for k, v in stats.items()}, timing=timer, attrs=attrs,
                            title=f"{type(flow).__name__} Gibbs state, grid {'×'.join(map(str, grid.cells))}")


def _gibbs_map(system: _GridSystem, m):
    """G(m) = softmax(−Φ[m]/τ) over all cells (flat)."""
    phi = system.potential(m.reshape(system.cells)).reshape(-1)
    return jax.nn.softmax(-phi / system.tau)


class _GibbsSystem(AbstractStationarySystem):
    """The residual r(m) = m − G(m) of the grid's masses, from G(m₀)."""

    grid: _GridSystem
    m0: jax.Array
    save_state: bool = eqx.field(static=True)

    def find(self, solver, max_steps):
        system = self.grid
        start = _gibbs_map(system, self.m0.reshape(-1))
        sol = optx.root_find(lambda m, _: m - _gibbs_map(system, m), solver, start, max_steps=max_steps, throw=False)
        masses = _gibbs_map(system, sol.value)
        m = masses.reshape(system.cells)
        rate = sg_rate(m, system.potential(m), system.tau, system.spacing, system.periodic)
        observed = dict(system.observe(None, m, save=self.save_state))
        observed.update(residual=jnp.max(jnp.abs(sol.value - masses)), flux_residual=jnp.max(jnp.abs(rate)) / jnp.max(m),
                        mass_on_walls=_wall_mass(m, system.periodic))
        return observed, {"num_steps": sol.stats["num_steps"], "result": result_code(sol.result)}


def _wall_mass(m, periodic):
    """The mass of the cells next to a wall: the first and last cells along every axis that is not periodic."""
    walls = np.zeros(m.shape, bool)
    for axis, per in enumerate(periodic):
        if not per:
            walls[(slice(None),) * axis + (0,)] = walls[(slice(None),) * axis + (-1,)] = True
    return jnp.sum(jnp.where(walls, m, 0.0))
