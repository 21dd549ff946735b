"""`mfpde.extrapolate`: the infinite-width limit with a confidence interval, checked for coverage where the limit is
known, and bad input."""

import warnings

import numpy as np
import pytest

import mfpde
from solvers import Particles

KAPPA, T1 = 1.0, 1.0
WIDTHS = [8, 16, 32]


def _ou():
    return mfpde.FlowProblem(mfpde.flows.OrnsteinUhlenbeck(kappa=KAPPA), None, mfpde.measures.Gaussian(std=1.0),
                             (0.0, T1))


def test_interval_covers_the_known_limit_at_its_level():
    """Ornstein–Uhlenbeck from N(0, 1) at τ = 0 in K Euler steps: θ_K = (1 − κ dt)^K θ_0 exactly, so the particles'
    variance (normalised by 1/N) has mean (1 − κ dt)^{2K} (1 − 1/N) and y_∞ = (1 − κ dt)^{2K}. Over 200 independent
    repetitions of 10 seeds × 3 widths, the 95 % interval must contain it between 90 % and 99 % of the time
    (measured 94.5 %; 78 % for an 80 % interval; the lack-of-fit test rejects the true model at p < 0.05 in 4.5 %)."""
    repetitions, seeds = 200, 10
    study = mfpde.EnsembleProblem(_ou(), {"algorithm.n": WIDTHS, "seed": np.arange(repetitions * seeds)})
    runs = mfpde.solve(study, Particles(method="scan", dt=0.1), saveat=[T1]).dataset
    truth = (1 - KAPPA * 0.1) ** (2 * round(T1 / 0.1))
    # The repetitions as one more dimension, fitted point by point in one call.
    variance = runs.theta_cov.isel(time=-1, param=0, param2=0, drop=True)
    split = variance.coarsen(seed=seeds).construct(seed=("repetition", "seed")).assign_coords(seed=np.arange(seeds))
    with warnings.catch_warnings():  # about 1 % of the fits of the true model have p < 0.01, and say so
        warnings.simplefilter("ignore")
        fits = mfpde.extrapolate(mfpde.Solution(split.to_dataset(name="variance")), observable="variance").dataset
    assert fits.limit.dims == ("repetition",)
    covered = (fits.limit_low <= truth) & (truth <= fits.limit_high)
    assert 0.90 <= float(covered.mean()) <= 0.99, float(covered.mean())
    assert 0.02 < float((fits.p_value < 0.05).mean()) < 0.1
    widths = (fits.limit_high - fits.limit_low).values
    # the fitted slope is that of the exact bias, −y_∞, on average
    fit = mfpde.extrapolate(mfpde.Solution(runs), observable="theta_cov").dataset.squeeze()
    assert abs(float(fit.slope) + truth) < 0.05 and abs(float(fit.limit) - truth) < 3 * float(fit.limit_standard_error)
    assert np.median(widths) > 4 * float(fit.limit_high - fit.limit_low)  # 200× the seeds: ~√200 narrower
    with pytest.warns(UserWarning, match="fits some points poorly"):  # a wrong rate is caught
        wrong = mfpde.extrapolate(mfpde.Solution(runs), observable="theta_cov", rate=3.0).dataset
    assert float(wrong.p_value.squeeze()) < 1e-6


def test_extrapolate_runs_a_problem_and_writes_netcdf(tmp_path):
    fit = mfpde.extrapolate(_ou(), Particles(method="scan", dt=0.1), widths=WIDTHS, seeds=4, observable="theta_cov",
                            saveat=[0.0, 0.5, 1.0])
    ds = fit.dataset.squeeze(["param", "param2"], drop=True)
    assert ds["values"].dims == ("width", "seed", "time") and ds.limit.dims == ("time",)
    assert list(ds.width.values) == WIDTHS and ds.attrs["seeds"] == 4
    np.testing.assert_allclose(ds["mean"].values, ds["values"].mean("seed").values, rtol=1e-14)
    assert np.all(ds.limit_low < ds.limit) and np.all(ds.limit < ds.limit_high)
    fit.to_netcdf(tmp_path / "limit.nc")
    back = mfpde.load(tmp_path / "limit.nc").dataset
    np.testing.assert_array_equal(back.limit.values, fit.dataset.limit.values)
    figure = mfpde.Solution(ds).plot()
    assert figure.axes[0].get_xlabel() == "time"
    assert mfpde.Solution(ds).plot(times=1.0).axes[0].get_xlabel() == "N^-1"


def test_bad_input():
    with pytest.raises(ValueError, match="`widths` of extrapolate must hold at least three different widths"):
        mfpde.extrapolate(_ou(), Particles(), widths=[8, 16])
    with pytest.raises(ValueError, match="`seeds` of extrapolate must number at least two"):
        mfpde.extrapolate(_ou(), Particles(), widths=[8, 16, 32], seeds=1)
    with pytest.raises(ValueError, match="`level` of extrapolate must lie in"):
        mfpde.extrapolate(_ou(), Particles(), widths=[8, 16, 32], level=95)
    with pytest.raises(ValueError, match="`algorithm`: extrapolate needs an algorithm with a width"):
        mfpde.extrapolate(_ou(), widths=[8, 16, 32])
    run = mfpde.solve(_ou(), Particles(n=4), saveat=[1.0])
    with pytest.raises(ValueError, match="must be a study over widths and seeds"):
        mfpde.extrapolate(run, observable="risk")
    with pytest.raises(ValueError, match="`observable` 'nothing' is not in the results"):
        mfpde.extrapolate(run, observable="nothing")
