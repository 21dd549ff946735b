"""The `mfpde` command line."""

import argparse
import sys
from pathlib import Path


def _demo(args) -> int:
    import jax

    jax.config.update("jax_enable_x64", True)
    import jax.numpy as jnp
    import matplotlib

    matplotlib.use("Agg")

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
    sol.to_netcdf(out)
    fig = sol.plot(coords=("w_0", "w_1"), color="u")
    png = out.with_suffix(".png")
    fig.savefig(png, dpi=120)
    print(sol.summary())
    print(f"  wrote        {out} and {png}")
    return 0 if sol.success else 1


def main(argv=None) -> int:
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
    demo.add_argument("-q", "--quiet", action="store_true", help="no progress bar")
    demo.set_defaults(run=_demo)
    args = parser.parse_args(argv)
    return args.run(args)


if __name__ == "__main__":
    sys.exit(main())
