import datetime
import functools
import importlib.metadata
import platform
import warnings

import diffrax
import jax
import numpy as np
import xarray as xr

from ._netcdf import (
    CONVENTIONS,
    TIME_ATTRS,
    check_written_by_mfpde,
    describe,
    sanitize_attrs,
    write_atomic,
)

SCALARS = ("objective", "convex_optimum", "gap", "relative_gap", "lower_bound", "full_train_risk", "full_test_risk")
RESULT_NAMES = tuple(diffrax.RESULTS._name_to_item)  # shared numbering with diffrax, optimistix and lineax


def result_code(result):
    """The integer code of a diffrax, optimistix or lineax result (their shared numbering: `RESULT_NAMES`), as a
    dataset's `result` variable stores it; traceable. Equinox's enumerations have no public integer, so this is the
    one place that reads it."""
    return result._value


def result_name(code: int) -> str:
    return RESULT_NAMES[int(code)] if 0 <= int(code) < len(RESULT_NAMES) else f"unknown_{int(code)}"


def result_message(codes) -> str:
    """The names of the distinct result codes among `codes`, e.g. "successful, nonfinite" (a file's `result_message`)."""
    return ", ".join(sorted({result_name(c) for c in np.ravel(codes)}))


def result_variable(codes, dims: tuple[str, ...] = ()) -> xr.Variable:
    """Result codes (diffrax's numbering, shared with optimistix and lineax) as a CF flag variable over `dims`."""
    flag_attrs = {
        "long_name": "solver result code",
        "flag_values": np.arange(len(RESULT_NAMES), dtype=np.int32),
        "flag_meanings": " ".join(RESULT_NAMES),
    }
    return xr.Variable(dims, np.asarray(codes, dtype=np.int32), flag_attrs)


@functools.cache
def versions() -> str:
    names = ("mfpde", "jax", "jaxlib", "equinox", "diffrax", "optimistix", "lineax", "xarray", "numpy")
    out = []
    for name in names:
        try:
            out.append(f"{name} {importlib.metadata.version(name)}")
        except importlib.metadata.PackageNotFoundError:
            pass
    return "; ".join(out + [f"python {platform.python_version()}"])


def cf_attributes(title: str, action: str) -> dict:
    """The global attributes CF asks of every file: `Conventions`, `title`, `source` (the package versions) and
    `history` (the time now and `action`, e.g. `"mfpde.certify(Solution, Convex)"`)."""
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    return {"Conventions": CONVENTIONS, "title": title, "source": versions(), "history": f"{now} {action}"}


def _at_precision(values) -> np.ndarray:
    """`values` as an array, floating point at JAX's precision: float32 unless 64-bit is on, as JAX computed it."""
    array = np.asarray(values)
    if array.dtype.kind == "f":
        return array.astype(jax.dtypes.canonicalize_dtype(array.dtype), copy=False)
    return array


def make_dataset(*, variables: dict, coords: dict, problem, algorithm, stats: dict, timing, attrs: dict, title: str,
                 stat_dims: tuple[str, ...] = ()):
    """Assemble a solver's output into a CF-annotated xarray Dataset (CF-1.10).

    Coordinates carry no fill value, and `time` is a CF time coordinate (`TIME_ATTRS`: mean-field time in nominal
    seconds since a nominal epoch). Floating-point values are kept at JAX's precision (float32 unless 64-bit is on).
    The problem's and algorithm's parameters become attributes, except large arrays such as an explicit initial
    state, which become variables (see `mfpde._netcdf.describe`).

    **Arguments:**

    - `variables`, `coords`: name → (dims, values, CF attributes). The dimensions `sample` and `output` of a
      finite training set get their index coordinates when `coords` does not give them.
    - `problem`, `algorithm`: recorded as attributes with all their parameters.
    - `stats`: solver statistics (integers, scalars or arrays over `stat_dims`); `result` becomes a CF flag variable.
    - `timing`: an `mfpde._timing.Timer`.
    - `attrs`: further global attributes (options, seed, solver names); `resumed_wall_time_s`, the wall time earlier
      calls of a resumed run spent on what this one read back, is added to `wall_time_s` and `run_time_s`.
    - `title`: the dataset's title.
    - `stat_dims`: the dimensions of the statistics (a study's swept parameters).
    """
    data_vars = {name: xr.Variable(dims, _at_precision(values), attrs) for name, (dims, values, attrs) in variables.items()}
    for name, value in stats.items():
        if name == "result":
            data_vars[name] = result_variable(value, stat_dims)
        else:
            data_vars[name] = xr.Variable(stat_dims, np.asarray(value, dtype=np.int64), {"long_name": name.replace("_", " "), "units": "1"})
    used = {dim for variable in data_vars.values() for dim in variable.dims}
    if problem.data is not None and hasattr(problem.data, "n"):  # the training points' axes, where not given
        for dim, size, long_name in (("sample", problem.data.n, "training point index"),
                                     ("output", problem.data.k, "output index")):
            if dim in used and dim not in coords:
                coords = {**coords, dim: ((dim,), np.arange(size), {"long_name": long_name})}
    coord_vars = {}
    for name, (dims, values, coord_attrs) in coords.items():
        if name == "time":
            coord_attrs = {**{k: v for k, v in coord_attrs.items() if k != "units"}, **TIME_ATTRS}
        coord_vars[name] = xr.Variable(dims, _at_precision(values), coord_attrs)
        coord_vars[name].encoding["_FillValue"] = None  # CF 2.5.1: no missing values in coordinates
    parameters = {}
    for obj, prefix in ((problem.flow, "flow"), (problem.init, "init"), (algorithm, "algorithm")):
        obj_attrs, arrays = describe(obj, prefix)
        parameters[prefix] = obj_attrs
        data_vars.update({name: variable.copy(data=_at_precision(variable.values)) for name, variable in arrays.items()})
    global_attrs = {
        **cf_attributes(title, f"mfpde.solve({type(problem).__name__}, {type(algorithm).__name__})"),
        "result_message": result_message(stats.get("result", 0)),
        # A resumed run adds the wall time earlier calls spent on the results it read back (`resumed_wall_time_s`).
        "wall_time_s": timing.wall_time + attrs.get("resumed_wall_time_s", 0.0),
        "compile_time_s": timing.compile_time,
        "run_time_s": timing.run_time + attrs.get("resumed_wall_time_s", 0.0),
        **parameters["flow"],
        **parameters["init"],
        **({"tspan": [float(t) for t in problem.tspan]} if hasattr(problem, "tspan") else {}),
        **parameters["algorithm"],
        **attrs,
    }
    if problem.data is not None:
        data = problem.data
        global_attrs.update({"data": data.name, "data_d": data.d, "data_k": data.k})
        global_attrs.update({"data_n": data.n} if hasattr(data, "n") else {"data_population_components": data.components})
    return xr.Dataset(data_vars, coord_vars, sanitize_attrs(global_attrs))


class IntegrationError(RuntimeError):
    """An integration that stopped early, raised with `throw=True`. `.solution` holds what was computed."""

    def __init__(self, message: str, solution: "Solution"):
        super().__init__(message)
        self.solution = solution


class Solution:
    """The result of `mfpde.solve`, `mfpde.certify` and `mfpde.repopulate`: a labelled `xarray.Dataset`
    (`.dataset`) with NetCDF I/O and quick plots.

    A failed or interrupted integration still returns a Solution: the times it did not reach hold NaN, and
    `result` (a CF flag variable, diffrax's numbering) says why it stopped.
    """

    def __init__(self, dataset: xr.Dataset, problem=None):
        self.dataset = dataset
        self.problem = problem  # the solved problem, in memory only (not written to NetCDF)

    @property
    def result(self) -> int:
        """The result code (0: successful; for a sweep, the first failure's); names in `dataset.result.flag_meanings`."""
        if "result" not in self.dataset:
            return 0
        codes = np.ravel(self.dataset["result"].values)
        return int(codes[codes != 0][0]) if np.any(codes != 0) else 0

    @property
    def success(self) -> bool:
        return self.result == 0

    @property
    def message(self) -> str:
        return result_name(self.result)

    def to_netcdf(self, path):
        """Write the dataset to `path` (netCDF4), atomically: a temporary file, then a rename."""
        return write_atomic(self.dataset, path)

    def summary(self) -> str:
        """A few lines: final loss (or a certificate's gap, a repopulation's full risks), steps, result, wall and
        compile time."""
        ds = self.dataset
        lines = [ds.attrs.get("title", "mfpde solution")]
        for name in ("loss", "risk", "free_energy", "test_loss"):
            if name in ds and ds[name].dims != ("time",) and "time" in ds[name].dims:
                final = ds[name].isel(time=-1).values
                lines.append(f"  {name:<12} final {np.nanmin(final):.6g} .. {np.nanmax(final):.6g} over {final.size} points")
            elif name in ds and "time" in ds[name].dims:
                finite = ds[name].dropna("time")
                if finite.size:
                    lines.append(f"  {name:<12} {float(finite[0]):.6g} -> {float(finite[-1]):.6g} (t = {float(finite.time[-1]):g})")
        for name in SCALARS:
            if name in ds and ds[name].ndim == 0:
                lines.append(f"  {name:<12} {float(ds[name]):.6g}")
        if "num_steps" in ds:
            lines.append(f"  steps        {int(ds.num_steps.sum())} ({int(ds.get('num_rejected_steps', 0).sum())} rejected)")
        lines.append(f"  result       {self.message}")
        lines.append(
            f"  time         {ds.attrs.get('wall_time_s', float('nan')):.2f} s wall, "
            f"{ds.attrs.get('compile_time_s', float('nan')):.2f} s compiling"
        )
        return "\n".join(lines)

    def __repr__(self):
        return f"Solution(result={self.message!r}, dims={dict(self.dataset.sizes)})"

    def plot(self, coords: tuple[str, ...] | str | None = None, times=None, color: str | None = None,
             max_paths: int = 200):
        """Loss curves over time, beside the measure: when the particles were saved (`save_state=True`), the
        neurons in the plane of two coordinates (their paths, the initial cloud in grey and the cloud at the last of
        `times`) or, for one coordinate, its histogram at `times`; for a grid solution (`density`), the density over
        two gridded coordinates at the last of `times`, or over one at `times`, the others integrated out. Every axis
        is labelled with its quantity. Returns a matplotlib Figure.

        **Arguments:**

        - `coords`: one or two coordinate names (`param` names; for a grid, gridded axes); default the first two of
          `w`, else the first two coordinates. A solution with neither particles nor a density refuses them.
        - `times`: times to show (nearest saved ones); default the first and the last reached.
        - `color`: a coordinate (e.g. "u") to colour the final cloud of particles by.
        - `max_paths`: at most this many particle paths are drawn.

        The result of `mfpde.extrapolate` is drawn by `plot_extrapolation` instead (`times`: one time to fit at).
        """
        import matplotlib.pyplot as plt

        ds = self.dataset
        if "limit" in ds and "observable" in ds.attrs:
            from ._extrapolate import plot_extrapolation

            return plot_extrapolation(ds, **({} if times is None else {"time": times}))
        if isinstance(coords, str):
            coords = (coords,)
        if coords is not None:
            coords = tuple(coords)
            if len(coords) not in (1, 2) or not all(isinstance(c, str) for c in coords):
                raise ValueError(f"`coords`: one or two coordinate names, got {coords!r}.")
        measure = "theta" if "theta" in ds else "density" if "density" in ds else None
        if measure is None and (coords is not None or color is not None):
            raise ValueError(f"`{'coords' if coords is not None else 'color'}`: this solution holds no particles "
                             "(solve with save_state=True) and no density to plot them from.")
        if measure == "density" and color is not None:
            raise ValueError("`color`: colours the cloud of particles; a grid solution has a density instead.")
        curves = [name for name in ("loss", "test_loss", "risk") if name in ds and ds[name].dims == ("time",)]
        panels = bool(curves) + (measure is not None)
        if not panels:
            raise ValueError("Nothing to plot: the solution has no loss over time, no particles and no density.")
        fig, axes = plt.subplots(1, panels, figsize=(5.5 * panels, 4.2), squeeze=False)
        axes = list(axes[0])
        if curves:
            ax = axes.pop(0)
            positive = True
            for name in curves:
                values = ds[name].values
                ax.plot(ds.time, values, label=_label(ds[name]))
                positive &= bool(np.all(values[np.isfinite(values)] > 0))
            if positive:
                ax.set_yscale("log")
            ax.set_xlabel("time (mean-field units)")
            ax.set_ylabel(", ".join(curves) + _units(ds[curves[0]]))
            ax.legend()
            ax.set_title(ds.attrs.get("title", ""), fontsize=9)
        if measure == "theta":
            self._plot_cloud(fig, axes[0], coords, times, color, max_paths)
        elif measure == "density":
            self._plot_density(fig, axes[0], coords, times)
        fig.tight_layout()
        return fig

    def _plot_cloud(self, fig, ax, coords, times, color, max_paths):
        ds = self.dataset
        names = [str(p) for p in ds.param.values]
        if coords is None:
            ws = [p for p in names if p.startswith("w")]
            coords = tuple((ws if len(ws) >= 2 else names)[:2])
        for argument, c in (*(("coords", c) for c in coords), *((("color", color),) if color else ())):
            if c not in names:
                raise ValueError(f"`{argument}`: {c!r} is not a coordinate; choose from {names}.")
        theta = ds.theta.dropna("time", how="all")
        if times is None:
            times = [theta.time.values[0], theta.time.values[-1]]
        snapshots = theta.sel(time=list(times), method="nearest")
        if len(coords) == 1:
            for t in snapshots.time.values:
                ax.hist(snapshots.sel(time=t, param=coords[0]), bins=50, density=True, histtype="step", label=f"t = {t:g}")
            ax.set_xlabel(coords[0])
            ax.set_ylabel("density")
            ax.legend()
            ax.set_title(f"particles: histogram of {coords[0]}", fontsize=9)
            return
        x, y = (theta.sel(param=c) for c in coords)
        stride = max(1, theta.sizes["particle"] // max_paths)
        ax.plot(x.values[:, ::stride], y.values[:, ::stride], color="0.6", lw=0.5, alpha=0.5)
        first, last = snapshots.isel(time=0), snapshots.isel(time=-1)
        ax.scatter(first.sel(param=coords[0]), first.sel(param=coords[1]), s=3, color="0.7", label=f"t = {float(first.time):g}")
        if color:
            c = last.sel(param=color).values
            lim = float(np.max(np.abs(c))) or 1.0
            points = ax.scatter(last.sel(param=coords[0]), last.sel(param=coords[1]), s=5, c=c, cmap="coolwarm",
                                vmin=-lim, vmax=lim, label=f"t = {float(last.time):g}")
            fig.colorbar(points, ax=ax, label=color)
        else:
            ax.scatter(last.sel(param=coords[0]), last.sel(param=coords[1]), s=5, color="C3", label=f"t = {float(last.time):g}")
        ax.set_xlabel(coords[0])
        ax.set_ylabel(coords[1])
        ax.legend(markerscale=3)
        ax.set_title("particles: paths, initial and final", fontsize=9)

    def _plot_density(self, fig, ax, coords, times):
        density = self.dataset["density"]
        gridded = [d for d in density.dims if d != "time"]
        if coords is None:
            coords = tuple(gridded[:2])
        for c in coords:
            if c not in gridded:
                raise ValueError(f"`coords`: {c!r} is not a gridded coordinate; choose from {gridded}.")
        if "time" in density.dims:
            reached = density.dropna("time", how="all")
            if times is None:
                times = [reached.time.values[0], reached.time.values[-1]]
            snapshots = [reached.sel(time=t, method="nearest") for t in times]
        else:
            snapshots = [density]
        others = [d for d in gridded if d not in coords]
        marginal = "marginal density" if others else "density"

        def integrate(snapshot):  # over the other gridded axes: the sum times the cell width
            for d in others:
                nodes = np.asarray(density[d].values, float) if d in density.coords else np.arange(density.sizes[d])
                snapshot = snapshot.sum(d) * (float(np.mean(np.diff(nodes))) if nodes.size > 1 else 1.0)
            return snapshot

        def at(snapshot):
            return f" at t = {float(snapshot.time):g}" if "time" in snapshot.coords else ""

        if len(coords) == 1:
            for snapshot in snapshots:
                ax.plot(density[coords[0]].values, integrate(snapshot).values, label=at(snapshot).strip() or None)
            ax.set_xlabel(coords[0])
            ax.set_ylabel(marginal)
            if any(at(s) for s in snapshots):
                ax.legend()
            ax.set_title(f"grid: {marginal} of {coords[0]}", fontsize=9)
            return
        last = integrate(snapshots[-1]).transpose(coords[1], coords[0])
        mesh = ax.pcolormesh(density[coords[0]].values, density[coords[1]].values, last.values, shading="nearest",
                             cmap="viridis")
        fig.colorbar(mesh, ax=ax, label=marginal)
        ax.set_xlabel(coords[0])
        ax.set_ylabel(coords[1])
        ax.set_title(f"grid: {marginal}{at(snapshots[-1])}", fontsize=9)


def _label(variable) -> str:
    """`name: long name` of a variable, or its name alone when it has no other."""
    long_name = variable.attrs.get("long_name")
    return f"{variable.name}: {long_name}" if long_name and long_name != variable.name else str(variable.name)


def _units(variable) -> str:
    """` [units]` of a variable with units, nothing for a dimensionless one (units "1")."""
    units = variable.attrs.get("units")
    return f" [{units}]" if units not in (None, "", "1") else ""


def load(path) -> Solution:
    """Read a Solution written by `Solution.to_netcdf`; `load(p).dataset` is identical to the one written.

    Times are read as the numbers written (mean-field time), not decoded to dates: `decode_times=False`. A file that
    is not NetCDF, or a NetCDF file mfpde did not write, is refused with a ValueError (read that with
    `xarray.open_dataset`); a missing one with FileNotFoundError.
    """
    check_written_by_mfpde(path)
    with xr.open_dataset(path, engine="netcdf4", decode_times=False) as ds:
        return Solution(ds.load())


def warn_or_raise(solution: Solution, throw: bool, what: str = "integration") -> Solution:
    """Warn (or raise IntegrationError, with the partial solution attached) when the `what` failed."""
    if solution.success:
        return solution
    message = f"The {what} stopped early: {solution.message}. The returned solution holds what was computed."
    if throw:
        raise IntegrationError(message, solution)
    warnings.warn(message, RuntimeWarning, stacklevel=3)
    return solution
