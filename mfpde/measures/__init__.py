"""Initial measures ρ₀ over a flow's coordinates."""

from ._base import AbstractMeasure as AbstractMeasure
from ._gaussian import Gaussian as Gaussian
from ._diverse import DiverseFeatures as DiverseFeatures
from ._layers import IIDLayers as IIDLayers
from ._layers_explicit import Layers as Layers
from ._particles import Particles as Particles
from ._product import Product as Product
from ._radius import GaussianRadius as GaussianRadius
from ._uniform import Uniform as Uniform
