import itertools

import equinox as eqx
import numpy as np

from ._problem import AbstractProblem, FlowProblem, remake


def _values(name: str, values) -> np.ndarray:
    """The values of one swept parameter, one per point along the first axis (rows for a vector parameter)."""
    try:
        array = np.asarray(list(values) if not isinstance(values, np.ndarray) else values)
    except ValueError:
        raise ValueError(f"sweep `{name}`: the values must all have the same shape.") from None
    if array.ndim == 0 or array.size == 0:
        raise ValueError(f"sweep `{name}` must be a non-empty sequence of values, got shape {array.shape}.")
    if not np.issubdtype(array.dtype, np.number):
        raise TypeError(f"sweep `{name}` must hold numbers, got dtype {array.dtype}.")
    if name == "seed" and (array.ndim != 1 or not np.issubdtype(array.dtype, np.integer)):
        raise TypeError(f"sweep `seed` must be a 1-D sequence of integers, got {array.dtype} of shape {array.shape}.")
    return array


class EnsembleProblem(AbstractProblem):
    """A problem and a sweep of its parameters: SciML's ensemble problem.

    **Arguments:**

    - `problem`: the base `FlowProblem`.
    - `sweep`: parameter name → values, one value per point (for a vector parameter such as the per-layer
      learning-rate multipliers `"rates"` of `flows.Multilayer`, one row per point). Names are those of `mfpde.remake` (`"temperature"`, `"l2"`, `"init.std"`,
      `"flow.alpha"`, `"tspan"` excluded), `"seed"` (the PRNG seed of the initial particles and the noise), and
      `"algorithm.<field>"` for a field of the algorithm (checked by the algorithm: e.g. `Particles` batches
      `"algorithm.dt"` and runs one compiled program per width for `"algorithm.n"`).
    - `product`: True for the product grid of all values (one result dimension per parameter, in the order given);
      False to zip them (equal lengths; one dimension `point`).

    Every point shares the base problem's structure (shapes, static fields), so an algorithm can run them all in one
    compiled program, batched. Values are checked by building each point's problem before anything is compiled.
    """

    problem: FlowProblem
    sweep: dict[str, np.ndarray]
    product: bool = eqx.field(static=True, default=True)

    def __init__(self, problem: FlowProblem, sweep: dict, product: bool = True):
        if not isinstance(problem, FlowProblem):
            raise TypeError(f"`problem` must be an mfpde.FlowProblem, got {type(problem).__name__}.")
        if not isinstance(sweep, dict) or not sweep:
            raise ValueError("`sweep` must be a non-empty dict of parameter name → values.")
        sweep = {str(name): _values(name, values) for name, values in sweep.items()}
        if "tspan" in sweep:
            raise ValueError("`sweep` cannot change `tspan`: the points share their save times.")
        if not product and len({len(v) for v in sweep.values()}) > 1:
            raise ValueError(f"`sweep` values must have equal lengths when zipped (product=False), got "
                             f"{ {k: len(v) for k, v in sweep.items()} }.")
        self.problem, self.sweep, self.product = problem, sweep, bool(product)
        for point in self.points():
            self.point_problem(point)

    @property
    def shape(self) -> tuple[int, ...]:
        """The shape of the result's sweep dimensions."""
        return tuple(len(v) for v in self.sweep.values()) if self.product else (len(next(iter(self.sweep.values()))),)

    @property
    def dims(self) -> tuple[str, ...]:
        """The names of the result's sweep dimensions."""
        return tuple(name.replace(".", "_") for name in self.sweep) if self.product else ("point",)

    def points(self) -> list[dict]:
        """Every point of the sweep, in C order of `shape`, as parameter name → value."""
        names = list(self.sweep)
        combos = itertools.product(*self.sweep.values()) if self.product else zip(*self.sweep.values())
        return [dict(zip(names, combo)) for combo in combos]

    def point_problem(self, point: dict) -> FlowProblem:
        """The FlowProblem of one point (its seed and algorithm fields, if swept, are not part of the problem)."""
        return remake(self.problem, **{k: v for k, v in point.items() if not is_solver_parameter(k)})


def is_solver_parameter(name: str) -> bool:
    """Whether a sweep name belongs to the solve (the seed, or a field of the algorithm) rather than the problem."""
    return name == "seed" or name.startswith("algorithm.")
