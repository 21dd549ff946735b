import os
import warnings

import equinox as eqx
import hypothesis.extra.numpy as hnp
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr
from hypothesis import given, settings, strategies as st

import mfpde
import solvers._driver
from mfpde._netcdf import sanitize_attrs, write_atomic
from solvers import Particles


def _problem(temperature=0.0):
    data = mfpde.datasets.teacher(0, n=32, d=2, n_test=16)
    flow = mfpde.flows.TwoLayer(bias=True, l2=1e-3, temperature=temperature)
    return mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(), (0.0, 2.0))


# Compiling a program is most of a test's time: tests that only need some solve share the shapes of one elsewhere
# in this file (temperature, key and tolerances are traced), so that in one process they compile nothing new.


def test_dataset_layout_and_attributes():
    sol = mfpde.solve(_problem(), Particles(n=16, save_state=True), saveat=jnp.linspace(0, 2, 5), key=7)
    ds = sol.dataset
    assert ds.theta.dims == ("time", "particle", "param")
    assert list(ds.param.values) == ["u", "w_0", "w_1", "b"]
    assert ds.prediction.dims == ("time", "sample", "output")
    for name in ("loss", "risk", "free_energy", "test_loss", "theta_mean", "theta_cov"):
        assert {"long_name", "units"} <= set(ds[name].attrs), name
    assert ds.attrs["Conventions"].startswith("CF")
    assert "jax" in ds.attrs["source"] and "diffrax" in ds.attrs["source"] and ds.attrs["history"]
    assert ds.attrs["flow"] == "TwoLayer" and ds.attrs["flow_l2"] == pytest.approx(1e-3) and ds.attrs["flow_bias"] == 1
    assert ds.attrs["algorithm"] == "Particles" and ds.attrs["algorithm_n"] == 16 and ds.attrs["seed"] == 7
    assert ds.attrs["solver"] == "Tsit5" and ds.attrs["compile_time_s"] >= 0 and ds.attrs["wall_time_s"] > 0
    assert int(ds.result) == 0 and ds.result.attrs["flag_meanings"].split()[0] == "successful"
    assert int(ds.num_steps) == int(ds.num_accepted_steps) + int(ds.num_rejected_steps) > 0
    np.testing.assert_allclose(ds.loss, 0.5 * ((ds.prediction.isel(output=0) - np.asarray(_problem().data.y[:, 0])) ** 2).mean("sample"))


def test_netcdf_round_trip_identical(tmp_path):
    # The program of the uninterrupted run in test_checkpointed_run_resumes_from_last_segment[adaptive].
    sol = mfpde.solve(_problem(0.01), Particles(n=16, save_state=True), saveat=np.linspace(0.0, 2.0, 9))
    path = sol.to_netcdf(tmp_path / "run.nc")
    xr.testing.assert_identical(mfpde.load(path).dataset, sol.dataset)
    assert not list(tmp_path.glob("*.tmp.nc"))


def test_atomic_write_keeps_old_file_on_failure(tmp_path):
    path = tmp_path / "a.nc"
    good = xr.Dataset({"x": ("t", np.arange(3.0))})
    write_atomic(good, path)
    bad = xr.Dataset({"x": ("t", np.arange(3.0))}, attrs={"bad": {"a": 1}})  # dict attributes are not NetCDF
    with pytest.raises(Exception):
        write_atomic(bad, path)
    xr.testing.assert_identical(xr.load_dataset(path), good)
    assert [p.name for p in tmp_path.iterdir()] == ["a.nc"]
    umask = os.umask(0)
    os.umask(umask)
    assert path.stat().st_mode & 0o777 == 0o666 & ~umask  # as a plain open() would make it, not private


_dtypes = st.sampled_from([np.float32, np.float64, np.int8, np.int16, np.int32, np.int64, np.uint8, np.uint16])
_attr_values = st.one_of(
    st.booleans(), st.none(), st.integers(-(2**31), 2**31 - 1), st.floats(allow_nan=False, width=64),
    st.text(st.characters(codec="utf-8", exclude_categories=("Cs", "Cc")), max_size=20),
    st.lists(st.floats(allow_nan=False, allow_infinity=False), min_size=1, max_size=4),
)


@settings(max_examples=25, deadline=None)
@given(
    dtype=_dtypes,
    shape=hnp.array_shapes(min_dims=1, max_dims=3, max_side=4),
    attrs=st.dictionaries(st.from_regex(r"[a-z][a-z0-9_]{0,10}", fullmatch=True), _attr_values, max_size=5),
    data=st.data(),
)
def test_netcdf_round_trip_property(tmp_path_factory, dtype, shape, attrs, data):
    values = data.draw(hnp.arrays(dtype, shape, elements={"allow_nan": False} if np.dtype(dtype).kind == "f" else None))
    dims = [f"dim_{i}" for i in range(len(shape))]
    ds = xr.Dataset({"v": (dims, values, sanitize_attrs(attrs))}, {dims[0]: np.arange(shape[0])}, attrs=sanitize_attrs(attrs))
    path = write_atomic(ds, tmp_path_factory.mktemp("nc") / "p.nc")
    back = mfpde.load(path).dataset
    xr.testing.assert_identical(back, ds)
    assert back.v.dtype == values.dtype


def test_plot(tmp_path):
    # The program of test_dataset_layout_and_attributes.
    sol = mfpde.solve(_problem(), Particles(n=16, save_state=True), saveat=jnp.linspace(0, 2, 5))
    fig = sol.plot(coords=("w_0", "w_1"), color="u")
    fig.savefig(tmp_path / "a.png")
    assert len(fig.axes) >= 2
    assert len(sol.plot(coords=("b",)).axes) >= 2
    with pytest.raises(ValueError, match="coords"):
        sol.plot(coords=("nope",))


def test_remake_does_not_recompile(monkeypatch):
    counted = eqx.filter_jit(eqx.debug.assert_max_traces(solvers._driver._solve_point, max_traces=1))
    monkeypatch.setattr(solvers._driver, "run_point", counted)
    prob = _problem(temperature=0.05)
    first = mfpde.solve(prob, Particles(n=16), saveat=[1.0, 2.0], rtol=1e-3, atol=1e-3)
    for changed, options in [
        (mfpde.remake(prob, temperature=0.2), {}),
        (mfpde.remake(prob, l2=0.5, alpha=2.0, tspan=(0.0, 3.0)), {}),
        (prob, {"rtol": 1e-4, "atol": 1e-5}),
        (mfpde.remake(prob, **{"init.std": 0.5}), {"key": 3}),
    ]:
        sol = mfpde.solve(changed, Particles(n=16), saveat=[1.0, 2.0], **{"rtol": 1e-3, "atol": 1e-3, **options})
        assert sol.dataset.attrs["compile_time_s"] < 0.1 * first.dataset.attrs["compile_time_s"]
    assert float(sol.dataset.attrs["flow_temperature"]) == pytest.approx(0.05)


def test_remake_paths_and_errors():
    prob = _problem()
    assert float(mfpde.remake(prob, temperature=0.3).flow.temperature) == pytest.approx(0.3)
    assert float(mfpde.remake(prob, **{"flow.l2": 0.2}).flow.l2) == pytest.approx(0.2)
    with pytest.raises(ValueError, match="nonsense"):
        mfpde.remake(prob, nonsense=1)
    with pytest.raises(ValueError, match="temperature"):
        mfpde.remake(prob, temperature=-1.0)


@pytest.mark.parametrize("temperature", [0.0, 0.02])
def test_max_steps_returns_partial_solution(temperature):
    # τ > 0: the default's predictable steps run save interval by save interval, the budget counted over all of them.
    prob = _problem(temperature=temperature)
    with pytest.warns(RuntimeWarning, match="max_steps_reached"):
        sol = mfpde.solve(prob, Particles(n=16), saveat=jnp.linspace(0, 2, 11), max_steps=2, rtol=1e-10, atol=1e-12)
    assert sol.message == "max_steps_reached" and not sol.success
    loss = sol.dataset.loss.values
    assert np.isfinite(loss[0]) and np.isnan(loss[-1])
    assert int(sol.dataset.num_steps) <= 4  # within one interval's budget beyond the run's
    with pytest.raises(mfpde.IntegrationError) as info:
        mfpde.solve(prob, Particles(n=16), saveat=jnp.linspace(0, 2, 11), max_steps=2, rtol=1e-10, throw=True)
    xr.testing.assert_identical(info.value.solution.dataset.drop_attrs(), sol.dataset.drop_attrs())


@pytest.mark.parametrize("method", ["scan", "adaptive"])
def test_blow_up_is_reported_as_nonfinite(method):
    import diffrax

    prob = mfpde.FlowProblem(mfpde.flows.OrnsteinUhlenbeck(kappa=1000.0), None, mfpde.measures.Gaussian(), (0.0, 200.0))
    options = {} if method == "scan" else {"solver": diffrax.Euler(), "stepsize_controller": diffrax.ConstantStepSize(), "dt0": 1.0}
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        sol = mfpde.solve(prob, Particles(n=4, method=method, dt=1.0 if method == "scan" else None), saveat=[1.0, 50.0, 200.0], **options)
    assert sol.message == "nonfinite" and any("nonfinite" in str(w.message) for w in caught)
    assert np.isfinite(sol.dataset.risk.values[0]) and np.isnan(sol.dataset.risk.values[-1])


@pytest.mark.parametrize("method", ["adaptive", "scan"])
def test_progress_meter_inside_jit(method, capfd):
    algorithm = Particles(n=8, method=method, dt=0.05 if method == "scan" else None)
    sol = mfpde.solve(_problem(), algorithm, saveat=[1.0, 2.0], progress_meter=True)
    assert sol.success and "100.00%" in capfd.readouterr().err


@pytest.mark.parametrize("method", ["adaptive", "scan"])
def test_checkpointed_run_resumes_from_last_segment(tmp_path, method):
    algorithm = Particles(n=16, method=method, dt=0.01 if method == "scan" else None, save_state=True)
    prob, saveat = _problem(temperature=0.02), np.linspace(0.0, 2.0, 9)
    whole = mfpde.solve(prob, algorithm, saveat=saveat, key=4, directory=tmp_path, checkpoint_every=3).dataset
    files = sorted(tmp_path.glob("points-*.nc"))
    assert [f.name for f in files] == ["points-000000-000003.nc", "points-000003-000006.nc", "points-000006-000009.nc"]
    files[-1].unlink()  # as if the run had been killed during its last segment
    resumed = mfpde.solve(prob, algorithm, saveat=saveat, key=4, directory=tmp_path, checkpoint_every=3).dataset
    xr.testing.assert_identical(resumed.drop_attrs(), whole.drop_attrs())
    # The segments see the same Brownian path as one uninterrupted run: the adaptive one agrees to the solver
    # tolerance; the scan draws the same increments for the same steps, so it equals the direct run to rounding
    # (a segment restarting its noise would be off by O(√dt) = 0.1).
    direct = mfpde.solve(prob, algorithm, saveat=saveat, key=4).dataset
    assert whole.theta.shape == direct.theta.shape
    if method == "adaptive":
        np.testing.assert_allclose(whole.theta, direct.theta, atol=1e-3)
    else:
        np.testing.assert_allclose(whole.theta, direct.theta, rtol=1e-12, atol=1e-13)


def _numeric_attribute_sizes(path):
    """Element counts of the numeric global attributes, read from the file with netCDF4 (not through xarray)."""
    import netCDF4

    with netCDF4.Dataset(path) as nc:
        return {name: np.size(nc.getncattr(name)) for name in nc.ncattrs() if not isinstance(nc.getncattr(name), str)}


def test_explicit_initial_state_is_stored_as_variables_not_attributes(tmp_path):
    """`measures.Particles(u=..., w=...)` lands in variables: the arrays come back exactly from the file, and no
    attribute holds more than a few numbers."""
    rng = np.random.default_rng(0)
    u0, w0 = rng.normal(size=5), rng.normal(size=(5, 2))
    prob = mfpde.remake(_problem(), init=mfpde.measures.Particles(u=u0, w=w0, b=np.zeros(5)))
    sol = mfpde.solve(prob, Particles(n=5, method="scan", dt=0.5, save_state=True), saveat=[0.0, 2.0])
    path = sol.to_netcdf(tmp_path / "run.nc")
    back = mfpde.load(path).dataset
    xr.testing.assert_identical(back, sol.dataset)
    np.testing.assert_array_equal(back["init_arrays_u"].values, u0[:, None])
    np.testing.assert_array_equal(back["init_arrays_w"].values, w0)
    np.testing.assert_array_equal(back.theta.isel(time=0).sel(param=["w_0", "w_1"]).values, w0)  # the state it started from
    sizes = _numeric_attribute_sizes(path)
    assert max(sizes.values()) <= 8, {name: size for name, size in sizes.items() if size > 8}
    assert back.attrs["init"] == "Particles" and back.attrs["init_arrays_w"] == "variable init_arrays_w"


def test_layers_state_is_stored_as_variables(tmp_path):
    """The matrices of `measures.Layers` become variables too (of any size), and read back exactly."""
    from mfpde._netcdf import describe

    W = {"w1": np.arange(6.0).reshape(3, 2), "w2": np.arange(3.0).reshape(1, 3)}
    attrs, variables = describe(mfpde.measures.Layers(**W), "init")
    path = write_atomic(xr.Dataset(variables, attrs=sanitize_attrs(attrs)), tmp_path / "layers.nc")
    back = xr.load_dataset(path)
    for name, matrix in W.items():
        np.testing.assert_array_equal(back[f"init_arrays_{name}"].values, matrix)
    assert max(_numeric_attribute_sizes(path).values(), default=0) <= 8 and back.attrs["init"] == "Layers"
