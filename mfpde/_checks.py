"""Argument checks shared by the problem-side modules: each error names the argument."""

import jax
import jax.numpy as jnp


def is_concrete(x) -> bool:
    """Whether `x` has a value now (is not traced inside `jit` or `vmap`), so that it can be checked in Python."""
    return not isinstance(x, jax.core.Tracer)


def as_float_array(value, argument: str, owner: str, *, nonnegative: bool = False):
    """`value` as a floating JAX array; a clear error naming `argument` when it is not numeric or negative."""
    try:
        array = jnp.asarray(value)
        # A strongly typed float, so that a new value of any Python or NumPy kind hits the same compiled program.
        if not jnp.issubdtype(array.dtype, jnp.floating) or array.weak_type:
            array = jnp.asarray(array, dtype=float)
    except TypeError as e:
        raise TypeError(f"`{argument}` of {owner} must be a number or array, got {type(value).__name__}.") from e
    if nonnegative and not isinstance(array, jax.core.Tracer) and bool(jnp.any(array < 0)):
        raise ValueError(f"`{argument}` of {owner} must be non-negative, got {value}.")
    if not isinstance(array, jax.core.Tracer) and not bool(jnp.all(jnp.isfinite(array))):
        raise ValueError(f"`{argument}` of {owner} must be finite, got {value}.")
    return array
