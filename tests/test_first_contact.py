"""What a new user meets first: clear errors instead of odd results, help that lists what is there, warnings where a
result is not what it seems, labelled plots, and a study's wall time summed over the calls that computed it."""

import re
import time
import warnings

import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import mfpde
from solvers import GibbsFixedPoint, Grid, Particles


def _ou_problem(temperature=0.1, tspan=(0.0, 1.0)):
    flow = mfpde.flows.OrnsteinUhlenbeck(kappa=1.0, temperature=temperature)
    return mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(std=0.5), tspan)


# --- mfpde.load ----------------------------------------------------------------------------------------------------


def test_load_refuses_files_mfpde_did_not_write(tmp_path):
    foreign = tmp_path / "foreign.nc"
    xr.Dataset({"loss": (("time",), np.ones(3))}, coords={"time": np.arange(3.0)}).to_netcdf(foreign, engine="netcdf4")
    with pytest.raises(ValueError, match=r"foreign\.nc was not written by mfpde"):
        mfpde.load(foreign)
    text = tmp_path / "notes.nc"
    text.write_text("a text file\n")
    with pytest.raises(ValueError, match=r"notes\.nc is not a NetCDF file"):
        mfpde.load(text)
    with pytest.raises(FileNotFoundError, match=r"missing\.nc"):
        mfpde.load(tmp_path / "missing.nc")
    # The attributes every file mfpde writes carries (`cf_attributes`) are what tells: the same file with them loads.
    from mfpde._solution import cf_attributes

    ds = xr.load_dataset(foreign, decode_times=False)
    ds.attrs.update(cf_attributes("a result", "mfpde.solve(FlowProblem, Particles)"))
    ds.to_netcdf(tmp_path / "ours.nc", engine="netcdf4")
    xr.testing.assert_identical(mfpde.load(tmp_path / "ours.nc").dataset, ds)


# --- a resumed study's wall time --------------------------------------------------------------------------------------


@pytest.mark.parametrize("layout", ["study", "checkpointed"])
def test_resumed_run_records_the_wall_time_of_all_its_calls(tmp_path, monkeypatch, layout):
    """A first call is interrupted after its first stored batch (segment), which it spent at least a second on; the
    second call computes the rest. The result's wall time is the sum of both calls' work: at least that second more
    than the second call itself took (less half a second for its work before the timer starts), and no more than both
    calls took."""
    import solvers._batches
    import solvers._driver

    problem = _ou_problem()
    options = {"saveat": jnp.linspace(0.0, 1.0, 4), "key": 0, "directory": tmp_path / "store"}
    if layout == "study":
        problem = mfpde.EnsembleProblem(problem, {"temperature": [0.1, 0.2]})
        options["batch_size"] = 1
        module, name = solvers._batches, "solve_batch"
    else:
        options["checkpoint_every"] = 2
        module, name = solvers._driver, "run_point"
    algorithm = Particles(n=4, method="scan", dt=0.25)
    real, calls = getattr(module, name), []

    def slow_then_interrupted(*args, **kwargs):
        calls.append(1)
        if len(calls) > 1:
            raise KeyboardInterrupt
        out = real(*args, **kwargs)
        time.sleep(1.0)
        return out

    monkeypatch.setattr(module, name, slow_then_interrupted)
    start = time.perf_counter()
    with pytest.raises(KeyboardInterrupt):
        mfpde.solve(problem, algorithm, **options)
    first = time.perf_counter() - start
    assert len(list((tmp_path / "store").glob("points-*.nc"))) == 1
    monkeypatch.setattr(module, name, real)
    start = time.perf_counter()
    ds = mfpde.solve(problem, algorithm, **options).dataset
    second = time.perf_counter() - start
    assert len(list((tmp_path / "store").glob("points-*.nc"))) == 2
    assert second + 0.5 <= ds.attrs["wall_time_s"] <= first + second
    assert ds.attrs["run_time_s"] == pytest.approx(ds.attrs["wall_time_s"] - ds.attrs["compile_time_s"])


# --- help(mfpde.activations) ---------------------------------------------------------------------------------------


def test_help_of_activations_lists_every_activation():
    import pydoc

    from mfpde.activations import ACTIVATIONS

    page = pydoc.render_doc(mfpde.activations, renderer=pydoc.plaintext)
    description = page[page.index("DESCRIPTION"):page.index("FUNCTIONS")]  # the module's docstring, not its members
    for name in ACTIVATIONS:
        assert re.search(rf'"{name}"', description), name


# --- Gibbs states cut off by their box -------------------------------------------------------------------------------


def test_gibbs_state_with_mass_on_the_walls_warns():
    """The Gibbs state of an OU flow is the normal density of variance τ/κ = 1: a box of ±1.5 cuts it off (its wall
    cells hold 5% of the mass), a box of ±9 does not (wall cells ~1e-18)."""
    problem = mfpde.StationaryProblem(mfpde.flows.OrnsteinUhlenbeck(kappa=1.0, dim=1, temperature=1.0), None,
                                      mfpde.measures.Gaussian(std=0.2))
    with pytest.warns(RuntimeWarning, match=r"walls of its box hold 0\.05 of the mass.*enlarge `bounds`"):
        narrow = mfpde.solve(problem, GibbsFixedPoint(Grid(bounds=((-1.5, 1.5),), cells=20))).dataset
    masses = narrow.density.values * 3.0 / 20
    assert narrow.attrs["mass_on_walls"] == pytest.approx(masses[0] + masses[-1], rel=1e-12)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        wide = mfpde.solve(problem, GibbsFixedPoint(Grid(bounds=((-9.0, 9.0),), cells=20))).dataset
    assert wide.attrs["mass_on_walls"] < 1e-15


# --- one particle or one entropy sample at τ > 0 ---------------------------------------------------------------------


def test_entropy_needs_two_samples():
    from solvers._entropy import knn_entropy

    with pytest.raises(ValueError, match=r"at least 2 samples.*got 1"):
        knn_entropy(jnp.zeros((1, 2)))
    with pytest.raises(ValueError, match=r"`n` of Particles must be at least 2 .*temperature > 0.*got 1"):
        mfpde.solve(_ou_problem(), Particles(n=1, method="scan", dt=0.5))
    with pytest.raises(ValueError, match=r"`entropy_samples` of Particles must be at least 2 .*got 1"):
        mfpde.solve(_ou_problem(), Particles(n=8, method="scan", dt=0.5, entropy_samples=1))


def test_one_particle_at_zero_temperature_is_fine():
    """Without noise there is no entropy to estimate: one particle follows the ODE θ' = −κθ exactly (Euler here)."""
    ds = mfpde.solve(_ou_problem(temperature=0.0), Particles(n=1, method="scan", dt=0.5, save_state=True),
                     saveat=[0.0, 1.0]).dataset
    theta = ds.theta.values[:, 0, :]
    np.testing.assert_allclose(theta[1], theta[0] * 0.5**2, rtol=1e-12)
    assert np.isfinite(ds.free_energy.values).all()


# --- logistic labels ---------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("flow", [mfpde.flows.TwoLayer(loss="logistic"),
                                  mfpde.flows.Multilayer(activations=("tanh", "tanh"), loss="logistic"),
                                  mfpde.flows.FeatureDNN(activations=("tanh",), loss="logistic")])
def test_logistic_loss_refuses_labels_outside_plus_minus_one(flow):
    """The logistic loss log(1 + e^{−y f}) is for y = ±1: a 0 label would give the constant log 2 and a 2 label a
    loss twice as steep, both silently. {0, 1} labels are refused with the map that fixes them."""
    X = np.linspace(-1.0, 1.0, 8)[:, None]
    sign = np.where(X > 0, 1.0, -1.0)
    init = mfpde.measures.Gaussian() if isinstance(flow, mfpde.flows.TwoLayer) else mfpde.measures.IIDLayers()
    mfpde.FlowProblem(flow, mfpde.Dataset(X, sign), init, (0.0, 1.0))  # ±1: accepted
    with pytest.raises(ValueError, match=r"`data.y` .* labels in \{-1, \+1\} \(\{0, 1\} labels: pass 2y − 1\); got values 0, 1"):
        mfpde.FlowProblem(flow, mfpde.Dataset(X, (sign + 1) / 2), init, (0.0, 1.0))
    with pytest.raises(ValueError, match=r"`data.y_test` .*got values -1, 0.5, 1\.$"):
        mfpde.FlowProblem(flow, mfpde.Dataset(X, sign, X, np.where(X > 0.5, 0.5, sign)), init, (0.0, 1.0))


# --- negative tolerances ------------------------------------------------------------------------------------------------


@pytest.mark.parametrize("name, value", [("rtol", -1e-3), ("atol", -1e-6), ("rtol", float("nan"))])
def test_negative_tolerance_is_an_error_naming_it(name, value):
    with pytest.raises(ValueError, match=rf"`{name}` must be a finite number ≥ 0"):
        mfpde.solve(_ou_problem(), Particles(n=4), **{name: value})


# --- plots: labelled axes, the coordinates asked for ---------------------------------------------------------------------


def _particle_solution(seed=0):
    rng = np.random.default_rng(seed)
    time_ = np.linspace(0.0, 1.0, 5)
    theta = rng.normal(size=(5, 30, 3))
    ds = xr.Dataset(
        {"loss": (("time",), np.exp(-time_), {"long_name": "training loss", "units": "1"}),
         "risk": (("time",), np.exp(-time_) + 0.1, {"long_name": "risk R(ρ)", "units": "1"}),
         "theta": (("time", "particle", "param"), theta, {"long_name": "particle positions θ_j", "units": "1"})},
        coords={"time": time_, "param": ["u", "w_0", "w_1"], "particle": np.arange(30)},
        attrs={"title": "TwoLayer flow, Particles"})
    return mfpde.Solution(ds), theta


def test_plot_labels_every_axis_and_honours_coords():
    sol, theta = _particle_solution()
    fig = sol.plot(coords=("w_1", "u"), color="w_0")
    loss_ax, cloud_ax = fig.axes[:2]
    assert loss_ax.get_xlabel() == "time (mean-field units)"
    assert loss_ax.get_ylabel() == "loss, risk"
    assert [t.get_text() for t in loss_ax.get_legend().get_texts()] == ["loss: training loss", "risk: risk R(ρ)"]
    assert (cloud_ax.get_xlabel(), cloud_ax.get_ylabel()) == ("w_1", "u")
    final = cloud_ax.collections[-1].get_offsets()
    np.testing.assert_array_equal(final, theta[-1][:, [2, 0]])
    assert fig.axes[2].get_ylabel() == "w_0"  # the colour bar
    hist_ax = sol.plot(coords=("w_0",)).axes[1]
    assert (hist_ax.get_xlabel(), hist_ax.get_ylabel()) == ("w_0", "density")
    assert sol.plot(coords="w_0").axes[1].get_xlabel() == "w_0"  # one name, not its letters
    with pytest.raises(ValueError, match=r"`coords`: 'v' is not a coordinate"):
        sol.plot(coords=("w_0", "v"))
    with pytest.raises(ValueError, match=r"`coords`: one or two coordinate names"):
        sol.plot(coords=("u", "w_0", "w_1"))


def _grid_solution(stationary=False):
    w0, w1 = np.linspace(-1.0, 1.0, 6), np.linspace(-2.0, 2.0, 8)
    density = np.exp(-(w0[:, None] ** 2) - 3 * w1[None, :] ** 2)
    attrs = {"long_name": "density ρ = m_k / V of the measure over the gridded coordinates", "units": "1"}
    if stationary:
        variables = {"density": (("w_0", "w_1"), density, attrs), "risk": ((), 0.5)}
    else:
        variables = {"density": (("time", "w_0", "w_1"), np.stack([density, 2 * density]), attrs),
                     "risk": (("time",), [1.0, 0.5], {"long_name": "risk", "units": "1"})}
    coords = {"w_0": w0, "w_1": w1, "param": ["w_0", "w_1"]} | ({} if stationary else {"time": [0.0, 1.0]})
    return mfpde.Solution(xr.Dataset(variables, coords, attrs={"title": "grid"})), density


@pytest.mark.parametrize("stationary", [False, True])
def test_plot_of_a_grid_density_honours_coords(stationary):
    sol, density = _grid_solution(stationary)
    last = density if stationary else 2 * density
    panel = 0 if stationary else 1  # after the loss curves, when there are some
    fig = sol.plot(coords=("w_1", "w_0"))
    ax = fig.axes[panel]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("w_1", "w_0")
    np.testing.assert_allclose(np.asarray(ax.collections[0].get_array()).reshape(6, 8), last)  # rows w_0, columns w_1
    assert fig.axes[panel + 1].get_ylabel() == "density"  # the colour bar
    ax = sol.plot(coords=("w_1",)).axes[panel]
    assert (ax.get_xlabel(), ax.get_ylabel()) == ("w_1", "marginal density")
    np.testing.assert_allclose(ax.get_lines()[-1].get_xdata(), np.linspace(-2.0, 2.0, 8))
    np.testing.assert_allclose(ax.get_lines()[-1].get_ydata(), last.sum(axis=0) * 0.4)  # ∫ dw_0, cells of 0.4
    with pytest.raises(ValueError, match=r"`coords`: 'u' is not a gridded coordinate"):
        sol.plot(coords=("u",))


def test_plot_without_particles_refuses_coords():
    ds = xr.Dataset({"loss": (("time",), [1.0, 0.5], {"long_name": "training loss", "units": "1"})},
                    coords={"time": [0.0, 1.0]})
    sol = mfpde.Solution(ds)
    assert sol.plot().axes[0].get_ylabel() == "loss"
    with pytest.raises(ValueError, match=r"`coords`: .*no particles .*save_state=True"):
        sol.plot(coords=("w_0", "w_1"))


# --- progress where a person watches -----------------------------------------------------------------------------------


def test_progress_bar_by_default_in_a_notebook_only(monkeypatch):
    """A solve shows progress by default in a Jupyter kernel (ZMQInteractiveShell), not in a terminal script, and not
    under pytest, whose environment the kernels of the tested notebooks inherit."""
    import sys
    import types

    import diffrax

    from solvers._integrate import as_progress_meter

    class ZMQInteractiveShell:
        pass

    assert isinstance(as_progress_meter(None), diffrax.NoProgressMeter)  # a plain interpreter
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=ZMQInteractiveShell))
    assert isinstance(as_progress_meter(None), diffrax.NoProgressMeter)  # under pytest
    monkeypatch.delenv("PYTEST_CURRENT_TEST")
    assert isinstance(as_progress_meter(None), diffrax.TqdmProgressMeter)
    assert isinstance(as_progress_meter(False), diffrax.NoProgressMeter)
    monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=lambda: None))  # IPython, no kernel
    assert isinstance(as_progress_meter(None), diffrax.NoProgressMeter)


def test_a_watched_solve_says_so_before_it_compiles(monkeypatch, capsys):
    """In a notebook the progress bar appears only once the compiled loop runs: a line on stderr says beforehand that
    the solve is compiling; nowhere else."""
    import sys
    import types

    import diffrax

    import solvers._driver

    class ZMQInteractiveShell:
        pass

    said = []

    def compiling(*args, **kwargs):
        said.append(capsys.readouterr().err)
        raise KeyboardInterrupt  # stop before anything is compiled

    monkeypatch.setattr(solvers._driver, "run_point", compiling)
    problem = mfpde.FlowProblem(mfpde.flows.OrnsteinUhlenbeck(dim=1), None, mfpde.measures.Gaussian(), (0.0, 1.0))
    for shell in (ZMQInteractiveShell, lambda: None):
        monkeypatch.setitem(sys.modules, "IPython", types.SimpleNamespace(get_ipython=shell))
        monkeypatch.delenv("PYTEST_CURRENT_TEST", raising=False)
        with pytest.raises(KeyboardInterrupt):
            mfpde.solve(problem, Particles(n=4), solver=diffrax.Tsit5())
    assert said[0].startswith("Particles: solving (a first solve of this problem's shapes compiles first"), said
    assert said[1] == "", said
