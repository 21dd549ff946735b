"""The dual lower bound of a convex mean-field energy, from the infimum of its first variation."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx

from ._solution import result_code


def first_variation(flow, theta, masses, data, *, chunk_size=None):
    """Φ[ρ] as a function of new points: Φ[ρ](θ') = ∂R(ρ + m δ_θ')/∂m at m = 0, for ρ = Σ_j m_j δ_{θ_j}.

    It is the potential a neuron placed at θ' feels, the derivative by which every discretisation of a flow moves
    (`flows.AbstractFlow`): it needs R only on weighted empirical measures.

    **Arguments:**

    - `flow`: an `mfpde.flows.AbstractFlow`.
    - `theta`, `masses`: the particles of ρ, shapes (N, p) and (N,).
    - `data`: the flow's data.
    - `chunk_size`: passed to `flow.energy`.

    **Returns:** a function of points (M, p) returning Φ[ρ] at each, shape (M,).
    """

    def potential(points):
        def energy(new_masses):
            return flow.energy(jnp.concatenate([theta, points]), jnp.concatenate([masses, new_masses]), data,
                               chunk_size=chunk_size)
        return jax.grad(energy)(jnp.zeros(points.shape[0], theta.dtype))

    return potential


def _on_sphere(z, sphere: bool):
    return z / jnp.linalg.norm(z, axis=-1, keepdims=True) if sphere else z


def _infimum(potential, starts, sphere: bool, polish: int, solver, max_steps: int):
    """min over θ of `potential` (over the unit sphere |θ| = 1 when `sphere`), searched from many starts: Φ is
    evaluated at every start, and the `polish` best are minimised by the optimistix `solver`, vmapped, in the
    unnormalised coordinate z with θ = z/|z| on the sphere. Returns the smallest value found, the point where it was
    reached, and the result code of the minimisations (0 when any succeeded)."""
    starts = _on_sphere(starts, sphere)
    values = potential(starts)
    best = jnp.argsort(jnp.where(jnp.isnan(values), jnp.inf, values))[:polish]

    def phi(z, _):
        return potential(_on_sphere(z, sphere)[None])[0]

    sols = jax.vmap(lambda z: optx.minimise(phi, solver, z, max_steps=max_steps, throw=False))(starts[best])
    points = _on_sphere(sols.value, sphere)
    polished = jnp.where(sols.result == optx.RESULTS.successful, potential(points), jnp.inf)
    candidates = jnp.concatenate([polished, values])
    i = jnp.argmin(jnp.where(jnp.isnan(candidates), jnp.inf, candidates))
    failed = jnp.all(sols.result != optx.RESULTS.successful)
    code = jnp.where(failed, result_code(sols.result)[0], 0)
    return candidates[i], jnp.concatenate([points, starts])[i], code


@eqx.filter_jit
def lower_bound(flow, theta, masses, data, starts, *, polish: int, solver, max_steps: int) -> dict:
    """The convexity bound on min R at the candidate ρ = Σ_j m_j δ_{θ_j}:

        R(ρ*) ≥ R(ρ) − ∫Φ[ρ] dρ + inf_{ρ*} ∫Φ[ρ] dρ*,

    where the last term is inf_θ Φ[ρ](θ) over probability measures, or, when Φ is 2-homogeneous
    (`flow.homogeneous`), M·min(0, min_{|θ|=1} Φ) over the measures with ∫|θ|² dρ* ≤ M
    (`flow.second_moment_bound`), which hold every ρ* with R(ρ*) ≤ R(ρ).

    **Returns:** a dict of `objective` R(ρ), `lower_bound`, `mean_potential` ∫Φ dρ, `potential_min` (the infimum
    found), `feature` (where), `result` (the search's code) and the particles' `velocity`.
    """
    sphere = flow.homogeneous(data)
    potential = first_variation(flow, theta, masses, data)
    minimum, feature, code = _infimum(potential, starts, sphere, polish, solver, max_steps)
    energy = flow.energy(theta, masses, data)
    mean_potential = jnp.sum(masses * potential(theta))
    if sphere:
        minimum_over = jnp.where(minimum < 0, flow.second_moment_bound(energy, data) * minimum, 0.0)
    else:
        minimum_over = minimum
    return {"objective": energy, "lower_bound": energy - mean_potential + minimum_over, "mean_potential": mean_potential,
            "potential_min": minimum, "feature": feature, "result": code,
            "velocity": flow.velocity(0.0, theta, masses, data)}


def starts(theta: np.ndarray, number: int, sphere: bool, key) -> np.ndarray:
    """Where the search for inf Φ starts: the particles themselves, `number` Gaussian draws at twice the particles'
    scale per coordinate, and, in dimension p ≤ 2, a grid (on the circle when `sphere`; else on the box of three
    times the particles' extent), which makes the search exhaustive up to the grid's spacing."""
    N, p = theta.shape
    scale = np.sqrt(np.mean(theta**2, axis=0))
    scale = 2 * np.where(scale > 0, scale, 1.0)
    draws = np.asarray(jax.random.normal(key, (number, p), jnp.float64 if theta.dtype == np.float64 else jnp.float32))
    points = [theta, draws * scale]
    if sphere and p == 1:
        points.append(np.array([[1.0], [-1.0]]))
    elif sphere and p == 2:
        angle = np.linspace(0, 2 * np.pi, 1024, endpoint=False)
        points.append(np.stack([np.cos(angle), np.sin(angle)], axis=1))
    elif p <= 2:
        extent = 3 * np.max(np.abs(theta), axis=0) + 1.0
        axes = [np.linspace(-e, e, 1024 if p == 1 else 64) for e in extent]
        points.append(np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, p))
    if sphere:
        points[0] = theta[np.linalg.norm(theta, axis=1) > 0]
    return np.concatenate(points).astype(theta.dtype)
