"""Tolerances as traced values: a new value reuses the compiled program."""

import math
import numbers

import jax.numpy as jnp


def tolerance(value, default, name: str, dtype):
    """`value` (or `default` when it is None) as a 0-d array of `dtype`, so that changing it never recompiles.

    0 is a value like any other. A value that is not a finite number ≥ 0 is refused with an error naming `name`."""
    if value is None:
        value = default
    if isinstance(value, bool) or not isinstance(value, (numbers.Real, jnp.ndarray)) or jnp.ndim(value) != 0:
        raise TypeError(f"`{name}` must be a number, got {value!r}.")
    if not math.isfinite(float(value)) or float(value) < 0:
        raise ValueError(f"`{name}` must be a finite number ≥ 0, got {float(value)!r}.")
    return jnp.asarray(value, dtype)
