"""Tolerances are traced values in every algorithm: a new value reuses the compiled program, 0 is a value (not "not
given"), and a bad one is refused naming the argument."""

import jax
import numpy as np
import pytest

import mfpde
from solvers import Convex, GibbsFixedPoint, Grid, ParticleStationary

_COMPILES = []
jax.monitoring.register_event_duration_secs_listener(
    lambda event, duration, **kwargs: _COMPILES.append(event) if event == "/jax/core/compile/backend_compile_duration" else None
)


def _compiles(call):
    before = len(_COMPILES)
    call()
    return len(_COMPILES) - before


def _double_well(temperature):
    return mfpde.flows.Potential(lambda th: (th[0] ** 2 - 1.0) ** 2, dim=1, temperature=temperature)


def _cases():
    gibbs = mfpde.StationaryProblem(_double_well(0.5), None, mfpde.measures.Gaussian(mean=0.6, std=0.3))
    particles = mfpde.StationaryProblem(_double_well(0.0), None, mfpde.measures.Gaussian(mean=0.2, std=1.0))
    data = mfpde.datasets.teacher(0, n=10, d=2)
    W = np.random.default_rng(0).normal(size=(3, 2))
    convex = mfpde.StationaryProblem(mfpde.flows.TwoLayer(l2=0.01), data, mfpde.measures.Particles(u=np.zeros(3), w=W))
    return {
        "gibbs": (gibbs, GibbsFixedPoint(Grid(bounds=((-2.5, 2.5),), cells=40))),
        "particles": (particles, ParticleStationary(n=8)),
        "convex": (convex, Convex()),
    }


@pytest.mark.parametrize("name", ["gibbs", "particles", "convex"])
def test_a_new_tolerance_does_not_recompile(name):
    problem, algorithm = _cases()[name]
    first = mfpde.solve(problem, algorithm, rtol=1e-8, atol=1e-8).dataset
    assert int(first.result) == 0
    assert _compiles(lambda: mfpde.solve(problem, algorithm, rtol=1e-9, atol=1e-9)) == 0
    # 0 is a tolerance like any other (the other one then decides), not "use the default".
    assert _compiles(lambda: mfpde.solve(problem, algorithm, rtol=0.0, atol=1e-9)) == 0
    assert float(mfpde.solve(problem, algorithm, rtol=0.0, atol=1e-9).dataset.attrs["rtol"]) == 0.0


@pytest.mark.parametrize("name", ["gibbs", "particles", "convex"])
@pytest.mark.parametrize("bad, error", [(-1e-6, ValueError), ("tight", TypeError), (float("nan"), ValueError)])
def test_a_bad_tolerance_names_the_argument(name, bad, error):
    problem, algorithm = _cases()[name]
    with pytest.raises(error, match="`rtol`"):
        mfpde.solve(problem, algorithm, rtol=bad)
