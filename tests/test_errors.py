"""Bad input: a clear error naming the argument, raised before the solve is compiled."""

import diffrax
import numpy as np
import optimistix as optx
import pytest

import mfpde
import solvers
from solvers import Particles


pytestmark = pytest.mark.usefixtures("no_integration")


def _data():
    return mfpde.Dataset(np.zeros((5, 2)), np.zeros(5))


def _problem(**flow):
    return mfpde.FlowProblem(mfpde.flows.TwoLayer(**flow), _data(), mfpde.measures.Gaussian(), (0.0, 1.0))


def _study():
    return mfpde.EnsembleProblem(_problem(), {"l2": [0.0, 0.1]})


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: mfpde.Dataset(np.zeros((5, 2, 1)), np.zeros(5)), "`X`"),
        (lambda: mfpde.Dataset(np.zeros((5, 2)), np.zeros(4)), "`y`"),
        (lambda: mfpde.Dataset(np.zeros((5, 2)), np.zeros((5, 1, 1))), "`y`"),
        (lambda: mfpde.Dataset(np.full((5, 2), np.nan), np.zeros(5)), "`X`.*NaN"),
        (lambda: mfpde.Dataset(np.zeros((5, 2)), np.array([0, 1, np.inf, 0, 0])), "`y`.*infinite"),
        (lambda: mfpde.Dataset(np.zeros((5, 2)), np.zeros(5), X_test=np.zeros((3, 3)), y_test=np.zeros(3)), "`X_test`"),
        (lambda: mfpde.Dataset(np.zeros((5, 2)), np.zeros(5), X_test=np.zeros((3, 2))), "`y_test`"),
        (lambda: mfpde.flows.TwoLayer(temperature=-0.1), "`temperature`"),
        (lambda: mfpde.flows.TwoLayer(l2=-1.0), "`l2`"),
        (lambda: mfpde.flows.TwoLayer(alpha=float("nan")), "`alpha`"),
        (lambda: mfpde.flows.TwoLayer(activation="swish"), "`activation`"),
        (lambda: mfpde.flows.TwoLayer(loss="hinge"), "`loss`"),
        (lambda: mfpde.measures.Gaussian(std=-1.0), "`std`"),
        (lambda: mfpde.measures.Uniform(low=1.0, high=0.0), "`high`"),
        (lambda: mfpde.measures.Particles(u=np.zeros(3), w=np.zeros((4, 2))), "`w`"),
        (lambda: Particles(n=0), "`n`"),
        (lambda: Particles(n=2.5), "`n`"),
        (lambda: Particles(n=4, method="rk4"), "`method`"),
        (lambda: Particles(n=4, method="scan"), "`dt`"),
        (lambda: Particles(n=4, method="scan", dt=-0.1), "`dt`"),
        (lambda: mfpde.FlowProblem(mfpde.flows.TwoLayer(), _data(), mfpde.measures.Gaussian(), (1.0, 0.0)), "`tspan`"),
        (lambda: mfpde.FlowProblem(mfpde.flows.TwoLayer(), _data(), mfpde.measures.Gaussian(), 5.0), "`tspan`"),
        (lambda: mfpde.FlowProblem(mfpde.flows.TwoLayer(), None, mfpde.measures.Gaussian(), (0, 1)), "`data`"),
        (lambda: mfpde.FlowProblem(mfpde.flows.TwoLayer(), _data(), "gaussian", (0, 1)), "`init`"),
        (lambda: mfpde.solve(_problem(), "particles"), "`algorithm`"),
        (lambda: mfpde.solve(_problem(), Particles(n=4), saveat=[0.5, 2.0]), "`saveat`"),
        (lambda: mfpde.solve(_problem(), Particles(n=4), saveat=[0.5, 0.2]), "`saveat`"),
        (lambda: mfpde.solve(_problem(), Particles(n=4), saveat=diffrax.SaveAt(ts=[0.5], fn=lambda t, y, args: y)),
         "`saveat`: `fn`"),
        (lambda: mfpde.solve(_problem(), Particles(n=4), saveat=diffrax.SaveAt(
            subs=[diffrax.SubSaveAt(ts=[0.5]), diffrax.SubSaveAt(t1=True)])), "`saveat`: `subs`"),
        (lambda: mfpde.solve(_problem(), Particles(n=4), saveat=diffrax.SaveAt(ts=[0.5], solver_state=True)),
         "`saveat`: .*solver_state"),
        (lambda: mfpde.solve(_problem(), Particles(n=4), key="seed"), "`key`"),
        (lambda: mfpde.solve(_problem(), Particles(n=4), max_steps=0), "`max_steps`"),
        (lambda: mfpde.solve(_problem(), Particles()), "`n`"),
        (lambda: mfpde.solve(_study(), Particles(n=4), batch_stepping="together"), "`batch_stepping`"),
        (lambda: mfpde.solve(_study(), Particles(n=4, method="scan", dt=0.1), batch_stepping="shared"), "`batch_stepping"),
        (
            lambda: mfpde.solve(
                mfpde.FlowProblem(mfpde.flows.TwoLayer(), _data(), mfpde.measures.Particles(u=np.zeros(3), w=np.zeros((3, 2))), (0, 1)),
                Particles(n=4),
            ),
            "`n`",
        ),
        (
            lambda: mfpde.solve(
                mfpde.FlowProblem(mfpde.flows.TwoLayer(), _data(), mfpde.measures.Particles(u=np.zeros(3), w=np.zeros((3, 5))), (0, 1)),
                Particles(),
            ),
            "`w`",
        ),
        (lambda: mfpde.solve(mfpde.StationaryProblem(mfpde.flows.OrnsteinUhlenbeck(temperature=0.5), None,
                                                     mfpde.measures.Gaussian()),
                             solvers.GibbsFixedPoint(solvers.Grid(bounds=((-4.0, 4.0),), cells=8)),
                             solver=optx.BFGS(rtol=1e-8, atol=1e-8)), "`solver` of GibbsFixedPoint"),
    ],
)
def test_bad_input_names_the_argument(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_a_save_time_equal_to_a_float32_end_time_is_accepted():
    # tspan (0, 0.02) in float32 ends at 0.0199999996; saveat=[0.02] names that end time, and was refused as
    # lying outside tspan (compared at 1e-12, not at the tspan's precision). A time truly outside is still refused.
    tspan = (np.float32(0.0), np.float32(0.02))
    np.testing.assert_allclose(mfpde.extend.save_times([0.01, 0.02], tspan), [0.01, 0.02], rtol=1e-6)
    with pytest.raises(ValueError, match="`saveat`"):
        mfpde.extend.save_times([0.0201], tspan)
    np.testing.assert_allclose(mfpde.extend.save_times([1.0], (0, 2)), [1.0])  # integer end times, as before
