"""Parameter studies: a 64-point temperature × seed sweep of a two-layer flow, batched against a loop of solves.

    python benchmarks/sweeps.py                          # full size: N = 1024, 16 temperatures × 4 seeds
    python benchmarks/sweeps.py --particles 128 --quick  # smoke test
    python benchmarks/sweeps.py --particles 65536 --t1 5 --batched-only --section "## Parameter sweeps on a GPU"

(a) `mfpde.solve(EnsembleProblem(...), Particles(n), batch_size=B)`: all points through one compiled vmapped program;
(b) a Python loop of `mfpde.solve(remake(prob, temperature=T), Particles(n), key=seed)`, compiled once and reused;
both with the same defaults (adaptive ShARK on a Brownian tree). Compile time is reported apart from run time.
Then points per second of (a) with 1, 2 and 4 forced host devices (the point axis sharded across them), each in its
own process. Writes the section "## Parameter sweeps" of benchmarks/RESULTS.md. With `--batched-only` (for a GPU
at N = 65 536), (a) alone, with points per second and the GPU's peak memory.
"""

import argparse
import json
import os
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mfpde  # noqa: E402
from solvers import Particles  # noqa: E402

sys.path.insert(0, os.path.dirname(__file__))
from _common import machine, machine_line, write_section  # noqa: E402

TARGET = 10.0


def study(args):
    data = mfpde.datasets.teacher(0, n=args.samples, d=args.dim)
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3, temperature=0.01), data, mfpde.measures.Gaussian(), (0.0, args.t1))
    sweep = {"temperature": np.linspace(0.0, 0.1, args.temperatures), "seed": np.arange(args.seeds)}
    return prob, mfpde.EnsembleProblem(prob, sweep)


def batched(args, devices_note=""):
    prob, ens = study(args)
    saveat = np.linspace(0, args.t1, 11)
    first = mfpde.solve(ens, Particles(n=args.particles), saveat=saveat, batch_size=args.batch)
    start = time.perf_counter()
    again = mfpde.solve(ens, Particles(n=args.particles), saveat=saveat, batch_size=args.batch)
    run = time.perf_counter() - start
    steps = again.dataset.num_steps.values.reshape(-1)
    return {"compile": first.dataset.attrs["compile_time_s"], "run": run, "points": int(np.prod(ens.shape)),
            "steps": int(steps.sum()), "lockstep": int(sum(steps[i:i + args.batch].max() * len(steps[i:i + args.batch])
                                                          for i in range(0, len(steps), args.batch))),
            "devices": jax.device_count(), "peak_bytes": _peak_device_bytes()}


def _peak_device_bytes():
    """Peak memory in use on the first device since the process started, where the backend reports it (GPUs)."""
    stats = jax.devices()[0].memory_stats() or {}
    return stats.get("peak_bytes_in_use")


def noise_cost(args, coarse_levels=8):
    """Time per step of one noisy point (the sweep's middle temperature, seed 0) with the default Brownian tree
    (18 levels) and with a coarser one, whose levels are fewer but still finer than the steps taken."""
    prob, _ = study(args)
    prob = mfpde.remake(prob, temperature=0.05)
    saveat = np.linspace(0, args.t1, 11)
    out = {}
    for levels in (18, coarse_levels):
        options = dict(saveat=saveat, brownian_tol=args.t1 * 2.0**-levels)
        mfpde.solve(prob, Particles(n=args.particles), **options)  # compiles
        times, steps = [], 0
        for _ in range(3):
            start = time.perf_counter()
            sol = mfpde.solve(prob, Particles(n=args.particles), **options)
            times.append(time.perf_counter() - start)
            steps = int(sol.dataset.num_steps)
        out[levels] = sorted(times)[1] / steps
    return out


def loop(args):
    """Two passes over the points: the first compiles (τ = 0 is an ODE, τ > 0 an SDE: two programs), the second is
    timed."""
    prob, ens = study(args)
    saveat = np.linspace(0, args.t1, 11)
    timings = []
    for _ in range(2):
        start, steps, compile_time = time.perf_counter(), 0, 0.0
        for point in ens.points():
            sol = mfpde.solve(mfpde.remake(prob, temperature=float(point["temperature"])), Particles(n=args.particles),
                              saveat=saveat, key=int(point["seed"]))
            steps += int(sol.dataset.num_steps)
            compile_time += sol.dataset.attrs["compile_time_s"]
        timings.append((time.perf_counter() - start, compile_time))
    return {"compile": timings[0][1], "run": timings[1][0], "steps": steps}


def _header(args, a):
    return f"""Script: `benchmarks/sweeps.py`. {a['points']} points ({args.temperatures} temperatures in [0, 0.1] × {args.seeds} seeds) of a
tanh two-layer flow, N = {args.particles}, n = {args.samples}, d = {args.dim}, t ∈ [0, {args.t1:g}], default adaptive SDE solver
(ShARK, rtol = atol = 1e-3), 11 save times.

| method | run time | solver steps (all points) | compile time |
|---|---|---|---|
"""


def _device_lines(a, info):
    device = jax.devices()[0]
    if device.platform != "gpu":
        return "\nGPU: not measured here (no accelerator was available to the run that wrote this section).\n\n" + machine_line(info)
    peak = a["peak_bytes"]
    return (f"\nOn the GPU ({device.device_kind}): {a['points'] / a['run']:.2f} points/s batched; peak GPU memory "
            f"{'not reported' if peak is None else f'{peak / 2**30:.2f} GiB'}.\n\n" + machine_line(info))


def main():
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--particles", type=int, default=1024)
    p.add_argument("--samples", type=int, default=256)
    p.add_argument("--dim", type=int, default=10)
    p.add_argument("--t1", type=float, default=10.0)
    p.add_argument("--temperatures", type=int, default=16)
    p.add_argument("--seeds", type=int, default=4)
    p.add_argument("--batch", type=int, default=64)
    p.add_argument("--devices-only", action="store_true", help="print the batched figures as JSON (used internally)")
    p.add_argument("--quick", action="store_true", help="skip the device scaling")
    p.add_argument("--batched-only", action="store_true",
                   help="time only the batched sweep (points/s, and GPU memory on a GPU), e.g. for N = 65536 on a GPU")
    p.add_argument("--section", default="## Parameter sweeps", help="the RESULTS.md section to write")
    args = p.parse_args()
    if args.devices_only:
        print(json.dumps(batched(args)))
        return
    info = machine()
    if args.batched_only:
        a = batched(args)
        body = (_header(args, a) + f"| (a) batched `EnsembleProblem`, batch {args.batch} | {a['run']:.2f} s | "
                f"{a['steps']} | {a['compile']:.1f} s |\n\n{a['points'] / a['run']:.2f} points/s.\n" + _device_lines(a, info))
        write_section(args.section, body)
        print(body)
        return
    a, b, noise = batched(args), loop(args), noise_cost(args)
    speedup = b["run"] / a["run"]
    rows = []
    if not args.quick:
        for count in (1, 2, 4):
            env = {**os.environ, "XLA_FLAGS": f"--xla_force_host_platform_device_count={count}", "JAX_PLATFORMS": "cpu"}
            cmd = [sys.executable, __file__, "--devices-only"] + [f"--{k}={v}" for k, v in
                   (("particles", args.particles), ("samples", args.samples), ("dim", args.dim), ("t1", args.t1),
                    ("temperatures", args.temperatures), ("seeds", args.seeds), ("batch", args.batch))]
            out = json.loads(subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout.splitlines()[-1])
            rows.append(f"| {count} | {out['points'] / out['run']:.2f} | {out['run']:.2f} s | {out['compile']:.1f} s |")
    body = _header(args, a) + f"""| (a) batched `EnsembleProblem`, batch {args.batch} | {a['run']:.2f} s | {a['steps']} | {a['compile']:.1f} s |
| (b) loop of single solves | {b['run']:.2f} s | {b['steps']} | {b['compile']:.1f} s |

Speed-up (b)/(a): **{speedup:.1f}×** (target ≥ {TARGET:g}×: {'met' if speedup >= TARGET else 'missed'}).
"""
    fine, coarse = noise[18], noise[min(noise)]
    per_level = (fine - coarse) / (18 - min(noise))
    body += (f"\nWhere a step's time goes: one noisy point (τ = 0.05, seed 0) takes {fine * 1e3:.1f} ms per step with the "
             f"default Brownian tree (`brownian_tol` = (t1 − t0)·2⁻¹⁸, 18 levels) and {coarse * 1e3:.1f} ms with "
             f"{min(noise)} levels: about {per_level * 1e3:.2f} ms per level, so drawing the noise (each step descends "
             f"the tree and draws the increment and Lévy area of all {args.particles * (args.dim + 2)} coordinates at every "
             f"level) is about {min(1.0, 18 * per_level / fine):.0%} of a step. Under vmap the points of a batch step in "
             f"lock step: the batched run did {a['lockstep']} point-steps of work for the {a['steps']} its points "
             f"needed.\n")
    if speedup < TARGET:
        body += (f"\nMissed: the loop already reuses one compiled program per solve path, so a single solve spends "
                 f"its {b['run'] / b['steps'] * 1e3:.1f} ms per solver step in compiled arithmetic, most of it the "
                 f"Brownian tree's random numbers (above), not in dispatch or Python. Batching removes only that small "
                 f"overhead; on two CPU cores the points' arithmetic cannot run more in parallel than one point's "
                 f"already does, the batch pays for its slowest point's steps, and every point takes the SDE path "
                 f"(the loop solves τ = 0 as an ODE). A ≥ 10× gain needs an overhead-bound loop or an accelerator.\n")
    if rows:
        body += "\nBatched points per second with forced host devices (the point axis sharded across them):\n\n"
        body += "| devices | points/s | run time | compile time |\n|---|---|---|---|\n" + "\n".join(rows) + "\n"
    body += _device_lines(a, info)
    write_section(args.section, body)
    print(body)


if __name__ == "__main__":
    main()
