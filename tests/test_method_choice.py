"""The default method: probes of the velocity at t0 pick Bosh3 for flows with kinks (ReLU) and leave smooth flows
(tanh, Ornstein–Uhlenbeck, a smooth multilayer net) on Tsit5; the kinked default reaches the loss curve to 1e-4
against a reference computed at tight tolerance with another method."""

import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import pytest

import mfpde
from solvers import Particles, Units
from solvers._integrate import spectral_radius


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
    assert ds.attrs["solver"] == solver, (ds.attrs["solver"], ds.attrs.get("kink_deviation"))
    assert ds.attrs["kinks_detected"] == (solver == "Bosh3")


def test_kinked_default_meets_its_accuracy():
    import diffrax

    problem = _two_layer("relu")
    ts = np.linspace(0.0, 5.0, 26)
    default = mfpde.solve(problem, Particles(n=32), saveat=ts).dataset
    assert default.attrs["solver"] == "Bosh3" and default.attrs["kinks_detected"], default.attrs["kink_deviation"]
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
    assert ds.attrs["solver"] == "Bosh3", ds.attrs["kink_deviation"]


class _Linear(eqx.Module):
    matrix: jax.Array

    def velocity(self, t, y, args=None):
        return self.matrix @ y


def test_stiffness_probe_stops_once_it_has_decided():
    # v(y) = A y with A = −Q diag(λ) Qᵀ: the spectral radius is max λ (NumPy's eigenvalues, not the probe's).
    rng = np.random.default_rng(0)
    q, _ = np.linalg.qr(rng.normal(size=(200, 200)))
    lam = np.logspace(-2, 2, 200)
    system = _Linear(jnp.asarray(-(q * lam) @ q.T))
    radius = float(np.max(np.abs(np.linalg.eigvalsh(np.asarray(system.matrix)))))
    y0, t0 = jnp.asarray(rng.normal(size=200)), jnp.asarray(0.0)
    v0 = system.velocity(t0, y0)
    probe = eqx.filter_jit(spectral_radius)
    # Far above the radius: "below" after one evaluation, with a bound that holds.
    estimate, bound, steps = probe(system, y0, t0, v0, jnp.asarray(1e6))
    assert int(steps) == 1 and radius <= float(bound) < 1e6
    # Far below: "above" as soon as one estimate passes it.
    estimate, bound, steps = probe(system, y0, t0, v0, jnp.asarray(1.0))
    assert int(steps) <= 2 and 1.0 < float(estimate) <= radius * (1 + 1e-6)
    # Close to it: undecided, all eight iterations, the estimate a lower bound within a factor 2 of the radius.
    estimate, bound, steps = probe(system, y0, t0, v0, jnp.asarray(1.5 * radius))
    assert int(steps) == 8 and radius / 2 < float(estimate) <= radius * (1 + 1e-6) < float(bound)


@pytest.mark.parametrize("activation, kinked", [("relu", True), ("tanh", False)])
def test_kink_probe_holds_in_every_direction(activation, kinked):
    # A small ReLU net crosses few kinks between the probe points: the norms of its second differences scale by
    # anything from 3 to 76 between h and h/4 depending on the direction, 16 (the smooth value) among them, but the
    # difference vectors never scale as a smooth velocity's do.
    from solvers._integrate import KINK_DEVIATION, kink_deviation, kink_points
    from solvers.units import _initial_vector, _LayeredSystem

    flow, data = mfpde.flows.Multilayer(activations=(activation, activation)), mfpde.datasets.teacher(0, n=20, d=3)
    shapes = flow.shapes((16, 16), data)
    y0 = _initial_vector(flow, mfpde.measures.IIDLayers(std=1.0), jax.random.key(0), shapes, data)
    system = _LayeredSystem(flow, data, tuple(shapes.items()))

    @jax.jit
    def deviation(key):
        z = jax.random.normal(key, y0.shape, y0.dtype)
        z = z - jnp.vdot(z, y0) / jnp.vdot(y0, y0) * y0
        v = jax.vmap(lambda y: system.velocity(0.0, y))(jnp.concatenate([y0[None], kink_points(y0, z)]))
        return kink_deviation(y0, v[0], v[1:])

    for seed in range(16):
        delta, resolved = deviation(jax.random.key(100 + seed))
        assert bool(resolved) and (float(delta) > KINK_DEVIATION) == kinked, (seed, float(delta))
