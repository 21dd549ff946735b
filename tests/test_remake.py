"""`remake`: a changed field goes through the owner's constructor, so its checks run as at construction."""

import numpy as np
import pytest

import mfpde


def _problem(flow=None):
    data = mfpde.Dataset(np.zeros((5, 2)), np.zeros(5))
    return mfpde.FlowProblem(flow or mfpde.flows.TwoLayer(), data, mfpde.measures.Gaussian(), (0.0, 1.0))


@pytest.mark.parametrize(
    "changes, error, match",
    [
        ({"temperature": -1}, ValueError, "`temperature` of TwoLayer must be non-negative"),
        ({"temperature": "hot"}, TypeError, "`temperature` of TwoLayer must be a number"),
        ({"l2": [1.0, "x"]}, (TypeError, ValueError), "`l2` of TwoLayer"),
        ({"std": "wide"}, TypeError, "`std` of Gaussian must be a number"),
        ({"tspan": (1.0, 0.0)}, ValueError, "t1 > t0"),
    ],
)
def test_remake_validates_like_the_constructor(changes, error, match):
    with pytest.raises(error, match=match):
        mfpde.remake(_problem(), **changes)


def test_remake_of_a_field_the_constructor_does_not_take_runs_the_checks():
    # measures.Particles is built from **arrays; its `arrays` field is replaced directly, then checked.
    init = mfpde.measures.Particles(u=np.ones(3), w=np.zeros((3, 2)))
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(), mfpde.Dataset(np.zeros((5, 2)), np.zeros(5)), init, (0.0, 1.0))
    new = mfpde.remake(prob, arrays={"u": np.full((3, 1), 2.0), "w": np.ones((3, 2))})
    np.testing.assert_array_equal(new.init.arrays["u"], np.full((3, 1), 2.0))
    with pytest.raises(ValueError, match="`w` of Particles"):
        mfpde.remake(prob, arrays={"u": np.ones((3, 1)), "w": np.ones((4, 2))})
