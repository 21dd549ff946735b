"""mfpde: solvers for the measure-valued PDEs of mean-field neural-network training.

Problems live here (flows, data, initial measures, `FlowProblem`); algorithms live in the `solvers` package.

The public names are imported on first use (`mfpde.solve` imports JAX), so that `import mfpde` and the command line's
`mfpde --help` answer at once.
"""

import importlib
import importlib.metadata
import typing

if typing.TYPE_CHECKING:  # what static analysis (type checkers, the API reference) reads; at run time, `__getattr__`
    from . import activations as activations
    from . import datasets as datasets
    from . import flows as flows
    from . import losses as losses
    from . import measures as measures
    from ._algorithm import AbstractAlgorithm as AbstractAlgorithm
    from ._algorithm import solve as solve
    from ._certify import certify as certify
    from ._dataset import Dataset as Dataset
    from ._ensemble import EnsembleProblem as EnsembleProblem
    from ._extrapolate import extrapolate as extrapolate
    from ._population import Population as Population
    from ._problem import AbstractProblem as AbstractProblem
    from ._problem import FlowProblem as FlowProblem
    from ._problem import StationaryProblem as StationaryProblem
    from ._problem import remake as remake
    from ._repopulate import repopulate as repopulate
    from ._solution import IntegrationError as IntegrationError
    from ._solution import Solution as Solution
    from ._solution import load as load

_SUBMODULES = ("activations", "datasets", "flows", "losses", "measures")
_NAMES = {
    "AbstractAlgorithm": "._algorithm", "solve": "._algorithm",
    "certify": "._certify",
    "Dataset": "._dataset",
    "EnsembleProblem": "._ensemble",
    "extrapolate": "._extrapolate",
    "Population": "._population",
    "AbstractProblem": "._problem", "FlowProblem": "._problem", "StationaryProblem": "._problem", "remake": "._problem",
    "repopulate": "._repopulate",
    "IntegrationError": "._solution", "Solution": "._solution", "load": "._solution",
}
__all__ = [
    "AbstractAlgorithm", "AbstractProblem", "Dataset", "EnsembleProblem", "FlowProblem", "IntegrationError",
    "Population", "Solution", "StationaryProblem", "activations", "certify", "datasets", "extrapolate", "flows", "load",
    "losses",
    "measures", "remake", "repopulate", "solve",
]


def __getattr__(name: str):
    if name in _SUBMODULES:
        value = importlib.import_module(f".{name}", __name__)
    elif name in _NAMES:
        value = getattr(importlib.import_module(_NAMES[name], __name__), name)
    else:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    globals()[name] = value  # later look-ups do not come here
    return value


def __dir__():
    return sorted({*globals(), *__all__})


try:
    __version__ = importlib.metadata.version("mfpde")
except importlib.metadata.PackageNotFoundError:
    __version__ = "0+unknown"
