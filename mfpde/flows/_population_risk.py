"""The population risk of a two-layer network: a quadratic form in the measure of its neurons."""

import jax
import jax.numpy as jnp
from jaxtyping import Array, Float, Scalar

from .._gaussian import HOMOGENEOUS, gaussian_mean, gaussian_product, has_closed_form
from .._population import Population

# Pair evaluations per block of the O(N²) interaction (times the quadrature nodes of each pair): ~32 MiB in float64.
_PAIRS_PER_BLOCK = 2**22


def _nodes(activation_a: str, activation_b: str, centred: bool, quadrature: int | None) -> int:
    if not has_closed_form(activation_a, activation_b):
        return quadrature**2
    return 1 if centred or "identity" in (activation_a, activation_b) else 32


def check_population(activation: str, population: Population, loss: str) -> None:
    """Raise a ValueError naming `data` when the population risk of this network cannot be evaluated."""
    if loss != "squared":
        raise ValueError(f"A Population `data` needs the squared loss (its risk is a quadratic form); got loss={loss!r}.")
    pairs = [(activation, activation)]
    if population.teacher is not None:
        pairs += [(population.teacher.activation, activation), (population.teacher.activation,) * 2]
    missing = sorted({p for p in pairs if not has_closed_form(*p)})
    if missing and population.quadrature is None:
        raise ValueError(f"The population risk needs E[σ_a σ_b] for activation pairs {missing}, which have no closed "
                         "form; pass `quadrature=<Gauss–Hermite order>` (e.g. 32) to the Population `data`.")


def uses_quadrature(activation: str, population: Population) -> bool:
    """Whether any kernel of this risk is evaluated by Gauss–Hermite quadrature (then its error is reported)."""
    teacher = () if population.teacher is None else (population.teacher.activation,)
    return any(not has_closed_form(a, b) for a in (activation, *teacher) for b in (activation, *teacher))


def _pairwise_sum(kernel, weights: Float[Array, "N k"], stats: tuple[Array, ...], block: int) -> Scalar:
    """Σ_{j,l} (a_j · a_l) K(s_j, s_l) over row blocks of `block` particles: memory O(N·block), also for gradients.

    `stats` holds per-particle arrays (leading axis N) that `kernel(rows, all)` turns into a (rows, N) matrix. Blocks
    written out: `jax.lax.map(row function, ..., batch_size=block)` measured 10 % slower (benchmarks/RESULTS.md,
    "Chunked maps").
    """
    N = weights.shape[0]
    if block >= N:
        return jnp.sum((weights @ weights.T) * kernel(stats, stats))
    n_blocks = -(-N // block)
    pad = n_blocks * block - N

    def blocks(x, fill):  # padding rows: `fill` (zero weights; row 0's finite statistics)
        x = jnp.concatenate([x, jnp.broadcast_to(fill, (pad, *x.shape[1:]))])
        return x.reshape(n_blocks, block, *x.shape[1:])

    rows = (blocks(weights, jnp.zeros((), weights.dtype)), *(blocks(s, s[:1]) for s in stats))

    def one_block(args):
        a_rows, *row_stats = args
        return jnp.sum((a_rows @ weights.T) * kernel(tuple(row_stats), stats))

    return jnp.sum(jax.lax.map(jax.checkpoint(one_block), rows))


def population_loss(theta: Float[Array, "N p"], masses: Float[Array, " N"], population: Population, *, activation: str,
                    alpha, bias: bool, chunk_size: int | None = None, quadrature: int | None = None) -> Scalar:
    """½ E|f(x; ρ) − y|² for ρ = Σ_j m_j δ_{θ_j} and (x, y) ~ `population`, expanded as

        R₀ − α Σ_j m_j u_j · V_j + ½ α² Σ_{j,l} m_j m_l (u_j · u_l) U_{jl},

        V_j = Σ_c π_c (y_c g_c(θ_j) + Σ_t a_t E_c[σ*(z_t) σ(z_j)]),   U_{jl} = Σ_c π_c E_c[σ(z_j) σ(z_l)],
        R₀ = ½ Σ_c π_c E_c|y_c + f*(x)|² + ½ k noise²,

    with z_j = w_j · x + b_j Gaussian under component c: mean w_j · μ_c + b_j, covariance w_jᵀ Σ_c w_l.

    **Arguments:**

    - `theta`, `masses`: the particles (u, w[, b]) and their masses.
    - `population`: the data distribution.
    - `activation`, `alpha`, `bias`: the network's σ, output scale and whether θ carries a bias.
    - `chunk_size`: particles per block of the pairwise sum (automatic when None: about 4·10⁶ pair evaluations).
    - `quadrature`: Gauss–Hermite order for pairs without closed form (default: the population's).
    """
    k, d = population.k, population.d
    q = population.quadrature if quadrature is None else quadrature
    N = theta.shape[0]
    u, w = theta[:, :k], theta[:, k : k + d]
    b = theta[:, k + d] if bias else jnp.zeros(N, theta.dtype)
    a = alpha * masses[:, None] * u  # α m_j u_j
    teacher = population.teacher
    centred = population.centred and not bias
    block = chunk_size or max(1, _PAIRS_PER_BLOCK // (N * _nodes(activation, activation, centred, q)))

    def kernel(act_a, act_b, centred):
        def K(rows, cols):
            (w_r, m_r, v_r), (w_c, m_c, v_c) = rows, cols
            return gaussian_product(act_a, act_b, m_r[:, None], v_r[:, None], m_c[None], v_c[None], w_r @ w_c.T,
                                    centred=centred, quadrature=q)
        return K

    total = 0.5 * k * population.noise**2
    # Centred, isotropic components and a homogeneous σ: U_c = s_c^{2p} U_1, one O(N²) kernel for all components.
    shared = centred and population.scales is not None and activation in HOMOGENEOUS
    if shared:
        factor = sum(pi * s ** (2 * HOMOGENEOUS[activation]) for pi, s in zip(population.weights, population.scales))
        total += 0.5 * factor * _pairwise_sum(kernel(activation, activation, True), a, (w, jnp.zeros(N, w.dtype), jnp.sum(w**2, 1)), block)
    for c in range(population.components):
        L, mu, y_c = population.cholesky[c], population.means[c], population.labels[c]
        w_c = w @ L  # z_j − mean_j = (Lᵀ w_j) · ξ,  ξ ~ N(0, I)
        student = (w_c, w @ mu + b, jnp.sum(w_c**2, axis=1))
        linear = gaussian_mean(activation, student[1], student[2], quadrature=q)[:, None] * y_c
        constant = 0.5 * jnp.sum(y_c**2)
        if teacher is not None:
            t_c = teacher.directions @ L
            t_stats = (t_c, teacher.directions @ mu + teacher.biases, jnp.sum(t_c**2, axis=1))
            both = population.centred and teacher.centred
            linear += kernel(teacher.activation, activation, both and not bias)(t_stats, student).T @ teacher.weights
            g_t = gaussian_mean(teacher.activation, t_stats[1], t_stats[2], quadrature=q)
            constant += jnp.sum(y_c * (g_t @ teacher.weights))
            constant += 0.5 * _pairwise_sum(kernel(teacher.activation, teacher.activation, both), teacher.weights, t_stats,
                                            teacher.weights.shape[0])
        pair = 0.0 if shared else _pairwise_sum(kernel(activation, activation, centred), a, student, block)
        total += population.weights[c] * (constant - jnp.sum(a * linear) + 0.5 * pair)
    return total
