"""Pointwise losses ℓ(f, y), summed over the k outputs of one training point."""

from collections.abc import Callable

import jax
import jax.numpy as jnp
import numpy as np


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


def check_labels(name: str, data, flow: str) -> None:
    """Refuse labels the loss `name` is not defined for: the logistic loss takes y ∈ {−1, +1} (in `data.y` and
    `data.y_test`); {0, 1} labels are refused with the map 2y − 1 that makes them ±1. Traced labels are not checked."""
    if name != "logistic":
        return
    for field in ("y", "y_test"):
        y = getattr(data, field, None)
        if y is None or isinstance(y, jax.core.Tracer):
            continue
        values = np.unique(np.asarray(y))
        if not np.isin(values, (-1.0, 1.0)).all():
            hint = " ({0, 1} labels: pass 2y − 1)" if np.isin(values, (0.0, 1.0)).all() else ""
            shown = ", ".join(f"{v:g}" for v in values[:5]) + (", ..." if len(values) > 5 else "")
            raise ValueError(f"`data.{field}` of a {flow} flow with loss='logistic' must hold labels in {{-1, +1}}{hint}; "
                             f"got values {shown}.")
