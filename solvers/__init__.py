"""Algorithms that discretise and solve `mfpde` problems, one per module."""

from .particles import Particles as Particles
