"""Flows: the energy (and velocity) of a measure dynamics, one model family per module."""

from ._base import AbstractFlow as AbstractFlow
from ._potential import OrnsteinUhlenbeck as OrnsteinUhlenbeck, Potential as Potential
from ._two_layer import TwoLayer as TwoLayer
