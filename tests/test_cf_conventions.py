"""Every kind of file mfpde writes passes the IOOS compliance checker at the CF version the file declares, with no
high-priority failures, and reads back identical."""

import functools
import warnings

import compliance_checker.suite as compliance_suite
import diffrax
import jax
import numpy as np
import pytest
import xarray as xr

import mfpde
from solvers import Convex, GibbsFixedPoint, Grid, Particles, ParticleStationary

# The checker's strict-monotonicity check (CF 1.2, high priority) stops with a TypeError on string-valued
# coordinate variables such as `param`; the test checks monotonicity of the numeric coordinates itself.
_MONOTONICITY = "check_coordinate_variables_strict_monotonicity"


@functools.cache
def _suite():
    suite = compliance_suite.CheckSuite()
    with warnings.catch_warnings():  # loading every checker warns that the (unused) ioos_sos one is deprecated
        warnings.simplefilter("ignore", DeprecationWarning)
        suite.load_all_available_checkers()
    return suite


def _cf_failures(path):
    """The checker's high-priority failures for `path` at the CF version it declares, and the checks that raised."""
    with xr.open_dataset(path, decode_times=False) as ds:
        conventions = ds.attrs["Conventions"]
    assert conventions.startswith("CF-"), conventions
    checker = f"cf:{conventions.removeprefix('CF-')}"
    suite = _suite()
    nc = suite.load_dataset(str(path))
    try:
        groups, errors = suite.run_all(nc, [checker])[checker]
    finally:
        nc.close()
    structure = suite.build_structure(checker, groups, str(path), limit=3)
    failures = [f"{r.name}: {m}" for r in structure["high_priorities"] if r.value[0] < r.value[1] for m in r.msgs]
    return failures, set(errors)


@pytest.fixture(scope="module")
def two_layer():
    """A τ = 0 two-layer run from an explicit initial state, with its particles (for certify and repopulate)."""
    data = mfpde.datasets.teacher(0, n=8, d=2, n_test=4)
    flow = mfpde.flows.TwoLayer(l2=1e-2)
    start = mfpde.measures.Gaussian().sample(jax.random.key(1), 6, flow.groups(data))
    prob = mfpde.FlowProblem(flow, data, mfpde.measures.Particles(**start), (0.0, 1.0))
    return mfpde.solve(prob, Particles(n=6, method="scan", dt=0.25, save_state=True), saveat=[0.0, 0.5, 1.0])


def _ou():
    return mfpde.flows.OrnsteinUhlenbeck(temperature=0.5)


def _study(two_layer):
    prob = mfpde.FlowProblem(_ou(), None, mfpde.measures.Gaussian(), (0.0, 1.0))
    study = mfpde.EnsembleProblem(prob, {"temperature": [0.1, 0.2], "seed": [0, 1]})
    return mfpde.solve(study, Particles(n=4, method="scan", dt=0.5), saveat=[0.0, 1.0])


def _grid(two_layer):
    prob = mfpde.FlowProblem(_ou(), None, mfpde.measures.Gaussian(std=0.5), (0.0, 1.0))
    # Fixed Heun steps compile in half the time of the default IMEX scheme; the file has the same layout.
    options = {"solver": diffrax.Heun(), "stepsize_controller": diffrax.ConstantStepSize(), "dt0": 0.1}
    return mfpde.solve(prob, Grid(bounds=((-3.0, 3.0),), cells=8), saveat=[0.0, 1.0], **options)


def _gibbs(two_layer):
    prob = mfpde.StationaryProblem(_ou(), None, mfpde.measures.Gaussian(std=0.5))
    # ±5 is 7.1 standard deviations of the Gibbs state (std √(τ/κ)): its wall cells hold ~1e-7 of the mass, below
    # the warning (at ±3 they held 8.6e-4).
    return mfpde.solve(prob, GibbsFixedPoint(Grid(bounds=((-5.0, 5.0),), cells=8)))


def _particle_stationary(two_layer):
    prob = mfpde.StationaryProblem(mfpde.flows.OrnsteinUhlenbeck(), None, mfpde.measures.Gaussian())
    return mfpde.solve(prob, ParticleStationary(n=4))


KINDS = {
    "single": lambda two_layer: two_layer,
    "study": _study,
    "grid": _grid,
    "gibbs": _gibbs,
    "particle_stationary": _particle_stationary,
    "certificate": lambda two_layer: mfpde.certify(two_layer, Convex()),
    "repopulation": lambda two_layer: mfpde.repopulate(two_layer, [2, 4], draws=2),
}


@pytest.mark.parametrize("kind", list(KINDS))
def test_file_passes_the_cf_checker_and_reads_back_identical(tmp_path, two_layer, kind):
    result = KINDS[kind](two_layer)
    path = tmp_path / f"{kind}.nc"
    # Every kind, certificates and repopulations too, is a Solution with its problem and result code.
    assert isinstance(result, mfpde.Solution) and result.problem is not None, type(result)
    assert result.success and result.dataset.result.attrs["flag_meanings"].startswith("successful")
    result.to_netcdf(path)
    dataset, back = result.dataset, mfpde.load(path).dataset
    xr.testing.assert_identical(back, dataset)
    failures, raised = _cf_failures(path)
    assert not failures, "\n".join(failures)
    strings = [name for name in dataset.dims if name in dataset.coords and dataset[name].dtype.kind in "OU"]
    assert raised <= ({_MONOTONICITY} if strings else set()), raised
    for name in dataset.dims:
        if name in dataset.coords and dataset[name].dtype.kind in "iuf" and dataset.sizes[name] > 1:
            steps = np.diff(dataset[name].values)
            assert np.all(steps > 0) or np.all(steps < 0), name


def test_checker_sees_the_defects_it_is_trusted_with(tmp_path):
    """The checker, as called here, does report a coordinate with a fill value and a time without standard_name."""
    ds = xr.Dataset({"loss": ("time", [1.0, 0.5], {"long_name": "loss", "units": "1"})},
                    {"time": ("time", [0.0, 1.0], {"long_name": "time", "units": "1"})},
                    attrs={"Conventions": "CF-1.10", "title": "t", "history": "h"})
    ds.to_netcdf(tmp_path / "bad.nc")  # xarray's default: a NaN _FillValue on the float coordinate
    failures, _ = _cf_failures(tmp_path / "bad.nc")
    assert any("_FillValue" in f for f in failures) and any("standard_name='time'" in f for f in failures), failures
