"""A million particles: the throughput and peak memory of a two-layer gradient flow at N = 10⁶, d = 100, n = 1024.

The flow is the tanh two-layer network on teacher data, integrated by `Particles(method="scan")` (fixed-step Euler,
the step of a plain training loop) with the data term in chunks of training points, so that no N × n matrix is held
whole unless it fits (`chunk_size`; by default automatic). Against it, the loop a user would write: the same Euler
steps θ ← θ − dt·(N ∇_θ J) by `jax.grad` of the whole loss in a jitted `lax.fori_loop`, holding the N × n
pre-activations. Each case runs in its own process, for its peak memory: the resident high-water mark (VmHWM) and,
on an accelerator, the device's peak bytes in use. Figures: particle-steps per second N·steps / run time, compile
time apart. Then the chunk-size table the automatic chunk is chosen from.

    python benchmarks/scale.py             # N = 10⁶, d = 100, n = 1024, float32 (CPU: ~10 min; GPU: ~2 min)
    python benchmarks/scale.py --quick     # N = 16384, d = 20, n = 256: seconds (run by the test suite)

Writes the section "## A million particles" (with `--quick`, "## A million particles (quick)") of the results file;
the same command runs unchanged on a GPU.
"""

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path

SECTION = "## A million particles"
FULL = {"n_particles": 1_000_000, "d": 100, "n_samples": 1024, "steps": 4}
QUICK = {"n_particles": 16_384, "d": 20, "n_samples": 256, "steps": 2}
CHUNKS = [16, 64, 128, 256, 512, 0]  # 0: no chunks; 16 = 2²⁴/N, the automatic chunk without its floor of 128


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true", help="small sizes, no chunk table (seconds; for CI)")
    p.add_argument("--x64", action="store_true", help="float64 (default float32)")
    p.add_argument("--no-hand-written", action="store_true", help="skip the hand-written loop (it holds N × n whole)")
    p.add_argument("--output", type=Path, default=None, help="results file (default benchmarks/RESULTS.md)")
    p.add_argument("--child", type=str, default=None, help=argparse.SUPPRESS)
    return p.parse_args(argv)


def high_water_gib():
    """VmHWM: the peak resident memory of this process (None where /proc is absent)."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 2**20 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


def run_case(case: dict) -> dict:
    """One case in this process: "mfpde" (the library, `chunk` None for automatic, 0 for none) or "hand"."""
    import jax

    jax.config.update("jax_enable_x64", case["x64"])
    import jax.numpy as jnp

    import mfpde
    from solvers import Particles

    N, d, n, steps, dt = case["n_particles"], case["d"], case["n_samples"], case["steps"], 0.01
    data = mfpde.datasets.teacher(0, n=n, d=d, activation="tanh")
    out = {**case}
    if case["kind"] == "mfpde":
        flow = mfpde.flows.TwoLayer(activation="tanh")
        prob = mfpde.FlowProblem(flow, data, mfpde.measures.Gaussian(), (0.0, steps * dt))
        chunk = case["chunk"]
        algorithm = Particles(n=N, method="scan", dt=dt, chunk_size=None if chunk is None else (chunk or n))
        ds = mfpde.solve(prob, algorithm, saveat=[steps * dt], key=0, progress_meter=False).dataset
        out.update(compile_s=float(ds.attrs["compile_time_s"]), run_s=float(ds.attrs["run_time_s"]),
                   loss=float(ds.loss[-1]), chunk_used=ds.attrs.get("chunk_size"), result=str(ds.attrs["result_message"]))
    else:
        X, y = jnp.asarray(data.X), jnp.asarray(data.y[:, 0])

        def loss(theta):
            return jnp.mean(0.5 * (jnp.tanh(X @ theta[:, 1:].T) @ theta[:, 0] / N - y) ** 2)

        @jax.jit
        def train(theta):
            theta = jax.lax.fori_loop(0, steps, lambda i, th: th - dt * N * jax.grad(loss)(th), theta)
            return loss(theta)

        theta = jax.random.normal(jax.random.key(0), (N, 1 + d), X.dtype)
        start = time.perf_counter()
        compiled = train.lower(theta).compile()
        out["compile_s"] = time.perf_counter() - start
        start = time.perf_counter()
        out["loss"] = float(compiled(theta))
        out["run_s"] = time.perf_counter() - start
    out["particle_steps_per_s"] = N * steps / out["run_s"]
    out["peak_resident_gib"] = high_water_gib()
    stats = jax.devices()[0].memory_stats() or {}
    out["device_peak_gib"] = stats["peak_bytes_in_use"] / 2**30 if "peak_bytes_in_use" in stats else None
    out["device"] = f"{jax.devices()[0].device_kind} ({jax.default_backend()})"
    return out


def spawn(case: dict) -> dict:
    cmd = [sys.executable, os.path.abspath(__file__), "--child", json.dumps(case)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if proc.returncode != 0 or not lines:
        return {**case, "error": (proc.stderr.strip().splitlines() or ["no output"])[-1]}
    return json.loads(lines[-1])


def gib(value):
    return "–" if value is None else f"{value:.2f} GiB"


def row(label, r):
    if "error" in r:
        return f"| {label} | failed: {r['error'][:80]} | | | | | |"
    chunk = r.get("chunk_used")
    chunk = "–" if r["kind"] == "hand" else ("none" if chunk in (None, "None") else str(chunk))
    return (f"| {label} | {chunk} | {r['particle_steps_per_s']:.3g} | {r['run_s']:.2f} s | {r['compile_s']:.2f} s | "
            f"{gib(r['peak_resident_gib'])} | {gib(r['device_peak_gib'])} |")


def main(argv=None):
    args = parse_args(argv)
    if args.child is not None:
        print(json.dumps(run_case(json.loads(args.child))), flush=True)
        return
    sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
    import _common

    size = QUICK if args.quick else FULL
    base = {**size, "x64": args.x64}
    header = ["| case | chunk (training points) | particle-steps/s | run time | compile | peak resident | device peak |",
              "|---|---:|---:|---:|---:|---:|---:|"]
    main_case = spawn({**base, "kind": "mfpde", "chunk": None})
    print(row("mfpde, automatic chunks", main_case), flush=True)
    rows = [row("mfpde `Particles(method=\"scan\")`, automatic chunks", main_case)]
    if not args.no_hand_written:
        hand = spawn({**base, "kind": "hand"})
        print(row("hand-written", hand), flush=True)
        rows.append(row("hand-written `jax.grad` loop (N × n whole)", hand))
    table = []
    if not args.quick:
        for chunk in CHUNKS:
            r = spawn({**base, "kind": "mfpde", "chunk": chunk})
            print(row(f"chunk {chunk}", r), flush=True)
            table.append(row("mfpde", r))
    N, d, n, steps = size["n_particles"], size["d"], size["n_samples"], size["steps"]
    dtype = "float64" if args.x64 else "float32"
    if "error" in main_case:
        verdict = f"The library's run failed: {main_case['error']}."
    else:
        fits = main_case["peak_resident_gib"] is None or main_case["peak_resident_gib"] <= 16
        verdict = (f"Peak resident memory of the library's run {gib(main_case['peak_resident_gib'])} (target ≤ 16 GiB: "
                   f"{_common.met(fits)}); {main_case['particle_steps_per_s']:.3g} particle-steps/s.")
    body = [
        f"`python benchmarks/scale.py{' --quick' if args.quick else ''}`: tanh two-layer gradient flow, N = {N:,}, "
        f"d = {d}, n = {n} teacher points, {dtype}, {steps} Euler steps (dt = 0.01) and the loss at the end; each case "
        "in a fresh process. Particle-steps/s = N·steps / run time (compile apart).",
        "", *header, *rows, "", verdict,
    ]
    if table:
        body += ["", "Chunk sizes (the automatic one is chosen from this table):", "", *header, *table]
    body += ["", _common.machine_line(_common.machine())]
    heading = SECTION + (" (quick)" if args.quick else "")
    _common.write_section(heading, "\n".join(body), args.output or _common.RESULTS)
    print(f"wrote {heading!r} to {args.output or _common.RESULTS}")
    if "error" in main_case:
        sys.exit(1)


if __name__ == "__main__":
    main()
