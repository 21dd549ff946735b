import diffrax
import jax
import jax.numpy as jnp
import numpy as np
import pytest
import xarray as xr

import mfpde
from solvers import Units


def _data():
    return mfpde.datasets.teacher(0, n=16, d=3)


def _plain_gradient_flow(w1, w2, w3, X, y, t1, ts):
    """Width-(N1, N2) three-layer tanh network trained by gradient flow, written plainly (no mfpde code): each
    weight of layer ℓ moves at rate N_{ℓ−1}·N_ℓ times the gradient of J = mean ½(ŷ − y)²."""
    N1, N2 = w2.shape

    def loss(params):
        a, b, c = params
        h1 = jnp.tanh(X @ a.T)
        h2 = jnp.tanh(h1 @ b / N1)
        out = h2 @ c / N2
        return 0.5 * jnp.mean((out - y) ** 2)

    def rhs(t, params, args):
        ga, gb, gc = jax.grad(loss)(params)
        return (-N1 * ga, -N1 * N2 * gb, -N2 * gc)

    sol = diffrax.diffeqsolve(diffrax.ODETerm(rhs), diffrax.Dopri8(), 0.0, t1, 1e-3, (w1, w2, w3),
                              saveat=diffrax.SaveAt(ts=ts), stepsize_controller=diffrax.PIDController(rtol=1e-12, atol=1e-14))
    return sol.ys


def test_finite_width_equals_plain_gradient_flow():
    data = _data()
    flow = mfpde.flows.Multilayer(activations=("tanh", "tanh"))
    init = mfpde.measures.IIDLayers(std=(1.0, 2.0, 1.0), mean=(0.0, 0.3, 0.0))
    prob = mfpde.FlowProblem(flow, data, init, (0.0, 3.0))
    ts = np.linspace(0.0, 3.0, 4)
    sol = mfpde.solve(prob, Units(n=(6, 5), save_state=True), saveat=ts, key=2, rtol=1e-11, atol=1e-13)
    ds = sol.dataset
    assert ds.attrs["solver"] == "Tsit5"  # the probes leave a smooth (tanh) multilayer net on Tsit5
    w1, w2, w3 = (jnp.asarray(ds[name].values[0]) for name in ("w1", "w2", "w3"))
    ref = _plain_gradient_flow(w1, w2, w3, data.X, data.y, 3.0, ts)
    for name, r in zip(("w1", "w2", "w3"), ref):
        np.testing.assert_allclose(ds[name].values, np.asarray(r), rtol=1e-8, atol=1e-10)
    assert ds.loss.values[-1] < ds.loss.values[0]


def test_balancedness_conserved_for_relu():
    flow = mfpde.flows.Multilayer(activations=("relu", "relu"))
    prob = mfpde.FlowProblem(flow, _data(), mfpde.measures.IIDLayers(std=1.0, mean=(0.0, 0.5, 0.0)), (0.0, 2.0))
    ds = mfpde.solve(prob, Units(n=(8, 8)), saveat=np.linspace(0, 2, 5), rtol=1e-10, atol=1e-12).dataset
    for name in ("balance_1", "balance_2"):
        drift = np.abs(ds[name].values - ds[name].values[0]).max()
        assert drift < 1e-7 * np.abs(ds[name].values).max(), (name, drift)
    # The same save times: one compiled program for both runs (l2 and the tolerances are traced).
    moved = mfpde.solve(mfpde.remake(prob, l2=0.1), Units(n=(8, 8)), saveat=np.linspace(0, 2, 5)).dataset
    assert np.abs(moved.balance_1.values[-1] - moved.balance_1.values[0]).max() > 1e-3  # decay breaks it


def test_width_convergence_on_coupled_embedding():
    # On a coupled embedding widths N and 4N share their first units: |ŷ_N − ŷ_4N| = O(N^{−1/2}), RMS over seeds.
    # Three widths (one compiled program each), two gaps: the rate is −0.47 here (−0.58 over widths 8…512). Tsit5,
    # the default the probes pick for this net, given: the same solves without compiling the probes at each width.
    flow = mfpde.flows.Multilayer(activations=("tanh", "tanh"))
    init = mfpde.measures.IIDLayers(std=1.0, mean=(0.0, 1.0, 1.0))
    prob = mfpde.FlowProblem(flow, _data(), init, (0.0, 1.0))
    widths = np.array([32, 128, 512])
    predictions = np.array([[mfpde.solve(prob, Units(n=(w, w)), saveat=[1.0], key=seed, solver=diffrax.Tsit5())
                             .dataset.prediction.values for w in widths] for seed in range(4)])
    gaps = np.sqrt(np.mean((predictions[:, 1:] - predictions[:, :-1]) ** 2, axis=(0, 2, 3, 4)))
    rate = np.polyfit(np.log(widths[:-1]), np.log(gaps), 1)[0]
    assert -0.8 < rate < -0.3, (gaps, rate)


def test_frozen_layer_and_euler_scan():
    flow = mfpde.flows.Multilayer(activations=("tanh", "tanh"), rates=(1.0, 0.0, 1.0))
    prob = mfpde.FlowProblem(flow, _data(), mfpde.measures.IIDLayers(), (0.0, 1.0))
    ds = mfpde.solve(prob, Units(n=(4, 4), method="scan", dt=0.01, save_state=True), saveat=[0.0, 1.0]).dataset
    np.testing.assert_array_equal(ds.w2.values[0], ds.w2.values[1])
    assert np.abs(ds.w1.values[1] - ds.w1.values[0]).max() > 1e-4


@pytest.mark.parametrize(
    "make, match",
    [
        (lambda: mfpde.flows.Multilayer(activations=("tanh",)), "`activations`"),
        (lambda: mfpde.flows.Multilayer(activations=("tanh", "swish")), "`activations`"),
        (lambda: mfpde.flows.Multilayer(activations=("tanh", "tanh"), rates=(1.0, 1.0)), "`rates`"),
        (lambda: mfpde.flows.Multilayer(activations=("tanh", "tanh"), temperature=0.1), "`temperature`"),
        (lambda: mfpde.flows.Multilayer(activations=("tanh", "tanh"), l2=-1.0), "`l2`"),
        (lambda: Units(n=(4, 0)), "`n` of Units"),
        (lambda: mfpde.solve(mfpde.FlowProblem(mfpde.flows.Multilayer(activations=("tanh", "tanh")), _data(),
                                               mfpde.measures.IIDLayers(), (0, 1)), Units(n=(4, 4, 4))), "`n` \\(of Units"),
        (lambda: mfpde.solve(mfpde.FlowProblem(mfpde.flows.Multilayer(activations=("tanh", "tanh")), _data(),
                                               mfpde.measures.Gaussian(), (0, 1)), Units(n=(4, 4))), "`init`"),
        (lambda: mfpde.FlowProblem(mfpde.flows.Multilayer(activations=("tanh", "tanh")), _data(),
                                   mfpde.measures.IIDLayers(std=(1.0, 1.0)), (0, 1)).init.sample_layers(
            jax.random.key(0), {"w1": (2, 3), "w2": (2, 2), "w3": (2, 1)}), "`std`"),
    ],
)
def test_bad_input(make, match):
    with pytest.raises((ValueError, TypeError), match=match):
        make()


def test_iid_zero_mean_depth_four_is_degenerate_and_stationary_in_the_limit():
    # Odd activation, i.i.d. zero-mean middle weights: every middle unit computes the same feature (0) as N → ∞,
    # an exact stationary point of the limit. At width N the spread of the features across units vanishes with N
    # (in theory as 1/N in the second hidden layer and 1/N² in the third; ≈ N^-0.94 and N^-1.8 between these two small
    # widths, N^-1.00 and N^-1.99 at N = 100…1600 in notebooks/width_independence.ipynb), and so does the network's
    # motion (17× less at N = 256 than at N = 16). Two widths: one compiled program each (Tsit5 given, as the
    # probes would pick, so that they are not compiled at each width).
    flow = mfpde.flows.Multilayer(activations=("tanh", "tanh", "tanh"))
    prob = mfpde.FlowProblem(flow, _data(), mfpde.measures.IIDLayers(std=1.0), (0.0, 1.0))
    widths = np.array([16, 256])
    spread, motion = [], []
    for w in widths:
        ds = mfpde.solve(prob, Units(n=(w, w, w)), saveat=[0.0, 1.0], key=1, solver=diffrax.Tsit5()).dataset
        spread.append(ds.unit_spread.values[0, 1:])  # middle layers at t = 0
        motion.append(np.sqrt(np.mean((ds.prediction.values[1] - ds.prediction.values[0]) ** 2)))
    spread = np.array(spread)
    for layer in range(2):
        assert np.polyfit(np.log(widths), np.log(spread[:, layer]), 1)[0] < -0.6, spread
    assert motion[-1] < motion[0] / 4, motion


def test_sweep_over_learning_rate_ratios(tmp_path):
    # A vector parameter: one row of per-layer multipliers ξ_ℓ per point (the middle layer slowed, then frozen).
    flow = mfpde.flows.Multilayer(activations=("tanh", "tanh"), rates=(1.0, 1.0, 1.0))
    prob = mfpde.FlowProblem(flow, _data(), mfpde.measures.IIDLayers(std=1.0, mean=(0.0, 0.5, 0.5)), (0.0, 1.0))
    rates = np.array([[1.0, 1.0, 1.0], [1.0, 0.5, 1.0], [1.0, 0.0, 1.0]])
    study = mfpde.EnsembleProblem(prob, {"rates": rates, "seed": [0, 1]})
    ds = mfpde.solve(study, Units(n=(6, 6)), saveat=[1.0], batch_size=4).dataset
    assert ds.loss.dims == ("rates", "seed", "time") and ds.rates_value.dims == ("rates", "rates_entry")
    np.testing.assert_array_equal(ds.rates_value, rates)
    for i, row in enumerate(rates):
        single = mfpde.solve(mfpde.remake(prob, rates=row), Units(n=(6, 6)), saveat=[1.0], key=1).dataset
        np.testing.assert_allclose(ds.risk.isel(rates=i).sel(seed=1), single.risk, rtol=1e-10)
    assert float(ds.loss.isel(rates=0, time=-1).mean()) != float(ds.loss.isel(rates=2, time=-1).mean())
    mfpde.Solution(ds).to_netcdf(tmp_path / "rates.nc")
    xr.testing.assert_identical(mfpde.load(tmp_path / "rates.nc").dataset, ds)
    with pytest.raises(ValueError, match="sweep `rates`: the values must all have the same shape"):
        mfpde.EnsembleProblem(prob, {"rates": [[1.0, 1.0, 1.0], [1.0, 1.0]]})
    with pytest.raises(ValueError, match="`rates` of Multilayer must have one entry per layer"):
        mfpde.EnsembleProblem(prob, {"rates": [[1.0, 1.0], [1.0, 0.5]]})


# Per point, a Units study equals its single solves to rounding in test_sweep_over_learning_rate_ratios (the same
# code path with a vector parameter); that case here runs with `-m slow`.
@pytest.mark.parametrize(("stepping", "rtol"), [pytest.param("per_point", 1e-10, marks=pytest.mark.slow), ("shared", 1e-6)])
def test_batched_sweep_equals_single_solves(stepping, rtol):
    flow = mfpde.flows.Multilayer(activations=("tanh", "tanh"), l2=0.0)
    prob = mfpde.FlowProblem(flow, _data(), mfpde.measures.IIDLayers(std=1.0, mean=(0.0, 0.5, 0.5)), (0.0, 1.0))
    study = mfpde.EnsembleProblem(prob, {"l2": [0.0, 0.1], "seed": [0, 1, 2]})
    ds = mfpde.solve(study, Units(n=(6, 6)), saveat=[1.0], batch_size=4, batch_stepping=stepping).dataset
    assert ds.loss.dims == ("l2", "seed", "time") and ds.num_steps.dims == ("l2", "seed")
    for l2 in (0.0, 0.1):
        for seed in range(3):
            single = mfpde.solve(mfpde.remake(prob, l2=l2), Units(n=(6, 6)), saveat=[1.0], key=seed).dataset
            np.testing.assert_allclose(ds.risk.sel(l2=l2, seed=seed), single.risk, rtol=rtol)


def test_checkpointed_units_run_resumes_to_the_uninterrupted_one(tmp_path):
    # The one driver gives Units the checkpointed runs of Particles: segments stored as they finish, a rerun
    # continuing from the last one. Each segment ends its steps on its last save time, so the run agrees with the
    # one in one piece to the solver's tolerance (rtol 1e-6), and the resumed run with the first to rounding.
    # Two segments of equal length: one compiled program for both (a last, shorter segment is resumed in
    # test_particles_sde.py::test_checkpointed_scan_draws_the_noise_of_the_unchecked_run, through the same driver).
    prob = mfpde.FlowProblem(mfpde.flows.Multilayer(activations=("tanh", "tanh")), _data(),
                             mfpde.measures.IIDLayers(std=1.0), (0.0, 1.0))
    saveat = np.linspace(0.25, 1.0, 4)
    whole = mfpde.solve(prob, Units(n=(4, 4)), saveat=saveat, key=1).dataset
    first = mfpde.solve(prob, Units(n=(4, 4)), saveat=saveat, key=1, directory=tmp_path, checkpoint_every=2).dataset
    assert len(list(tmp_path.glob("*.nc"))) == 2
    np.testing.assert_allclose(first.risk.values, whole.risk.values, rtol=1e-5)
    (tmp_path / sorted(p.name for p in tmp_path.glob("*.nc"))[-1]).unlink()  # as if interrupted in the last segment
    resumed = mfpde.solve(prob, Units(n=(4, 4)), saveat=saveat, key=1, directory=tmp_path, checkpoint_every=2).dataset
    np.testing.assert_allclose(resumed.risk.values, first.risk.values, rtol=1e-12)
