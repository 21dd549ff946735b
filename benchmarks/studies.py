"""Studies against a loop of single solves: 64 and 1024 points, deterministic and noisy.

The study a user would otherwise write as a Python loop: a tanh two-layer flow (n = 256 teacher points, d = 10,
t ∈ [0, 5], 11 save times) swept over the weight decay λ (deterministic, τ = 0) or over the temperature × seed
(noisy, τ > 0, 16 seeds), each point solved with mfpde's defaults. Per case:

  (b) the loop: `mfpde.solve(remake(prob, ...), Particles(n), key=seed)` for every point (compiled once; the timed
      pass is the second);
  (a) `mfpde.solve(EnsembleProblem(prob, sweep), Particles(n), batch_size=B)`, per-point steps (the default), and
  (a') the same with `batch_stepping="shared"` (one step size per batch, each seed's noise drawn once per step).

Where the loop's time goes: per solve, the compiled program's run time (`run_time_s`) and the rest (checks, the
initial draw, building the dataset), so that a case that misses the 10× target has its reason measured. Compile time
apart. Writes the section "## Studies against a loop" (with `--particles` other than 64, its N in the heading).

    python benchmarks/studies.py                      # N = 64: 4 cases (~2 min on 2 cores)
    python benchmarks/studies.py --particles 1024     # N = 1024 (~20 min; --points 64: ~3 min)
    python benchmarks/studies.py --points 64 --output /tmp/smoke.md   # smoke test
"""

import argparse
import statistics
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mfpde  # noqa: E402
from solvers import Particles  # noqa: E402

import _common  # noqa: E402

TARGET = 10.0
SEEDS = 16


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--particles", type=int, default=64, help="width N (default 64)")
    p.add_argument("--points", type=int, nargs="+", default=[64, 1024], help="study sizes (default 64 1024)")
    p.add_argument("--batch", type=int, default=64, help="batch_size of the studies (default 64)")
    p.add_argument("--t1", type=float, default=5.0)
    p.add_argument("--output", type=Path, default=_common.RESULTS)
    return p.parse_args(argv)


def case(kind: str, points: int, t1: float):
    """(base problem, sweep) of `points` points: λ over τ = 0, or temperature × 16 seeds."""
    data = mfpde.datasets.teacher(0, n=256, d=10, activation="tanh")
    if kind == "deterministic":
        prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(activation="tanh", l2=1e-3), data, mfpde.measures.Gaussian(),
                                 (0.0, t1))
        return prob, {"l2": np.linspace(1e-4, 1e-2, points)}, False
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(activation="tanh", l2=1e-3, temperature=0.01), data,
                             mfpde.measures.Gaussian(), (0.0, t1))
    return prob, {"temperature": np.linspace(1e-3, 0.1, points // SEEDS), "seed": np.arange(SEEDS)}, True


def loop(prob, sweep, product, algorithm, saveat):
    """The loop of single solves, twice (the first compiles); (run time, compiled time inside it, steps)."""
    names = list(sweep)
    if product:
        grid = np.meshgrid(*[sweep[k] for k in names], indexing="ij")
        points = [dict(zip(names, values)) for values in zip(*[g.reshape(-1) for g in grid])]
    else:
        points = [dict(zip(names, values)) for values in zip(*[sweep[k] for k in names])]
    for _ in range(2):
        start, inside, steps = time.perf_counter(), 0.0, 0
        for point in points:
            seed = int(point.get("seed", 0))
            changes = {k: float(v) for k, v in point.items() if k != "seed"}
            ds = mfpde.solve(mfpde.remake(prob, **changes), algorithm, saveat=saveat, key=seed).dataset
            inside += float(ds.attrs["run_time_s"])
            steps += int(ds.num_steps)
        total = time.perf_counter() - start
    return total, inside, steps, len(points)


def study(prob, sweep, product, algorithm, saveat, batch, stepping):
    ens = mfpde.EnsembleProblem(prob, sweep, product=product)
    options = dict(saveat=saveat, batch_size=batch, batch_stepping=stepping)
    first = mfpde.solve(ens, algorithm, **options).dataset
    times = []
    for _ in range(2):
        start = time.perf_counter()
        ds = mfpde.solve(ens, algorithm, **options).dataset
        times.append(time.perf_counter() - start)
    return statistics.median(times), float(first.attrs["compile_time_s"]), int(ds.num_steps.sum())


def main(argv=None):
    args = parse_args(argv)
    info = _common.machine()
    algorithm, saveat = Particles(n=args.particles), np.linspace(0.0, args.t1, 11)
    rows, reasons = [], []
    for kind in ("deterministic", "noisy"):
        for points in args.points:
            prob, sweep, product = case(kind, points, args.t1)
            loop_time, inside, loop_steps, count = loop(prob, sweep, product, algorithm, saveat)
            per_point = study(prob, sweep, product, algorithm, saveat, args.batch, "per_point")
            shared = study(prob, sweep, product, algorithm, saveat, args.batch, "shared")
            best = min(per_point[0], shared[0])
            ratio = loop_time / best
            print(f"{kind} {count} points: loop {loop_time:.2f} s (compiled {inside:.2f} s), per point "
                  f"{per_point[0]:.2f} s, shared {shared[0]:.2f} s: {ratio:.1f}x", flush=True)
            rows.append(f"| {kind} | {count} | {_common.fmt_time(loop_time)} ({_common.fmt_time(inside / count)} + "
                        f"{_common.fmt_time((loop_time - inside) / count)}) | {_common.fmt_time(per_point[0])} "
                        f"({per_point[1]:.1f} s) | {_common.fmt_time(shared[0])} ({shared[1]:.1f} s) | "
                        f"**{ratio:.1f}×** {_common.met(ratio >= TARGET)} |")
            if ratio < TARGET:
                reasons.append(
                    f"- {kind}, {count} points: the loop spends {inside / loop_time:.0%} of its time in the compiled "
                    f"solves ({_common.fmt_time(inside / count)} a point, {loop_steps // count} steps) and "
                    f"{1 - inside / loop_time:.0%} around them; the study removes the latter at most, a bound of "
                    f"{loop_time / inside:.1f}× unless batching also makes the arithmetic cheaper (vmapped points: "
                    f"per point {_common.fmt_time(per_point[0] / count)}, shared {_common.fmt_time(shared[0] / count)}).")
    body = [
        f"`python benchmarks/studies.py --particles {args.particles}`: tanh two-layer, N = {args.particles}, n = 256, "
        f"d = 10, t ∈ [0, {args.t1:g}], 11 save times, float64, mfpde's defaults; deterministic: λ swept (τ = 0); noisy: "
        f"temperature × {SEEDS} seeds. Batches of {args.batch}. The loop's time per point split into its compiled "
        "solve and the rest; compile times in brackets.",
        "",
        "| case | points | (b) loop (per point: compiled + rest) | (a) study, per-point steps | (a') study, shared steps "
        "| loop / best study (target ≥ 10×) |",
        "|---|---:|---:|---:|---:|---:|",
        *rows,
    ]
    if reasons:
        body += ["", "Cases that miss the target, measured:", "", *reasons]
    body += ["", _common.machine_line(info)]
    heading = "## Studies against a loop" + ("" if args.particles == 64 else f" (N = {args.particles})")
    _common.write_section(heading, "\n".join(body), args.output)
    print(f"wrote {heading!r} to {args.output}")


if __name__ == "__main__":
    main()
