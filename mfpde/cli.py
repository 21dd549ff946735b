"""The `mfpde` command line: `demo`, `run`, `sweep` and `show`."""

import argparse
import shlex
import sys
from pathlib import Path


def _setup(dtype: str = "float64"):
    """Set JAX's precision before anything builds an array: a configuration built in float32 and solved in float64
    (or the reverse) would mix precisions. `dtype="float32"` leaves 64-bit off, so JAX computes in float32."""
    import jax

    jax.config.update("jax_enable_x64", dtype == "float64")
    import matplotlib

    matplotlib.use("Agg")


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
    import jax.numpy as jnp

    import mfpde
    from solvers import Particles

    data = mfpde.datasets.teacher(args.seed, n=args.samples, d=args.dim, activation="tanh", noise=0.01, n_test=1000)
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=1e-4, temperature=args.temperature)
    prob = mfpde.FlowProblem(flow, data, init=mfpde.measures.Gaussian(std=1.0), tspan=(0.0, args.t1))
    sol = mfpde.solve(
        prob, Particles(n=args.particles, save_particles=True), saveat=jnp.linspace(0.0, args.t1, 101), key=args.seed,
        progress_meter=not args.quiet,
    )
    out = Path(args.out)
    sol.plot(coords=("w_0", "w_1"), color="u").savefig(out.with_suffix(".png"), dpi=120)
    print(f"  plot         {out.with_suffix('.png')}")
    return _finish(sol, out, args.command_line)


def _run(args) -> int:
    from ._config import build, load_config

    config = load_config(args.config)
    problem, algorithm, options = build(config)  # every error names its key, before anything is compiled
    import mfpde

    options.setdefault("progress_meter", not args.quiet)
    sol = mfpde.solve(problem, algorithm, **options)
    return _finish(sol, Path(args.out), args.command_line, Path(args.config).read_text())


def _sweep(args) -> int:
    from ._config import ConfigError, build, load_config, parse_range

    config = load_config(args.config)
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
    outdir = Path(args.out)
    options.setdefault("progress_meter", not args.quiet)
    sol = mfpde.solve(problem, algorithm, directory=outdir / "points", **options)
    return _finish(sol, outdir / "sweep.nc", args.command_line, Path(args.config).read_text())


def _show(args) -> int:
    import mfpde

    sol = mfpde.load(args.file)
    print(sol.summary())
    print(f"  dims         {dict(sol.dataset.sizes)}")
    png = Path(args.png) if args.png else Path(args.file).with_suffix(".png")
    fig = sol.plot() if sol.dataset.risk.dims == ("time",) else _sweep_plot(sol)
    fig.savefig(png, dpi=120)
    print(f"  plot         {png}")
    return 0


def _sweep_plot(sol):
    import matplotlib.pyplot as plt

    loss = sol.dataset["loss" if "loss" in sol.dataset else "risk"]
    fig, ax = plt.subplots(figsize=(5.5, 4.2))
    flat = loss.stack(point=[d for d in loss.dims if d != "time"]) if loss.ndim > 1 else loss
    ax.plot(loss.time, flat.values, lw=0.8)
    ax.set_yscale("log")
    ax.set_xlabel("time (mean-field units)")
    ax.set_ylabel(loss.name)
    ax.set_title(f"{flat.sizes.get('point', 1)} points", fontsize=9)
    return fig


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="mfpde", description="Solve mean-field flows of neural-network training.")
    commands = parser.add_subparsers(dest="command", required=True)
    demo = commands.add_parser("demo", help="solve a two-layer tanh flow on a teacher task; write NetCDF and a PNG")
    demo.add_argument("-o", "--out", default="run.nc", help="NetCDF file to write (the PNG goes beside it)")
    demo.add_argument("--particles", type=int, default=2048, help="number of particles N")
    demo.add_argument("--samples", type=int, default=256, help="training points n")
    demo.add_argument("--dim", type=int, default=2, help="input dimension d")
    demo.add_argument("--t1", type=float, default=100.0, help="final mean-field time")
    demo.add_argument("--temperature", type=float, default=0.0, help="temperature τ ≥ 0")
    demo.add_argument("--seed", type=int, default=0)
    demo.set_defaults(run=_demo)
    run = commands.add_parser("run", help="solve the problem a TOML configuration describes")
    run.add_argument("config")
    run.add_argument("-o", "--out", default="run.nc")
    run.set_defaults(run=_run)
    sweep = commands.add_parser("sweep", help="solve a parameter study; resumable in its output folder")
    sweep.add_argument("config")
    sweep.add_argument("--set", action="append", default=[], metavar="NAME=VALUES",
                       help="sweep NAME over a:b:num (linspace), a:b (integers) or a,b,c; repeatable")
    sweep.add_argument("-o", "--out", default="sweep", help="output folder (batches in points/, merged sweep.nc)")
    sweep.set_defaults(run=_sweep)
    show = commands.add_parser("show", help="summarise a result file and plot it to PNG")
    show.add_argument("file")
    show.add_argument("--png", help="PNG to write (default beside the file)")
    show.set_defaults(run=_show)
    for sub in (demo, run, sweep):
        sub.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
        sub.add_argument("--dtype", choices=("float64", "float32"), default="float64",
                         help="floating-point precision of the whole computation and of the results written "
                              "(default float64, as the Python API with jax_enable_x64; float32 leaves JAX's 64-bit "
                              "mode off)")
    args = parser.parse_args(argv)
    args.command_line = "mfpde " + shlex.join(argv)
    _setup(getattr(args, "dtype", "float64"))
    from ._config import ConfigError

    try:
        return args.run(args)
    except ConfigError as e:
        print(f"mfpde {args.command}: configuration error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
