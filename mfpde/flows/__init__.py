"""Flows: the energy (and velocity) of a measure dynamics, one model family per module."""

from ._base import (
    AbstractFlow as AbstractFlow,
    AbstractLayeredFlow as AbstractLayeredFlow,
    AbstractMeanFieldFlow as AbstractMeanFieldFlow,
)
from ._birth_death import BirthDeath as BirthDeath
from ._feature_dnn import FeatureDNN as FeatureDNN
from ._feature_resnet import FeatureResNet as FeatureResNet
from ._features import AbstractFeatureFlow as AbstractFeatureFlow
from ._multilayer import Multilayer as Multilayer
from ._potential import OrnsteinUhlenbeck as OrnsteinUhlenbeck, Potential as Potential
from ._radial import RadialTwoLayer as RadialTwoLayer
from ._two_layer import TwoLayer as TwoLayer
