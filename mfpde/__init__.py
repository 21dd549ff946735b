"""mfpde: solvers for the measure-valued PDEs of mean-field neural-network training.

Problems live here (flows, data, initial measures, `FlowProblem`); algorithms live in the `solvers` package.
"""

import importlib.metadata

from . import activations as activations, datasets as datasets, flows as flows, losses as losses, measures as measures
from ._algorithm import AbstractAlgorithm as AbstractAlgorithm, solve as solve
from ._certify import certify as certify
from ._dataset import Dataset as Dataset
from ._ensemble import EnsembleProblem as EnsembleProblem
from ._problem import (
    AbstractProblem as AbstractProblem,
    FlowProblem as FlowProblem,
    StationaryProblem as StationaryProblem,
    remake as remake,
)
from ._repopulate import repopulate as repopulate
from ._solution import IntegrationError as IntegrationError, Solution as Solution, load as load

try:
    __version__ = importlib.metadata.version("mfpde")
except importlib.metadata.PackageNotFoundError:
    __version__ = "0+unknown"
