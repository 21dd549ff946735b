"""Initial cell masses of the grid solver from an `mfpde.measures` measure, with the checks on the box."""

import math

import jax
import jax.numpy as jnp
import numpy as np
from scipy.special import ndtr

from mfpde.extend import coordinate_vector
from mfpde.measures import Gaussian, GaussianRadius, Particles, Product, Uniform

_MONTE_CARLO_SAMPLES = 2**20


def _marginal_cdf(measure, groups: dict[str, int], index: int):
    """The CDF of coordinate `index` (of all coordinates, groups in order) under `measure`, when the measure makes
    the coordinates independent with a known marginal (Gaussian, Uniform, GaussianRadius, Product of those); else
    None."""
    p = sum(groups.values())
    if isinstance(measure, Gaussian):
        mean = float(np.asarray(coordinate_vector(measure.mean, p, "Gaussian", "mean"))[index])
        std = float(np.asarray(coordinate_vector(measure.std, p, "Gaussian", "std"))[index])
        if std == 0:
            return lambda x: (np.asarray(x) >= mean).astype(float)
        return lambda x: ndtr((np.asarray(x) - mean) / std)
    if isinstance(measure, Uniform):
        low = float(np.asarray(coordinate_vector(measure.low, p, "Uniform", "low"))[index])
        high = float(np.asarray(coordinate_vector(measure.high, p, "Uniform", "high"))[index])
        return lambda x: np.clip((np.asarray(x) - low) / (high - low), 0.0, 1.0)
    if isinstance(measure, GaussianRadius):
        return measure.cdf
    if isinstance(measure, Product):
        start = 0
        for name, size in groups.items():
            if index < start + size:
                if name not in measure.groups:
                    return None
                return _marginal_cdf(measure.groups[name], {name: size}, index - start)
            start += size
    return None


def initial_masses(init, groups: dict[str, int], gridded: tuple[int, ...], edges: list[np.ndarray],
                   theta_nodes: np.ndarray, cell_volume: float, key) -> tuple[np.ndarray, float, str]:
    """Cell masses (summing to one) of `init` on the grid, the fraction of its mass outside the box, and how that
    fraction was found.

    - Independent coordinates with known marginals (Gaussian, Uniform, GaussianRadius, Product of those): exact cell
      probabilities, products of CDF differences along the gridded axes (the other coordinates are held fixed by the
      grid, so only the marginal of the gridded ones matters); the outside fraction is exact.
    - An explicit `measures.Particles`: the histogram of the particles' masses (normalised) over the cells; the
      outside fraction is the fraction of mass outside the box.
    - Any other measure: its density at the nodes times the cell volume, from `log_density`; the outside fraction is
      estimated from samples when the measure can be sampled, else from the quadrature 1 − Σ ρ(θ_k) V.
    """
    cells = tuple(len(e) - 1 for e in edges)
    cdfs = [_marginal_cdf(init, groups, i) for i in gridded]
    if all(cdf is not None for cdf in cdfs):
        masses = np.ones(())
        inside = 1.0
        for cdf, e in zip(cdfs, edges):
            values = cdf(e)
            masses = np.multiply.outer(masses, np.diff(values))
            inside *= float(values[-1] - values[0])
        return masses, max(1.0 - inside, 0.0), "exact"
    if isinstance(init, Particles):
        sampled = init.sample(jax.random.key(0), init.n, groups)
        theta = np.concatenate([np.asarray(sampled[g]).reshape(init.n, -1) for g in groups], axis=1)[:, list(gridded)]
        weights = np.full(init.n, 1.0 / init.n) if init.masses is None else np.asarray(init.masses) / float(np.sum(init.masses))
        counts, _ = np.histogramdd(theta, bins=edges, weights=weights)
        inside = np.all([(theta[:, a] >= e[0]) & (theta[:, a] <= e[-1]) for a, e in enumerate(edges)], axis=0)
        return counts.reshape(cells), 1.0 - float(np.sum(weights[inside])), f"counted over {init.n} particles"
    try:
        log_density = np.asarray(init.log_density(jnp.asarray(theta_nodes), groups), dtype=float)
    except NotImplementedError:
        raise ValueError(f"`init`: {type(init).__name__} has no density to put on a grid.") from None
    if log_density.shape != (theta_nodes.shape[0],):
        raise ValueError(f"`init`: log_density returned shape {log_density.shape}, expected ({theta_nodes.shape[0]},).")
    bad = np.isnan(log_density) | np.isposinf(log_density)
    if bad.any():
        raise ValueError(
            f"`init`: the initial density is negative or undefined (log_density NaN or +inf) at {int(bad.sum())} of "
            f"{bad.size} grid nodes; a density must be finite and non-negative."
        )
    masses = (np.exp(log_density) * cell_volume).reshape(cells)
    try:
        sampled = init.sample(key, _MONTE_CARLO_SAMPLES, groups)
        theta = np.concatenate([np.asarray(sampled[g]).reshape(_MONTE_CARLO_SAMPLES, -1) for g in groups], axis=1)
        theta = theta[:, list(gridded)]
        inside = np.all([(theta[:, a] >= e[0]) & (theta[:, a] <= e[-1]) for a, e in enumerate(edges)], axis=0)
        return masses, 1.0 - float(np.mean(inside)), f"estimated from {_MONTE_CARLO_SAMPLES} samples"
    except NotImplementedError:
        return masses, max(1.0 - float(masses.sum()), 0.0), "estimated by quadrature"


def check_masses(masses: np.ndarray, outside: float, how: str, max_outside: float, bounds) -> np.ndarray:
    """Refuse a box that misses more than `max_outside` of the initial mass, or masses that are not non-negative."""
    if outside > max_outside:
        raise ValueError(
            f"`bounds`: {outside:.3g} of the initial mass lies outside the grid box {bounds} ({how}); the grid must "
            f"hold all but at most {max_outside:g} of it. Widen `bounds`."
        )
    if not np.all(np.isfinite(masses)) or np.any(masses < 0):
        raise ValueError(f"`init`: the initial density has {int(np.sum(~(masses >= 0)))} negative or NaN cell values.")
    total = float(masses.sum())
    if not total > 0 or not math.isfinite(total):
        raise ValueError(f"`init`: the initial measure puts no mass on the grid box {bounds}.")
    return masses / total

