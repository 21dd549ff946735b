import abc

import equinox as eqx


class AbstractAlgorithm(eqx.Module):
    """How a problem is discretised and solved. Concrete algorithms live in the `solvers` package."""

    @abc.abstractmethod
    def solve(self, problem, **options):
        """Solve `problem`, returning an `mfpde.Solution`."""


def solve(problem, algorithm: AbstractAlgorithm, **options):
    """Solve `problem` with `algorithm`, e.g. `solve(prob, solvers.Particles(n=4096), saveat=ts, key=key)`.

    **Arguments:**

    - `problem`: an `mfpde.FlowProblem` (or another problem the algorithm accepts).
    - `algorithm`: an algorithm from `solvers`, e.g. `Particles`.
    - `**options`: passed to the algorithm: `saveat`, `key`, diffrax `solver`, `stepsize_controller`,
      `progress_meter`, tolerances, `max_steps`, `throw`. See the algorithm's `solve`.

    **Returns:** an `mfpde.Solution`.
    """
    if not isinstance(algorithm, AbstractAlgorithm):
        raise TypeError(f"`algorithm` must be an algorithm from `solvers`, got {type(algorithm).__name__}.")
    return algorithm.solve(problem, **options)
