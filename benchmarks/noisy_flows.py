"""Mean-field Langevin: weak error against wall time, mfpde's default SDE solve against Euler–Maruyama.

The noisy two-layer flow (tanh, weight decay λ, temperature τ) of N particles,

    dθ_j = −(N ∂J/∂θ_j + λ θ_j) dt + √(2τ) dB_j,   J = (1/n) Σ_i ½ (f(x_i) − y_i)²,   f = (1/N) Σ_j u_j tanh(w_j · x),

over t ∈ [0, t1], from the same initial particles per seed for every method. Observables at t1: the loss and the
particles' second moment m₂ = mean_j |θ_j|². Their expectations over `--seeds` seeds are compared with a reference:
a hand-written Euler–Maruyama `lax.scan` at the finest step and at twice it, Richardson-extrapolated (weak order 1).
Methods:

  (a) mfpde's default (`Particles()`, adaptive: Heun with predictable steps, the noise drawn per step), at its
      default tolerance and at the others of `--rtols`;
  (a0) the previous default: ShARK with the same PI controller, rejecting steps, on a Brownian tree (passed as
      `solver` and `stepsize_controller`, which keep the tree);
  (b) mfpde's fixed-step `Particles(method="scan", dt=...)` (Euler–Maruyama);
  (c) a hand-written Euler–Maruyama `lax.scan` (jitted, `jax.grad` of J), at the same steps as (b).

Weak error: |mean over seeds − reference| / |reference|, with the Monte-Carlo standard error of that mean (the
floor below which the figure is noise). Run time: one warm solve of seed 0, median of `--repeats`; compile time
apart. Writes the section "## Noisy flows: weak error against time" of benchmarks/RESULTS.md.

    python benchmarks/noisy_flows.py                                   # N = 1024 (several minutes)
    python benchmarks/noisy_flows.py --n-particles 128 --seeds 4 --output /tmp/smoke.md     # smoke test
"""

import argparse
import functools
import statistics
import time
from pathlib import Path

import diffrax
import jax

jax.config.update("jax_enable_x64", True)

import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mfpde  # noqa: E402
from solvers import Particles  # noqa: E402

import _common  # noqa: E402
from _common import fmt_time  # noqa: E402

SECTION = "## Noisy flows: weak error against time"


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--n-particles", type=int, default=1024, help="width N (default 1024)")
    p.add_argument("--d", type=int, default=10, help="input dimension (default 10)")
    p.add_argument("--n-samples", type=int, default=256, help="training points (default 256)")
    p.add_argument("--t1", type=float, default=10.0, help="final time (default 10)")
    p.add_argument("--temperature", type=float, default=1e-3, help="τ (default 1e-3)")
    p.add_argument("--l2", type=float, default=1e-2, help="weight decay λ (default 1e-2)")
    p.add_argument("--seeds", type=int, default=16, help="seeds (default 16)")
    p.add_argument("--steps", type=int, nargs="+", default=[12, 25, 50, 100, 200],
                   help="step counts of the fixed-step methods (default 12 25 50 100 200)")
    p.add_argument("--rtols", type=float, nargs="+", default=[3e-3, 1e-2],
                   help="other tolerances of the default method (rtol = atol; default 3e-3 1e-2)")
    p.add_argument("--reference-steps", type=int, default=3200, help="finest Euler–Maruyama steps (default 3200)")
    p.add_argument("--repeats", type=int, default=3, help="timed repeats (default 3)")
    p.add_argument("--output", type=Path, default=_common.RESULTS, help="results file (default benchmarks/RESULTS.md)")
    return p.parse_args(argv)


def log(*args):
    print(*args, flush=True)


def make_em(X, y, l2, tau):
    """The hand-written Euler–Maruyama loop (no mfpde code): θ ← θ − dt(N∇J + λθ) + √(2τ dt) ξ."""
    y = y[:, 0]

    def J(theta):
        f = jnp.tanh(X @ theta[:, 1:].T) @ theta[:, 0] / theta.shape[0]
        return jnp.mean(0.5 * (f - y) ** 2)

    grad = jax.grad(J)

    @functools.partial(jax.jit, static_argnums=3)
    def em(theta0, key, t1, steps):
        dt = t1 / steps
        N = theta0.shape[0]

        def step(theta, k):
            noise = jax.random.normal(jax.random.fold_in(key, k), theta.shape, theta.dtype)
            return theta - dt * (N * grad(theta) + l2 * theta) + jnp.sqrt(2 * tau * dt) * noise, None

        theta, _ = jax.lax.scan(step, theta0, jnp.arange(steps))
        return J(theta), jnp.mean(jnp.sum(theta**2, axis=1))

    return em


def main(argv=None):
    args = parse_args(argv)
    info = _common.machine()
    N, t1, S = args.n_particles, args.t1, args.seeds
    log(f"noisy tanh two-layer, N={N}, d={args.d}, n={args.n_samples}, τ={args.temperature}, λ={args.l2}, "
        f"t in [0, {t1}], {S} seeds")
    data = mfpde.datasets.teacher(0, n=args.n_samples, d=args.d, activation="tanh")
    flow = mfpde.flows.TwoLayer(activation="tanh", l2=args.l2, temperature=args.temperature)
    groups = flow.groups(data)
    starts = []
    for seed in range(S):
        sampled = mfpde.measures.Gaussian().sample(jax.random.key(1000 + seed), N, groups)
        starts.append({g: np.asarray(a) for g, a in sampled.items()})
    theta0 = [jnp.asarray(np.concatenate([s["u"], s["w"]], axis=1)) for s in starts]
    problems = [mfpde.FlowProblem(flow, data, mfpde.measures.Particles(**s), (0.0, t1)) for s in starts]

    em = make_em(data.X, data.y, args.l2, args.temperature)

    def em_all(steps, offset=0):
        out = [em(theta0[s], jax.random.key(offset + s), t1, steps) for s in range(S)]
        return np.array([[float(a), float(b)] for a, b in out])  # (S, 2): loss, m2

    # Reference: finest EM and twice its step, Richardson-extrapolated seed by seed (each seed's initial particles
    # are shared by every method, so per-seed differences cancel their spread; the noise paths are independent).
    start = time.perf_counter()
    fine, coarse = em_all(args.reference_steps), em_all(args.reference_steps // 2, offset=10_000)
    per_seed_reference = 2 * fine - coarse
    reference = per_seed_reference.mean(0)
    log(f"reference (EM {args.reference_steps} and {args.reference_steps // 2} steps, Richardson): loss "
        f"{reference[0]:.6g}, m2 {reference[1]:.6g} ({time.perf_counter() - start:.0f} s)")

    def error(values):
        """|E[value − reference]| / |reference| over seeds, and the standard error of that estimate."""
        difference = values - per_seed_reference
        return (np.abs(difference.mean(0)) / np.abs(reference),
                difference.std(0, ddof=1) / np.sqrt(S) / np.abs(reference))

    def timed(fn):
        times = []
        for _ in range(args.repeats):
            t0 = time.perf_counter()
            fn()
            times.append(time.perf_counter() - t0)
        return statistics.median(times)

    def mfpde_values(algorithm, **options):
        rows, meta = [], {}
        for seed, prob in enumerate(problems):
            ds = mfpde.solve(prob, algorithm, saveat=[t1], key=seed, **options).dataset
            rows.append([float(ds.loss[-1]), float(np.sum(np.diag(ds.theta_cov[-1]) + ds.theta_mean[-1] ** 2))])
            if seed == 0:
                meta = {"steps": int(ds.num_steps), "solver": ds.attrs.get("solver", ""),
                        "compile": float(ds.attrs["compile_time_s"])}
        run = timed(lambda: mfpde.solve(problems[0], algorithm, saveat=[t1], key=0, **options))
        return np.array(rows), meta, run

    rows = []
    tree = diffrax.ClipStepSizeController(diffrax.PIDController(rtol=1e-3, atol=1e-3, pcoeff=0.1, icoeff=0.3),
                                          step_ts=[t1])
    cases = [("(a) mfpde default", "Heun, predictable steps, rtol 1e-3", {})]
    cases += [("(a) mfpde default method", f"Heun, predictable steps, rtol {r:g}", {"rtol": r, "atol": r})
              for r in args.rtols]
    cases += [("(a0) previous default", "ShARK on a Brownian tree, rtol 1e-3",
               {"solver": diffrax.ShARK(), "stepsize_controller": tree})]
    for name, setting, options in cases:
        values, meta, run = mfpde_values(Particles(), **options)
        err, se = error(values)
        rows.append((name, setting, meta["steps"], err, se, run, meta["compile"]))
        log(f"{name} {setting}: {meta['steps']} steps, errors {err}, ± {se}, run {fmt_time(run)}")
    for steps in args.steps:
        dt = t1 / steps
        values, meta, run = mfpde_values(Particles(method="scan", dt=dt))
        err, se = error(values)
        rows.append(("(b) mfpde scan (Euler–Maruyama)", f"dt = {dt:.3g}", steps, err, se, run, meta["compile"]))
        log(f"(b) dt {dt:.3g}: errors {err} ± {se}, run {fmt_time(run)}")
        values = em_all(steps, offset=20_000)
        err, se = error(values)
        t0 = time.perf_counter()
        jax.block_until_ready(em(theta0[0], jax.random.key(0), t1, steps + 1))  # a new static shape: compile apart
        compile_em = time.perf_counter() - t0
        run = timed(lambda: jax.block_until_ready(em(theta0[0], jax.random.key(0), t1, steps)))
        rows.append(("(c) hand-written EM `lax.scan`", f"dt = {dt:.3g}", steps, err, se, run, compile_em))
        log(f"(c) dt {dt:.3g}: errors {err} ± {se}, run {fmt_time(run)}")

    table = ["| method | setting | steps | weak error, loss | weak error, m₂ | run time (seed 0, median) | compile |",
             "|---|---|---:|---:|---:|---:|---:|"]
    for name, setting, steps, err, se, run, compile_s in rows:
        table.append(f"| {name} | {setting} | {steps} | {err[0]:.1e} (± {se[0]:.0e}) | {err[1]:.1e} (± {se[1]:.0e}) | "
                     f"{fmt_time(run)} | {compile_s:.2f} s |")
    body = "\n".join([
        f"`python benchmarks/noisy_flows.py`: mean-field Langevin, tanh two-layer, N = {N}, d = {args.d}, "
        f"n = {args.n_samples} teacher points, τ = {args.temperature:g}, λ = {args.l2:g}, t ∈ [0, {t1:g}], float64, "
        f"{S} seeds (the same initial particles for every method). Weak error of the loss and of m₂ = mean |θ|² at t1 "
        f"against hand-written Euler–Maruyama at {args.reference_steps} and {args.reference_steps // 2} steps, "
        f"Richardson-extrapolated (loss {reference[0]:.6g}, m₂ {reference[1]:.6g}); in brackets the Monte-Carlo "
        "standard error of the comparison, below which a weak error is noise.",
        "",
        *table,
        "",
        _common.machine_line(info),
    ])
    _common.write_section(SECTION, body, args.output)
    log(f"wrote {SECTION!r} to {args.output}")


if __name__ == "__main__":
    main()
