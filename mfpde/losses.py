"""Pointwise losses ℓ(f, y), summed over the k outputs of one training point."""

from collections.abc import Callable

import jax
import jax.numpy as jnp


def squared(f, y):
    """ℓ(f, y) = ½ |f − y|²."""
    return 0.5 * jnp.sum((f - y) ** 2, axis=-1)


def logistic(f, y):
    """ℓ(f, y) = Σ_c log(1 + exp(−y_c f_c)), labels y_c ∈ {−1, +1}."""
    return jnp.sum(jax.nn.softplus(-y * f), axis=-1)


LOSSES: dict[str, Callable] = {"squared": squared, "logistic": logistic}


def get(name: str, argument: str = "loss") -> Callable:
    """The loss called `name`; a ValueError naming `argument` for an unknown one."""
    try:
        return LOSSES[name]
    except (KeyError, TypeError):
        raise ValueError(f"Unknown `{argument}` {name!r}; choose one of {sorted(LOSSES)}.") from None
