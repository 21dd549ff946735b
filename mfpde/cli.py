"""The `mfpde` command line: `demo`, `run`, `sweep` and `show`.

Only the standard library is imported until a command runs, so `mfpde --help` answers at once. A user's error (a
bad command line, configuration or file) ends with one line on stderr and exit status 2, before anything is compiled;
`MFPDE_TRACEBACK=1` shows the traceback instead.
"""

import argparse
import math
import os
import shlex
import sys
import tempfile
from pathlib import Path

_EPILOG = """examples:
  mfpde demo                                        # the quick start: run.nc and run.png
  mfpde run study.toml -o out.nc                    # the problem a TOML file describes
  mfpde sweep study.toml --set temperature=0:0.1:16 --set seed=0:8 -o outdir   # a study, resumable
  mfpde show out.nc                                 # summary and a PNG beside the file

`mfpde COMMAND --help` describes each command's options; the TOML format is in the
documentation's "Command line and TOML" page. MFPDE_TRACEBACK=1 shows a traceback
instead of the one-line message of an error."""


class UsageError(Exception):
    """A user's error the command reports in one line (exit status 2)."""

    kind = "error"


class _BadConfig(UsageError):
    """A configuration file that cannot be read as TOML (raised before `mfpde._config`, which imports JAX, is)."""

    kind = "configuration error"


class _Formatter(argparse.RawDescriptionHelpFormatter):
    """Wraps a description to the terminal, keeps an epilog's lines (its examples) as written."""

    def _fill_text(self, text, width, indent):
        if "\n" in text:
            return super()._fill_text(text, width, indent)
        return argparse.HelpFormatter._fill_text(self, text, width, indent)


class _Parser(argparse.ArgumentParser):
    """Reports a bad command line in one line on stderr (argparse prints the whole usage first)."""

    def error(self, message):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        value = 0
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be a positive integer, got {text!r}")
    return value


def _integer(text: str) -> int:
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be an integer, got {text!r}") from None


def _number(text: str, *, positive: bool) -> float:
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not math.isfinite(value) or value < 0 or (positive and value == 0):
        raise argparse.ArgumentTypeError(f"must be {'a positive number' if positive else 'a number ≥ 0'}, got {text!r}")
    return value


def _positive_number(text: str) -> float:
    return _number(text, positive=True)


def _nonnegative_number(text: str) -> float:
    return _number(text, positive=False)


def build_parser() -> argparse.ArgumentParser:
    """The parser of `mfpde` and its four commands."""
    formatter = _Formatter
    parser = _Parser(prog="mfpde", description="Solve mean-field flows of neural-network training.", epilog=_EPILOG,
                     formatter_class=formatter)
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND",
                                     help="demo, run, sweep or show")

    demo = commands.add_parser(
        "demo", formatter_class=formatter,
        help="solve a two-layer tanh flow on a teacher task; write NetCDF and a PNG",
        description="Solve a two-layer tanh flow (l2 = 1e-4) on a teacher task (label noise 0.01, 1000 test points) "
                    "with N particles, save 101 times, and write the NetCDF file and a PNG of the loss and the neurons "
                    "beside it.",
        epilog="examples:\n  mfpde demo\n  mfpde demo --particles 8192 --dim 10 --t1 50 -o tanh.nc\n"
               "  mfpde demo --temperature 0.01 --seed 3 -q      # noisy (mean-field Langevin) training")
    demo.add_argument("-o", "--out", default="run.nc", metavar="FILE",
                      help="NetCDF file to write; the PNG goes beside it, with the suffix .png (default: run.nc; "
                           "e.g. -o results/tanh.nc)")
    demo.add_argument("--particles", type=_positive_int, default=2048, metavar="N",
                      help="number of particles N (default: 2048; e.g. --particles 8192)")
    demo.add_argument("--samples", type=_positive_int, default=256, metavar="n",
                      help="training points n of the teacher task (default: 256; e.g. --samples 1024)")
    demo.add_argument("--dim", type=_positive_int, default=2, metavar="d",
                      help="input dimension d (default: 2; e.g. --dim 10)")
    demo.add_argument("--t1", type=_positive_number, default=100.0, metavar="T",
                      help="final mean-field time, > 0 (default: 100.0; e.g. --t1 20)")
    demo.add_argument("--temperature", type=_nonnegative_number, default=0.0, metavar="TAU",
                      help="temperature τ ≥ 0; τ > 0 adds the noise of mean-field Langevin dynamics (default: 0.0; "
                           "e.g. --temperature 0.01)")
    demo.add_argument("--seed", type=_integer, default=0,
                      help="seed of the data, the initial particles and the noise (default: 0; e.g. --seed 3)")
    demo.set_defaults(run=_demo)

    run = commands.add_parser(
        "run", formatter_class=formatter, help="solve the problem a TOML configuration describes",
        description="Build the problem, the algorithm and the solve options from a TOML file, solve, and write the "
                    "result. The command line is appended to the result's `history` attribute, the configuration's "
                    "text is kept in its `config` attribute.",
        epilog="examples:\n  mfpde run study.toml\n  mfpde run study.toml -o results/run.nc --dtype float32 -q")
    run.add_argument("config", metavar="CONFIG",
                     help="TOML file with the tables [flow], [init], [problem], [algorithm] and optionally [data], "
                          "[solve], [sweep] (required; e.g. study.toml)")
    run.add_argument("-o", "--out", default="run.nc", metavar="FILE",
                     help="NetCDF file to write (default: run.nc; e.g. -o results/run.nc)")
    run.set_defaults(run=_run)

    sweep = commands.add_parser(
        "sweep", formatter_class=formatter, help="solve a parameter study; resumable in its output folder",
        description="Solve the study of the configuration's [sweep] table, extended or overridden by each --set. "
                    "Batches are written to OUTDIR/points/ as they finish and the merged result to OUTDIR/sweep.nc; "
                    "the same command again resumes from the batches written.",
        epilog="examples:\n  mfpde sweep study.toml --set temperature=0:0.1:16 --set seed=0:8 -o outdir\n"
               '  mfpde sweep study.toml --set l2=0,1e-3,1e-2\n  mfpde sweep layers.toml --set "rates=[[1, 1, 1], '
               '[1, 0.5, 1]]"')
    sweep.add_argument("config", metavar="CONFIG",
                       help="TOML file, as for `mfpde run`, optionally with a [sweep] table (required; e.g. study.toml)")
    sweep.add_argument("--set", action="append", default=[], metavar="NAME=VALUES",
                       help="sweep NAME over VALUES: a:b:num (num points from a to b), a:b (the integers a … b−1), "
                            "a,b,c, or a TOML array with one row per point for a vector parameter; repeatable "
                            "(default: the [sweep] table alone; e.g. --set temperature=0:0.1:16 --set seed=0:8)")
    sweep.add_argument("-o", "--out", default="sweep", metavar="OUTDIR",
                       help="output folder: batches in OUTDIR/points/, the merged result in OUTDIR/sweep.nc "
                            "(default: sweep; e.g. -o studies/temperature)")
    sweep.set_defaults(run=_sweep)

    show = commands.add_parser(
        "show", formatter_class=formatter, help="summarise a result file and plot it to PNG",
        description="Print the summary and the dimension sizes of a result written by mfpde, and plot it: the loss "
                    "curves and the neurons (when saved) or the grid density; for a sweep, every point's loss curve.",
        epilog="examples:\n  mfpde show run.nc\n  mfpde show outdir/sweep.nc --png figures/sweep.png")
    show.add_argument("file", metavar="FILE", help="NetCDF result written by mfpde (required; e.g. run.nc)")
    show.add_argument("--png", metavar="PNG",
                      help="PNG to write (default: FILE with the suffix .png, beside it; e.g. --png figures/run.png)")
    show.set_defaults(run=_show)

    for sub in (demo, run, sweep):
        sub.add_argument("-q", "--quiet", action="store_true",
                         help="no progress bar (default: off, a progress bar on stderr; e.g. -q)")
        sub.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                         help="floating-point precision of the whole computation and of the results written: float64 "
                              "as the Python API with jax_enable_x64, or float32, which leaves JAX's 64-bit mode off "
                              "(default: float64; e.g. --dtype float32)")
    return parser


def _setup(dtype: str | None = "float64"):
    """Set JAX's precision before anything builds an array: a configuration built in float32 and solved in float64
    (or the reverse) would mix precisions. `dtype="float32"` leaves 64-bit off, so JAX computes in float32; `None`
    leaves it as it is (`show` computes nothing). Each command calls it after the checks that need no JAX, so that
    those errors answer at once."""
    if dtype is not None:
        import jax

        jax.config.update("jax_enable_x64", dtype == "float64")
    import matplotlib

    matplotlib.use("Agg")


def _check_writable(option: str, path: Path, *, folder: bool = False) -> None:
    """Refuse, before anything is solved, an output `path` (a file, or with `folder` a folder) that cannot be written:
    a file name that is a folder, a folder that is a file, a folder below a file, or a place without write access
    (tried with a temporary file, so that it holds for root and read-only file systems alike)."""
    if folder and path.exists() and not path.is_dir():
        raise UsageError(f"{option} {path}: is a file, not a folder")
    if not folder and path.is_dir():
        raise UsageError(f"{option} {path} is a folder; give a file name, e.g. {option} {path / 'run.nc'}")
    existing = path if folder else path.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise UsageError(f"{option} {path}: {existing} is not a folder")
    try:
        handle, name = tempfile.mkstemp(prefix=".mfpde-", suffix=".tmp", dir=existing)
    except OSError as e:
        raise UsageError(f"{option}: cannot write into {existing} ({e.strerror or e})") from None
    os.close(handle)
    os.unlink(name)


def _read_config(path: str) -> tuple[dict, str]:
    """The configuration's tables and text; a missing, unreadable, binary or malformed file is an error naming it."""
    import tomllib

    path = Path(path)
    if path.is_dir():
        raise UsageError(f"{path} is a folder, not a TOML file")
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        raise UsageError(f"{path}: no such file") from None
    except OSError as e:
        raise UsageError(f"{path}: cannot read it ({e.strerror or e})") from None
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise UsageError(f"{path}: not a text file (UTF-8); give a TOML configuration") from None
    try:
        return tomllib.loads(text), text
    except tomllib.TOMLDecodeError as e:
        raise _BadConfig(f"{path}: invalid TOML: {e}") from None


def _check_saveat(problem, options: dict) -> None:
    """`solve.saveat` against the problem's time span, before anything is compiled."""
    from ._saveat import save_times

    from ._config import ConfigError

    base = getattr(problem, "problem", problem)  # an EnsembleProblem's problem
    try:
        save_times(options.get("saveat"), base.tspan)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"solve.saveat: {e}") from None


def _solve(args, problem, algorithm, **options):
    import mfpde

    print(f"mfpde {args.command}: compiling {type(algorithm).__name__} for this problem (seconds to a minute), "
          "then solving ...", file=sys.stderr, flush=True)
    try:
        return mfpde.solve(problem, algorithm, **options)
    except (TypeError, ValueError) as e:  # the algorithm refuses the problem or an option
        raise UsageError(str(e)) from e


def _finish(sol, out: Path, command: str, config_text: str | None = None) -> int:
    ds = sol.dataset
    ds.attrs["history"] = f"{ds.attrs['history']}\n{command}"
    if config_text is not None:
        ds.attrs["config"] = config_text
    sol.to_netcdf(out)
    print(sol.summary())
    print(f"  wrote        {out}")
    return 0 if sol.success else 1


def _demo(args) -> int:
    out = Path(args.out)
    _check_writable("-o", out)
    _setup(args.dtype)
    import jax.numpy as jnp

    import mfpde

    from ._registry import algorithm

    data = mfpde.datasets.teacher(args.seed, n=args.samples, d=args.dim, activation="tanh", noise=0.01, n_test=1000)
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=1e-4, temperature=args.temperature)
    prob = mfpde.FlowProblem(flow, data, init=mfpde.measures.Gaussian(std=1.0), tspan=(0.0, args.t1))
    sol = _solve(args, prob, algorithm("Particles")(n=args.particles, save_state=True), saveat=jnp.linspace(0.0, args.t1, 101),
                 key=args.seed, progress_meter=not args.quiet)
    sol.plot(color="u").savefig(out.with_suffix(".png"), dpi=120)  # w_0, w_1 (u, w for d = 1)
    print(f"  plot         {out.with_suffix('.png')}")
    return _finish(sol, out, args.command_line)


def _run(args) -> int:
    out = Path(args.out)
    _check_writable("-o", out)
    config, text = _read_config(args.config)
    _setup(args.dtype)
    from ._config import build

    problem, algorithm, options = build(config)  # every error names its key, before anything is compiled
    _check_saveat(problem, options)
    options.setdefault("progress_meter", not args.quiet)
    sol = _solve(args, problem, algorithm, **options)
    return _finish(sol, out, args.command_line, text)


def _sweep(args) -> int:
    outdir = Path(args.out)
    _check_writable("-o", outdir, folder=True)
    config, text = _read_config(args.config)
    _setup(args.dtype)
    from ._config import ConfigError, build, parse_range

    overrides = {}
    for item in args.set:
        name, sep, value = item.partition("=")
        if not sep:
            raise ConfigError(f"--set: expected NAME=VALUES, got {item!r}")
        overrides[name.strip()] = parse_range(value.strip())
    problem, algorithm, options = build(config, overrides)
    import mfpde

    if not isinstance(problem, mfpde.EnsembleProblem):
        raise ConfigError("sweep: nothing to sweep; give --set NAME=VALUES or a [sweep] table")
    _check_saveat(problem, options)
    options.setdefault("progress_meter", not args.quiet)
    sol = _solve(args, problem, algorithm, directory=outdir / "points", **options)
    return _finish(sol, outdir / "sweep.nc", args.command_line, text)


def _show(args) -> int:
    _setup(None)
    import mfpde

    try:
        sol = mfpde.load(args.file)
    except (FileNotFoundError, ValueError) as e:
        raise UsageError(str(e)) from None
    png = Path(args.png) if args.png else Path(args.file).with_suffix(".png")
    _check_writable("--png" if args.png else "--png (default)", png)
    print(sol.summary())
    print(f"  dims         {dict(sol.dataset.sizes)}")
    ds = sol.dataset
    curve = "loss" if "loss" in ds else "risk" if "risk" in ds else None
    try:
        fig = _sweep_plot(sol) if curve and "time" in ds[curve].dims and ds[curve].ndim > 1 else sol.plot()
    except ValueError as e:  # nothing to plot
        print(f"  plot         none: {e}")
        return 0
    fig.savefig(png, dpi=120)
    print(f"  plot         {png}")
    return 0


def _value(value) -> str:
    value = value.item() if hasattr(value, "item") else value
    return f"{value:g}" if isinstance(value, float) else str(value)


def _point_labels(curve) -> list[str]:
    """`name=value, ...` of every point of a study (in C order of its dimensions other than time)."""
    import itertools

    dims = [d for d in curve.dims if d != "time"]
    parts = []
    for d in dims:  # the coordinate along d named d, else the others along d alone, else the index
        along = [name for name, c in curve.coords.items() if c.dims == (d,)]
        along = [d] if d in along else along
        parts.append([", ".join(f"{name}={_value(curve[name].values[i])}" for name in along) or f"{d}={i}"
                      for i in range(curve.sizes[d])])
    return [", ".join(labels) for labels in itertools.product(*parts)]


def _sweep_plot(sol, max_labels: int = 12):
    """Every point's loss curve (risk where there is no loss) over time, one line per point, in a legend with at most
    `max_labels` entries (evenly spread, the first and the last among them)."""
    import matplotlib.pyplot as plt
    import numpy as np

    from ._solution import _label, _units

    ds = sol.dataset
    curve = ds["loss" if "loss" in ds else "risk"]
    dims = [d for d in curve.dims if d != "time"]
    values = curve.transpose(*dims, "time").values.reshape(-1, curve.sizes["time"])
    labels = _point_labels(curve)
    shown = set(np.unique(np.linspace(0, len(values) - 1, min(len(values), max_labels)).round().astype(int)).tolist())
    colors = plt.get_cmap("viridis")(np.linspace(0.0, 0.9, len(values)))
    fig, ax = plt.subplots(figsize=(6.5, 4.2))
    for i, (row, label) in enumerate(zip(values, labels)):
        ax.plot(curve.time, row, lw=0.8, color=colors[i], label=label if i in shown else "_nolegend_")
    finite = values[np.isfinite(values)]
    if finite.size and np.all(finite > 0):
        ax.set_yscale("log")
    ax.set_xlabel("time (mean-field units)")
    ax.set_ylabel(_label(curve) + _units(curve))
    title = f"{len(values)} points" + (f" ({len(shown)} named)" if len(shown) < len(values) else "")
    ax.legend(fontsize=7, title=title, title_fontsize=8, loc="best")
    ax.set_title(ds.attrs.get("title", ""), fontsize=9)
    fig.tight_layout()
    return fig


def _fail(prog: str, kind: str, error: BaseException, message: str | None = None) -> int:
    if os.environ.get("MFPDE_TRACEBACK"):
        raise error
    message = " ".join((str(error) if message is None else message).split())  # one line
    print(f"{prog}: {kind}: {message}", file=sys.stderr)
    return 2


def main(argv=None) -> int:
    """Run the command line `argv` (default `sys.argv[1:]`); returns the exit status (0 done, 1 the solve stopped
    early, 2 a user's error, reported in one line on stderr, 130 interrupted)."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        args = build_parser().parse_args(argv)
    except SystemExit as e:  # --help (0), or a bad command line (2), already reported
        return e.code if isinstance(e.code, int) else 2
    args.command_line = "mfpde " + shlex.join(argv)
    prog = f"mfpde {args.command}"
    try:
        return args.run(args)
    except UsageError as e:
        return _fail(prog, e.kind, e)
    except KeyboardInterrupt:
        print(f"{prog}: interrupted", file=sys.stderr)
        return 130
    except OSError as e:  # e.g. a disk that filled up while writing
        return _fail(prog, "error", e, f"{e.filename}: {e.strerror}" if e.filename and e.strerror else None)
    except ValueError as e:
        config = sys.modules.get("mfpde._config")  # imported (with JAX) only by the commands that build one
        if config is not None and isinstance(e, config.ConfigError):
            return _fail(prog, "configuration error", e)
        raise


if __name__ == "__main__":
    sys.exit(main())
