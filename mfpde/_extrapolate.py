import warnings

import numpy as np
import scipy.stats
import xarray as xr

from ._algorithm import AbstractAlgorithm, solve
from ._ensemble import EnsembleProblem
from ._problem import FlowProblem
from ._solution import Solution, cf_attributes
from ._timing import Timer

_WIDTH, _SEED = "algorithm_n", "seed"


def extrapolate(source, algorithm: AbstractAlgorithm | None = None, *, widths=None, seeds=8, observable: str = "loss",
                rate: float = 1.0, level: float = 0.95, **options) -> Solution:
    """The infinite-width limit of an observable, with a confidence interval, from runs at several widths × seeds.

    At each width N the seeds give the mean ȳ_N and its standard error s_N/√S of the observable (S seeds). The model

        E[y_N] = y_∞ + a N^{−rate}

    (rate 1 for the O(1/N) bias of a mean-field observable; ½ for a quantity that converges like a Monte-Carlo error)
    is fitted to the means by weighted least squares, weights 1/se_N². The fit is linear in the data, y_∞ = Σ_N c_N ȳ_N,
    so it is also the mean over seeds of y_∞,s = Σ_N c_N y_{N,s}, whose spread gives its standard error and a
    Student-t interval with S − 1 degrees of freedom. This holds whether the widths share their seeds (as a study's
    do: the first particles of N = 16 are those of N = 8, correlated runs whose differences are less noisy) or not.
    `lack_of_fit` (Hotelling's T² of the means off the fitted curve, for three widths or more) and its `p_value` test
    the model: a small p-value says the rate is wrong or the widths too small for it (a warning below 0.01). Every
    other dimension of the observable (e.g. `time`) is fitted point by point: a risk curve in the limit, with its band.

    **Arguments:**

    - `source`: an `mfpde.FlowProblem` to run, or a `Solution` of a study with dims `algorithm_n` and `seed` (e.g.
      of `EnsembleProblem(problem, {"algorithm.n": widths, "seed": seeds})`), to fit without running.
    - `algorithm`: for a problem, the algorithm whose width is swept (e.g. `solvers.Particles()`).
    - `widths`: at least three widths N (for a problem).
    - `seeds`: the seeds, or their number (for a problem; at least two).
    - `observable`: the data variable to extrapolate.
    - `rate`: the assumed convergence rate (> 0) of the bias in N.
    - `level`: the confidence level of the interval.
    - `**options`: passed to `mfpde.solve` (`saveat`, tolerances, …).

    **Returns:** a `Solution` whose dataset holds, over `width` and `seed`, the observable's `values`; over `width` its
    `mean` and `standard_error`; and, over the observable's other dims, `limit` (y_∞), `limit_low`, `limit_high`,
    `limit_standard_error`, `slope` (a), `lack_of_fit` and `p_value`; its `plot()` draws the fit (`plot(times=t)`
    at one time).
    """
    if not 0 < level < 1:
        raise ValueError(f"`level` of extrapolate must lie in (0, 1), got {level!r}.")
    if not np.isfinite(rate) or rate <= 0:
        raise ValueError(f"`rate` of extrapolate must be a positive number, got {rate!r}.")
    with Timer() as timer:
        if isinstance(source, Solution):
            study, problem = source.dataset, source.problem
        elif isinstance(source, FlowProblem):
            if algorithm is None or not hasattr(algorithm, "n"):
                raise ValueError("`algorithm`: extrapolate needs an algorithm with a width `n`, e.g. solvers.Particles().")
            widths = _widths(widths)
            seeds = np.arange(seeds) if np.ndim(seeds) == 0 else np.asarray(seeds)
            if seeds.size < 2:
                raise ValueError(f"`seeds` of extrapolate must number at least two (a standard error), got {seeds.size}.")
            problem = source
            study = solve(EnsembleProblem(source, {"algorithm.n": widths, _SEED: seeds}), algorithm, **options).dataset
        else:
            raise TypeError(f"`source` must be an mfpde.FlowProblem or a study's Solution, got {type(source).__name__}.")
        dataset = _fit(study, observable, rate, level)
    dataset.attrs.update(cf_attributes(f"infinite-width limit of {observable}", "mfpde.extrapolate"))
    dataset.attrs.update(wall_time_s=timer.wall_time, compile_time_s=timer.compile_time, run_time_s=timer.run_time)
    return Solution(dataset, problem)


def _widths(widths) -> np.ndarray:
    values = np.asarray(widths if widths is not None else [], dtype=float)
    if values.ndim != 1 or np.unique(values).size < 3:
        raise ValueError(f"`widths` of extrapolate must hold at least three different widths (a line and its error), "
                         f"got {widths!r}.")
    if np.any(values < 1) or np.any(values != np.round(values)):
        raise ValueError(f"`widths` of extrapolate must be positive integers, got {widths!r}.")
    return values.astype(int)


def _fit(study: xr.Dataset, observable: str, rate: float, level: float) -> xr.Dataset:
    if observable not in study:
        raise ValueError(f"`observable` {observable!r} is not in the results; choose one of {sorted(study.data_vars)}.")
    values = study[observable]
    if _WIDTH not in values.dims or _SEED not in values.dims:
        raise ValueError(f"`source` must be a study over widths and seeds (dims {_WIDTH!r} and {_SEED!r}), got dims "
                         f"{values.dims}.")
    _widths(values[_WIDTH].values)
    if values.sizes[_SEED] < 2:
        raise ValueError(f"`seeds` of extrapolate must number at least two (a standard error), got {values.sizes[_SEED]}.")
    values = values.rename({_WIDTH: "width"}).transpose("width", _SEED, ...)
    y = np.asarray(values.values, dtype=float)
    N = values["width"].values.astype(float)
    S, W = y.shape[1], len(N)
    mean, se = y.mean(axis=1), y.std(axis=1, ddof=1) / np.sqrt(S)
    # Weights 1/se_N² of the least-squares line through the means on [1, x], x = N^-rate, per trailing entry (a
    # width whose seeds all agree gets the largest weight, not an infinite one).
    variance = se**2
    largest = variance.max(axis=0)
    w = 1.0 / np.maximum(variance, np.where(largest > 0, 1e-12 * largest, 1.0))
    x = (N**-rate).reshape((-1,) + (1,) * (y.ndim - 2))
    sw, swx, swxx = w.sum(0), (w * x).sum(0), (w * x**2).sum(0)
    det = sw * swxx - swx**2
    c_limit, c_slope = w * (swxx - swx * x) / det, w * (sw * x - swx) / det
    # Seed by seed, y_∞ = Σ_N c_N y_{N,s} and a likewise: their means over seeds are the fit, their spread its error,
    # whether the widths share their seeds (common random numbers, correlated across widths) or not.
    per_seed_limit = np.einsum("w...,ws...->s...", c_limit, y)
    per_seed_slope = np.einsum("w...,ws...->s...", c_slope, y)
    limit, slope = per_seed_limit.mean(0), per_seed_slope.mean(0)
    limit_se = per_seed_limit.std(0, ddof=1) / np.sqrt(S)
    half = scipy.stats.t.ppf(0.5 + level / 2, S - 1) * limit_se
    statistic, p_value = _lack_of_fit(y, N**-rate)
    if np.nanmin(np.atleast_1d(p_value), initial=1.0) < 0.01:
        warnings.warn(f"extrapolate: the model y_∞ + a N^-{rate:g} fits some points poorly (p < 0.01): the rate may be "
                      "wrong or the widths too small for it; the interval is then not to be trusted.", stacklevel=3)
    rest = values.dims[2:]
    coords = {name: values[name] for name in rest if name in values.coords}
    unit = {"units": values.attrs.get("units", "1")}
    name = values.attrs.get("long_name", observable)
    over = {"width": ("width", N.astype(int), {"long_name": "width N"}), _SEED: values[_SEED]}
    return xr.Dataset(
        {
            "values": (("width", _SEED, *rest), y, {**unit, "long_name": f"{name}, per width and seed"}),
            "mean": (("width", *rest), mean, {**unit, "long_name": f"mean of {observable} over seeds"}),
            "standard_error": (("width", *rest), se, {**unit, "long_name": "standard error of that mean"}),
            "limit": (rest, limit, {**unit, "long_name": f"{observable} extrapolated to infinite width"}),
            "limit_low": (rest, limit - half, {**unit, "long_name": f"lower end of its {level:.0%} confidence interval"}),
            "limit_high": (rest, limit + half, {**unit, "long_name": f"upper end of its {level:.0%} confidence interval"}),
            "limit_standard_error": (rest, limit_se, {**unit, "long_name": "standard error of the limit"}),
            "slope": (rest, slope, {**unit, "long_name": f"a in {observable} ≈ limit + a N^-rate"}),
            "lack_of_fit": (rest, statistic, {"units": "1", "long_name": "Hotelling's T² of the means off the fitted curve"}),
            "p_value": (rest, p_value, {"units": "1", "long_name": "P(T² ≥ lack_of_fit) if the model holds"}),
        },
        coords={**over, **coords},
        attrs={"observable": observable, "rate": rate, "level": level, "seeds": S},
    )


def _lack_of_fit(y, x):
    """Hotelling's T² test that the means of y (width, seed, ...) lie on a line in x: the W − 2 contrasts orthogonal
    to [1, x], per seed, have mean zero. Returns (T², p-value), NaN where W = 2 or the seeds are too few."""
    W, S = y.shape[:2]
    k = W - 2
    rest = y.shape[2:]
    if k < 1 or S <= k:
        return np.full(rest, np.nan), np.full(rest, np.nan)
    basis = np.linalg.qr(np.stack([np.ones(W), x, *np.eye(W)[: k]], axis=1))[0][:, 2:]  # orthonormal complement
    u = np.einsum("wk,ws...->...sk", basis, y)  # (..., S, k)
    u_mean = u.mean(-2)
    centred = u - u_mean[..., None, :]
    cov = np.einsum("...sk,...sl->...kl", centred, centred) / (S - 1)
    cov = cov + np.eye(k) * 1e-300
    t2 = S * np.einsum("...k,...k->...", u_mean, np.linalg.solve(cov, u_mean[..., None])[..., 0])
    f = t2 * (S - k) / (k * (S - 1))
    return t2, scipy.stats.f.sf(f, k, S - k)


def plot_extrapolation(dataset: xr.Dataset, **selection):
    """The figure of an extrapolation: over time (when the observable has one more dimension), the mean per width and
    the limit with its band; otherwise the means ± standard errors against N^{−rate}, the fitted line and the limit
    with its interval at 0. Returns a matplotlib Figure.

    **Arguments:**

    - `dataset`: the dataset of `extrapolate`'s result.
    - `**selection`: values (nearest) of the other dimensions to keep to, e.g. `time=10.0` for the N^{−rate} plot.
    """
    import matplotlib.pyplot as plt

    ds = dataset.sel(**selection, method="nearest") if selection else dataset
    observable, rate, level = ds.attrs["observable"], ds.attrs["rate"], ds.attrs["level"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    if ds["limit"].ndim == 1:
        (axis,) = ds["limit"].dims
        for N in ds.width.values:
            ax.plot(ds[axis], ds["mean"].sel(width=N), lw=1, label=f"N = {N} (mean of {ds.sizes['seed']} seeds)")
        ax.fill_between(ds[axis], ds.limit_low, ds.limit_high, color="k", alpha=0.2)
        ax.plot(ds[axis], ds.limit, "k", label=f"N → ∞, {level:.0%} band")
        ax.set(xlabel=axis, ylabel=observable)
    elif ds["limit"].ndim == 0:
        x = ds.width.values.astype(float) ** -rate
        ax.errorbar(x, ds["mean"], yerr=ds.standard_error, fmt="o", label="mean over seeds ± s.e.")
        line = np.linspace(0, x.max(), 50)
        ax.plot(line, float(ds.limit) + float(ds.slope) * line, "C0--", label="fit")
        ax.errorbar([0], [float(ds.limit)], yerr=[[float(ds.limit - ds.limit_low)], [float(ds.limit_high - ds.limit)]],
                    fmt="s", color="C3", capsize=4, label=f"N → ∞, {level:.0%} interval")
        ax.set(xlabel=f"N^-{rate:g}", ylabel=observable)
    else:
        raise ValueError(f"plot_extrapolation draws a limit of at most one dimension; select values of "
                         f"{ds['limit'].dims[1:]}, e.g. {ds['limit'].dims[-1]}=...")
    ax.legend(fontsize=8)
    fig.tight_layout()
    return fig
