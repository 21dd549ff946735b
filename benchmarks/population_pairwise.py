"""The O(N²) interaction of the population risk: the library's velocity against a hand-written JAX version of the
same sum, and its memory at large N.

Problem: the isotropic-Gaussians population (d = 40, Δ = 0.5) and a ReLU network without bias, whose kernel is the
arc-cosine kernel of order 1. The alternative a user would write: the energy
R = ½ − α Σ_c π_c y_c Σ_j m_j u_j s_c|w_j|/√(2π) + ½ α² Σ_c π_c Σ_{jl} m_j m_l u_j u_l s_c² K₁(w_j, w_l) summed densely
(or in row blocks with `lax.map` when N² does not fit), differentiated by `jax.grad`. Both are jitted; compile time
is reported apart from the median run time. Peak memory: XLA's temporary buffers of the compiled velocity
(`memory_analysis`), and the resident peak of a fresh process that evaluates it once.

    python benchmarks/population_pairwise.py [--sizes 1024 4096 16384] [--large 65536]
"""

import argparse
import json
import math
import subprocess
import sys
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402

import mfpde  # noqa: E402
from _common import fmt_time, machine, machine_line, median_time, met, write_section  # noqa: E402

D, DELTA, BLOCK = 40, 0.5, 512


def case(N, seed=0):
    key_u, key_w = jax.random.split(jax.random.key(seed))
    theta = jnp.concatenate([jax.random.normal(key_u, (N, 1)), jax.random.normal(key_w, (N, D)) / math.sqrt(D)], 1)
    return theta, jnp.full(N, 1.0 / N)


def hand_written_energy(theta, masses, block):
    """The population risk with the arc-cosine kernel written out, rows in blocks of `block` (dense if ≥ N)."""
    u, w = theta[:, 0] * masses, theta[:, 1:]
    norms = jnp.sqrt(jnp.sum(w**2, 1))
    N = theta.shape[0]

    def rows(args):
        u_r, w_r, n_r = args
        cos = jnp.clip((w_r @ w.T) / (n_r[:, None] * norms[None]), -1 + 1e-12, 1 - 1e-12)  # arccos is not differentiable at ±1
        angle = jnp.arccos(cos)
        kernel = n_r[:, None] * norms[None] * (jnp.sqrt(1 - cos**2) + (jnp.pi - angle) * cos) / (2 * jnp.pi)
        return jnp.sum(u_r[:, None] * u[None] * kernel)

    if block >= N:
        pair = rows((u, w, norms))
    else:
        pair = jnp.sum(jax.lax.map(jax.checkpoint(rows), (u.reshape(-1, block), w.reshape(-1, block, D), norms.reshape(-1, block))))
    total = 0.0
    for scale, label in ((1 + DELTA, 1.0), (1 - DELTA, -1.0)):
        linear = label * scale * jnp.sum(u * norms) / math.sqrt(2 * math.pi)
        total += 0.5 * (0.5 - linear + 0.5 * scale**2 * pair)
    return total


def velocities(block):
    pop = mfpde.datasets.isotropic_gaussians(D, DELTA)
    flow = mfpde.flows.TwoLayer("relu")
    library = jax.jit(lambda th, m: flow.velocity(0.0, th, m, pop, chunk_size=block))
    hand = jax.jit(lambda th, m: -jax.grad(hand_written_energy)(th, m, block) / m[:, None])
    return library, hand


def timed(fn, args, calls):
    start = time.perf_counter()
    compiled = fn.lower(*args).compile()
    compile_time = time.perf_counter() - start
    run = median_time(lambda: compiled(*args), calls)
    temp = compiled.memory_analysis().temp_size_in_bytes
    return compile_time, run, temp, compiled(*args)


def peak_of_one_evaluation(N):
    """Evaluate the library's velocity once at N in a fresh process; its peak resident memory (MiB) and time."""
    code = f"""
import resource, sys, time; sys.path.insert(0, "benchmarks")
from population_pairwise import case, velocities
import jax
library, _ = velocities({BLOCK})
theta, m = case({N})
t = time.perf_counter(); jax.block_until_ready(library(theta, m)); t = time.perf_counter() - t
print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024, t)
"""
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout.split()
    return float(out[-2]), float(out[-1])


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--sizes", type=int, nargs="+", default=[1024, 4096, 16384])
    parser.add_argument("--large", type=int, default=65536)
    parser.add_argument("--calls", type=int, default=5)
    args = parser.parse_args()
    info = machine()
    rows = []
    for N in args.sizes:
        block = N if N <= 4096 else BLOCK
        theta, m = case(N)
        library, hand = velocities(block)
        lib = timed(library, (theta, m), args.calls)
        ref = timed(hand, (theta, m), args.calls)
        gap = float(jnp.max(jnp.abs(lib[3] - ref[3])) / jnp.max(jnp.abs(ref[3])))
        rows.append({"N": N, "block": block, "lib": lib[:3], "hand": ref[:3], "ratio": lib[1] / ref[1], "gap": gap})
        print(json.dumps(rows[-1]), flush=True)
    peak = peak_of_one_evaluation(args.large) if args.large else None
    worst = max(r["ratio"] for r in rows)
    lines = ["| N | block | mfpde run | hand-written run | ratio | mfpde compile | hand compile | XLA temp (mfpde / hand) | max rel. difference |",
             "|---|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['N']} | {r['block']} | {fmt_time(r['lib'][1])} | {fmt_time(r['hand'][1])} | {r['ratio']:.2f} | "
                     f"{fmt_time(r['lib'][0])} | {fmt_time(r['hand'][0])} | {r['lib'][2] / 2**20:.0f} / {r['hand'][2] / 2**20:.0f} MiB | {r['gap']:.1e} |")
    body = ("Script: `benchmarks/population_pairwise.py`. Velocity of N particles under the isotropic-Gaussians "
            f"population risk (d = {D}, ReLU, arc-cosine kernel), float64, medians of {args.calls} calls after "
            "compilation.\n\n" + "\n".join(lines) + "\n\n"
            f"Target: mfpde at most 1.3× the hand-written sum: worst ratio {worst:.2f}, {met(worst <= 1.3)}.\n")
    if peak:
        state = args.large * (D + 1) * 8 / 2**20
        body += (f"\nN = {args.large} in blocks of {BLOCK}: one velocity evaluation took {fmt_time(peak[1])}, peak "
                 f"resident memory {peak[0]:.0f} MiB (state {state:.0f} MiB; a dense N×N kernel would need "
                 f"{args.large**2 * 8 / 2**30:.0f} GiB).\n")
    body += "\n" + machine_line(info) + "\n"
    write_section("## Population risk: pairwise interaction", body)
    print(body)


if __name__ == "__main__":
    main()
