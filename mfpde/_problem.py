import dataclasses
import inspect

import equinox as eqx
import jax.numpy as jnp
from jaxtyping import Array, Float

from ._checks import as_float_array, is_concrete
from ._dataset import Dataset
from ._population import Population
from .flows import AbstractMeanFieldFlow
from .measures import AbstractMeasure


class AbstractProblem(eqx.Module):
    """What is to be solved, independently of how (the algorithms live in `solvers`)."""


def _tspan(value):
    try:
        t0, t1 = value
    except (TypeError, ValueError):
        raise ValueError(f"`tspan` must be a pair (t0, t1), got {value!r}.") from None
    return as_float_array(t0, "tspan[0]", "FlowProblem"), as_float_array(t1, "tspan[1]", "FlowProblem")


class FlowProblem(AbstractProblem):
    """The initial-value problem of a measure dynamics: ρ(t0) = ρ₀, evolved by `flow` on `data` up to t1.

    **Arguments:**

    - `flow`: an `mfpde.flows.AbstractMeanFieldFlow`: a flow on measures (`AbstractFlow`, e.g. `flows.TwoLayer`) or
      a layered one (`AbstractLayeredFlow`, e.g. `flows.Multilayer`).
    - `data`: an `mfpde.Dataset` or `mfpde.Population` (None for data-free flows such as `flows.Potential`).
    - `init`: the initial measure, an `mfpde.measures.AbstractMeasure`.
    - `tspan`: (t0, t1) in mean-field time units, t1 > t0.
    """

    flow: AbstractMeanFieldFlow
    data: Dataset | Population | None
    init: AbstractMeasure
    tspan: tuple[Float[Array, ""], Float[Array, ""]] = eqx.field(converter=_tspan)

    def __check_init__(self):
        if not isinstance(self.flow, AbstractMeanFieldFlow):
            raise TypeError(f"`flow` must be an mfpde.flows flow, got {type(self.flow).__name__}.")
        if not isinstance(self.init, AbstractMeasure):
            raise TypeError(f"`init` must be an mfpde.measures measure, got {type(self.init).__name__}.")
        if self.data is not None and not isinstance(self.data, (Dataset, Population)):
            raise TypeError(f"`data` must be an mfpde.Dataset, an mfpde.Population or None, got {type(self.data).__name__}.")
        self.flow.check_data(self.data)
        t0, t1 = self.tspan
        if is_concrete(t0) and is_concrete(t1) and not bool(t1 > t0):
            raise ValueError(f"`tspan` must have t1 > t0, got ({float(t0)}, {float(t1)}).")


class StationaryProblem(AbstractProblem):
    """A stationary point of a measure dynamics: ρ with ∂_t ρ = 0 under `flow` on `data`.

    For τ > 0 the self-consistent Gibbs state ρ = exp(−Φ[ρ]/τ)/Z (`solvers.GibbsFixedPoint`, on a grid); for τ = 0
    a measure whose particles do not move, ∇_θ Φ[ρ] = 0 on its support (`solvers.ParticleStationary`).

    **Arguments:**

    - `flow`: an `mfpde.flows.AbstractFlow`, or a feature flow for `solvers.Convex`.
    - `data`: an `mfpde.Dataset` or `mfpde.Population` (None for data-free flows such as `flows.Potential`).
    - `init`: the initial guess, an `mfpde.measures.AbstractMeasure` (the grid masses or particles the solver starts
      its iteration from).
    """

    flow: AbstractMeanFieldFlow
    data: Dataset | Population | None
    init: AbstractMeasure

    def __check_init__(self):
        if not isinstance(self.flow, AbstractMeanFieldFlow):
            raise TypeError(f"`flow` must be an mfpde.flows flow, got {type(self.flow).__name__}.")
        if not isinstance(self.init, AbstractMeasure):
            raise TypeError(f"`init` must be an mfpde.measures measure, got {type(self.init).__name__}.")
        if self.data is not None and not isinstance(self.data, (Dataset, Population)):
            raise TypeError(f"`data` must be an mfpde.Dataset, an mfpde.Population or None, got {type(self.data).__name__}.")
        self.flow.check_data(self.data)


def _fields(obj) -> list[str]:
    return [f.name for f in dataclasses.fields(obj)] if dataclasses.is_dataclass(obj) else []


def _resolve(obj, name: str) -> list[str]:
    if "." in name:
        path = name.split(".")
        node = obj
        for part in path:
            if part not in _fields(node):
                raise ValueError(f"`{name}`: {type(node).__name__} has no field {part!r}.")
            node = getattr(node, part)
        return path
    if name in _fields(obj):
        return [name]
    owners = [f for f in _fields(obj) if isinstance(getattr(obj, f), eqx.Module) and name in _fields(getattr(obj, f))]
    if len(owners) == 1:
        return [owners[0], name]
    if len(owners) > 1:
        raise ValueError(f"`{name}` is ambiguous: it is a field of {owners}; write e.g. '{owners[0]}.{name}'.")
    raise ValueError(f"`{name}` is not a field of {type(obj).__name__} nor of its parts {_fields(obj)}.")


def _replace(obj, path: list[str], value):
    """`obj` with the field at `path` set to `value`, through the owner's constructor so that its converters and
    checks run on the new value as at construction."""
    head, *rest = path
    new = value if not rest else _replace(getattr(obj, head), rest, value)
    parameters = inspect.signature(type(obj)).parameters
    if head in parameters and parameters[head].kind is not inspect.Parameter.VAR_KEYWORD:
        return dataclasses.replace(obj, **{head: new})
    if isinstance(new, dict) and any(p.kind is p.VAR_KEYWORD for p in parameters.values()):
        # built from keyword arrays, e.g. measures.Particles(u=..., w=..., masses=...)
        return type(obj)(**{f: getattr(obj, f) for f in _fields(obj) if f != head}, **new)
    raise ValueError(f"`{head}` of {type(obj).__name__} is not an argument of its constructor and cannot be changed.")


def remake(problem, **changes):
    """A copy of `problem` with some fields changed, e.g. `remake(prob, temperature=0.1, tspan=(0, 10))`.

    A name is looked up among the problem's fields, then among the fields of its parts (flow, data, init, ...);
    a dotted path (`"flow.l2"`, `"init.std"`) names one exactly. Numbers become JAX arrays of the same structure,
    so solving the new problem reuses the compiled program of the old one.
    """
    for name, value in changes.items():
        problem = _replace(problem, _resolve(problem, name), value)
    return problem
