"""Algorithms that discretise and solve `mfpde` problems, one per module."""

from ._driver import AbstractIntegrationAlgorithm as AbstractIntegrationAlgorithm
from .particles import Particles as Particles
from .units import Units as Units
from .grid import Grid as Grid
from .gibbs import GibbsFixedPoint as GibbsFixedPoint
from .particle_stationary import ParticleStationary as ParticleStationary
from .convex import Convex as Convex
from ._batches import MaxRMSNorm as MaxRMSNorm
from ._integrate import PredictableSteps as PredictableSteps
