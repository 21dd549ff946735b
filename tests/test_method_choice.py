"""The default method: probes of the velocity at t0 pick Bosh3 for flows with kinks (ReLU) and leave smooth flows
(tanh, Ornstein–Uhlenbeck, a smooth multilayer net) on Tsit5; the kinked default reaches the loss curve to 1e-4
against a reference computed at tight tolerance with another method."""

import numpy as np
import pytest

import mfpde
from solvers import Particles, Units


def _two_layer(activation):
    data = mfpde.datasets.teacher(0, n=40, d=3)
    flow = mfpde.flows.TwoLayer(activation=activation, bias=True, l2=1e-3)
    return mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(std=1.0), (0.0, 5.0))


# Each case compiles a whole solve. By default: a smooth two-layer net (Tsit5) and a kinked multilayer one (Bosh3,
# Units). The kinked two-layer net is seen as Bosh3 in test_kinked_default_meets_its_accuracy, Ornstein–Uhlenbeck
# as Tsit5 in test_particles_ode.py::test_stiff_flow_switches_to_implicit_solver and a smooth multilayer net in
# test_multilayer.py::test_finite_width_equals_plain_gradient_flow; those cases here, and softplus, run with
# `-m slow`.
@pytest.mark.parametrize(
    "problem, algorithm, solver",
    [
        pytest.param(lambda: _two_layer("relu"), lambda: Particles(n=32), "Bosh3", marks=pytest.mark.slow),
        (lambda: _two_layer("tanh"), lambda: Particles(n=32), "Tsit5"),
        pytest.param(lambda: _two_layer("softplus"), lambda: Particles(n=32), "Tsit5", marks=pytest.mark.slow),
        pytest.param(lambda: mfpde.FlowProblem(mfpde.flows.OrnsteinUhlenbeck(kappa=0.5, dim=3), None,
                                               mfpde.measures.Gaussian(), (0.0, 5.0)),
                     lambda: Particles(n=32), "Tsit5", marks=pytest.mark.slow),
        (lambda: mfpde.FlowProblem(mfpde.flows.Multilayer(activations=("relu", "relu")), mfpde.datasets.teacher(0, n=20, d=3),
                                   mfpde.measures.IIDLayers(std=1.0), (0.0, 2.0)), lambda: Units(n=(16, 16)), "Bosh3"),
        pytest.param(lambda: mfpde.FlowProblem(mfpde.flows.Multilayer(activations=("tanh", "tanh")),
                                               mfpde.datasets.teacher(0, n=20, d=3), mfpde.measures.IIDLayers(std=1.0),
                                               (0.0, 2.0)),
                     lambda: Units(n=(16, 16)), "Tsit5", marks=pytest.mark.slow),
    ],
)
def test_probe_picks_the_method(problem, algorithm, solver):
    ds = mfpde.solve(problem(), algorithm(), saveat=[1.0]).dataset
    assert ds.attrs["solver"] == solver, (ds.attrs["solver"], ds.attrs.get("kink_ratio"))
    assert ds.attrs["kinks_detected"] == (solver == "Bosh3")


def test_kinked_default_meets_its_accuracy():
    import diffrax

    problem = _two_layer("relu")
    ts = np.linspace(0.0, 5.0, 26)
    default = mfpde.solve(problem, Particles(n=32), saveat=ts).dataset
    assert default.attrs["solver"] == "Bosh3" and default.attrs["kinks_detected"], default.attrs["kink_ratio"]
    reference = mfpde.solve(problem, Particles(n=32), saveat=ts, solver=diffrax.Heun(), rtol=1e-9, atol=1e-11,
                            max_steps=200_000).dataset
    error = np.max(np.abs(default.loss.values - reference.loss.values) / np.abs(reference.loss.values))
    assert error < 1e-4, error


def test_kink_probe_sees_relu_particles_drawn_with_any_key():
    # The probe's random direction is made orthogonal to the state: particles drawn with the key the probe uses
    # (here key 1, whose normal draw would equal the direction) are still seen to be kinked.
    import jax

    problem = _two_layer("relu")
    groups = problem.flow.groups(problem.data)
    drawn = mfpde.measures.Gaussian(std=1.0).sample(jax.random.key(1), 32, groups)
    explicit = mfpde.remake(problem, init=mfpde.measures.Particles(**drawn))
    ds = mfpde.solve(explicit, Particles(), saveat=[1.0]).dataset
    assert ds.attrs["solver"] == "Bosh3", ds.attrs["kink_ratio"]
