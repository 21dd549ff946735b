"""Deep flows: mfpde's layered flows on a three-layer tanh network against the same network written plainly in JAX.

The network has three layers of weights (two hidden tanh layers of width m), on n teacher points in d dimensions,

    f(x) = (1/m) Σ_k w3_k tanh((1/m) Σ_j w2_jk tanh(w1_j · x)),   J = (1/n) Σ_i ½ (f(x_i) − y_i)²,

trained by gradient flow in mean-field time, every weight of layer ℓ moving at rate m_{ℓ−1} m_ℓ (m_0 = m_3 = 1):
∂_t w_ℓ = −m_{ℓ−1} m_ℓ ∂J/∂w_ℓ. Three measurements, side by side in one run:

  1. One velocity evaluation — jitted, warmed up, median of `--velocity-calls` calls taken round-robin across the
     candidates so that drift of the machine hits all alike — of `flows.Multilayer`, `flows.FeatureDNN` (forms
     "weights" and "features") and `flows.FeatureResNet(form="weights")`, against a bare `jax.grad` of J written
     plainly in JAX (no mfpde code; the residual network's J for FeatureResNet), at m = 1024, n = 256, d = 10. In
     float64, and in float32 in a child process run without `jax_enable_x64`. Target: at most 1.3× the bare gradient.
  2. Time to accuracy at m = 1024 over t ∈ [0, 10] (the loss drops about tenfold), float64: mfpde's default adaptive
     solve (`flows.Multilayer` from `measures.IIDLayers`, `solvers.Units`) against fixed-step gradient descent in
     plain JAX (`jax.grad`, `lax.fori_loop`, jit) with the same per-layer multipliers and step dt in mean-field time.
     Accuracy: relative Frobenius error ‖w − w_ref‖ / ‖w_ref‖ of the final weights of all layers together, against
     an mfpde solve at rtol 1e-10. Each method takes its cheapest setting reaching `--tol` (1e-4): mfpde the loosest
     rtol of 1e-3, 1e-4, …; gradient descent the largest step t1/K (K from two coarse runs by Euler's first-order
     error, then verified). Run times are medians of `--repeats` runs without compilation; compile times are shown
     apart. Target: gradient descent's run time at least 30× mfpde's.
  3. Peak resident memory (`ru_maxrss`) of one default solve at m = 4096 to a short t1, each flow in a fresh child
     process, next to the size of the weights.

Writes the section "## Deep flows" of benchmarks/RESULTS.md (replacing an older one).

    python benchmarks/deep_flows.py            # full size, about 10 minutes on 2 idle cores
    python benchmarks/deep_flows.py --quick    # smoke run at small sizes; prints the section, writes it only
                                               # with --output
    python benchmarks/deep_flows.py --parts 1  # only the velocity evaluations (a section with part 1 alone)
"""

import argparse
import json
import math
import os
import resource
import statistics
import subprocess
import sys
import time
from pathlib import Path

import jax

# The float32 velocity measurement runs in a child process without x64, so that mfpde builds float32 data and weights
# itself (Dataset and the measures take JAX's default float type).
FLOAT32_CHILD = "--velocity-child" in sys.argv
jax.config.update("jax_enable_x64", not FLOAT32_CHILD)

import diffrax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

import mfpde  # noqa: E402
from solvers import Units  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
import _common  # noqa: E402
from _common import fmt_time, met  # noqa: E402

SECTION = "## Deep flows"

# Targets of this benchmark.
VELOCITY_RATIO_TARGET = 1.3  # flow.velocity / bare jax.grad at most this
SPEEDUP_TARGET = 30.0  # gradient descent run time / mfpde run time at least this

ACTIVATIONS = ("tanh", "tanh")
INIT = dict(std=1.0, mean=(0.0, 1.0, 1.0))  # i.i.d. weights; mean 1 in the middle layer avoids the degenerate limit
SOLVE_KEY = 1


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--quick", action="store_true",
                   help="smoke run: m = 128, n = 64, memory at m = 512, fewer repeats; writes only with --output")
    p.add_argument("--width", type=int, default=None, help="hidden width m of parts 1 and 2 (default 1024; quick 128)")
    p.add_argument("--n-samples", type=int, default=None, help="training points n (default 256; quick 64)")
    p.add_argument("--d", type=int, default=10, help="input dimension (default 10)")
    p.add_argument("--t1", type=float, default=10.0, help="final mean-field time of part 2 (default 10)")
    p.add_argument("--tol", type=float, default=1e-4, help="target relative error of the final weights (default 1e-4)")
    p.add_argument("--repeats", type=int, default=None, help="timed runs per method, median reported (default 5; quick 1)")
    p.add_argument("--velocity-calls", type=int, default=None,
                   help="timed calls per velocity candidate (default 60; quick 20)")
    p.add_argument("--coarse-steps", type=int, default=100,
                   help="first coarse step count of gradient descent; the second is twice it (default 100)")
    p.add_argument("--memory-width", type=int, default=None, help="width of the memory measurement (default 4096; quick 512)")
    p.add_argument("--memory-t1", type=float, default=0.1, help="final time of the memory measurement (default 0.1)")
    p.add_argument("--memory-flows", nargs="*", default=["Multilayer", "FeatureDNN", "plain"],
                   help="flows whose memory is measured, each in its own process; \"plain\" is the baseline, a "
                        "diffrax solve of the plain network (default Multilayer FeatureDNN plain)")
    p.add_argument("--no-float32", action="store_true", help="skip the float32 velocity measurement")
    p.add_argument("--parts", nargs="+", type=int, choices=(1, 2, 3), default=[1, 2, 3],
                   help="measurements to run: 1 velocity, 2 time to accuracy, 3 memory (default all)")
    p.add_argument("--output", type=Path, default=None,
                   help="results file (default benchmarks/RESULTS.md; with --quick, none unless given)")
    # Internal: the child processes.
    p.add_argument("--velocity-child", action="store_true", help=argparse.SUPPRESS)
    p.add_argument("--memory-child", default=None, help=argparse.SUPPRESS)
    args = p.parse_args(argv)
    defaults = dict(width=(128, 1024), n_samples=(64, 256), repeats=(1, 5), velocity_calls=(20, 60),
                    memory_width=(512, 4096))
    for name, (quick, full) in defaults.items():
        if getattr(args, name) is None:
            setattr(args, name, quick if args.quick else full)
    if args.output is None and not args.quick:
        args.output = _common.RESULTS
    return args


def log(*args):
    print(*args, flush=True, file=sys.stderr if FLOAT32_CHILD or "--memory-child" in sys.argv else sys.stdout)


def teacher(args):
    return mfpde.datasets.teacher(0, n=args.n_samples, d=args.d, activation="tanh")


def make_flow(name, form="weights"):
    if name == "Multilayer":
        return mfpde.flows.Multilayer(activations=ACTIVATIONS)
    return getattr(mfpde.flows, name)(activations=ACTIVATIONS, form=form)


def weights_of(state):
    return tuple(state[name] for name in ("w1", "w2", "w3"))


def rel_err(ws, ref):
    diff = math.sqrt(sum(float(np.sum((np.asarray(a) - np.asarray(b)) ** 2)) for a, b in zip(ws, ref)))
    return diff / math.sqrt(sum(float(np.sum(np.asarray(b) ** 2)) for b in ref))


def peak_rss_mib():
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024  # Linux reports KiB


def high_water_mib():
    """VmHWM, the peak resident memory of this process's own address space (unlike ru_maxrss, not carried over
    from the parent through fork and exec); None where /proc is absent."""
    try:
        with open("/proc/self/status") as f:
            return next(int(line.split()[1]) / 1024 for line in f if line.startswith("VmHWM:"))
    except (OSError, StopIteration):
        return None


# ----------------------------------------------------------------------------------------------------------------
# The finite network, written plainly (no mfpde code).


def plain_loss(X, y, skip=False):
    """J(w1, w2, w3) of the network above; with `skip`, the residual network (second hidden layer adds the first)."""

    def J(ws):
        w1, w2, w3 = ws
        z1 = X @ w1.T
        z2 = jnp.tanh(z1) @ w2 / w2.shape[0]
        if skip:
            z2 = z1 + z2
        f = jnp.tanh(z2) @ w3 / w3.shape[0]
        return 0.5 * jnp.mean(jnp.sum((f - y) ** 2, axis=1))

    return J


def plain_feature_velocity(X, y):
    """The features-form velocity of the plain network written by hand: the weights' velocities and
    ∂_t θ_1 = ∂_t w_1 Xᵀ, ∂_t θ_2 = −δ_2 K_1 + w_2ᵀ (h'(θ_1) ⊙ ∂_t θ_1)/m with K_1 = h(θ_1)ᵀh(θ_1)/m, the signals δ
    being m times the gradients with respect to the features (the least work a features form can do: three
    m × m × n products and two m × n × n)."""

    def velocity(ws, thetas):
        (w1, w2, w3), (theta1, theta2) = ws, thetas
        m = w2.shape[0]
        h1, h2 = jnp.tanh(theta1), jnp.tanh(theta2)
        delta_out = (h2.T @ w3 / m - y) / y.shape[0]
        delta2 = (1 - h2**2) * (w3 @ delta_out.T)
        delta1 = (1 - h1**2) * (w2 @ delta2 / m)
        dw1 = -(delta1 @ X)
        dtheta1 = dw1 @ X.T
        dtheta2 = -(delta2 @ (h1.T @ h1 / m)) + w2.T @ ((1 - h1**2) * dtheta1) / m
        return (dw1, -(h1 @ delta2.T), -(h2 @ delta_out)), (dtheta1, dtheta2)

    return velocity


def multipliers(ws):
    """m_{ℓ−1} m_ℓ for the three layers."""
    m1, m2 = ws[1].shape
    return (m1, m1 * m2, m2)


def make_gd(J):
    grad = jax.grad(J)

    @jax.jit
    def gd(ws, dt, steps):
        rates = multipliers(ws)
        return jax.lax.fori_loop(0, steps, lambda _, ws: tuple(w - dt * r * g for w, r, g in zip(ws, rates, grad(ws))), ws)

    return gd


# ----------------------------------------------------------------------------------------------------------------
# 1. Velocity evaluations.


def round_robin(fns: dict, calls: int, warmup: int = 3) -> dict:
    """Median wall time of each zero-argument function, calling them in turn `calls` times."""
    for fn in fns.values():
        for _ in range(warmup):
            jax.block_until_ready(fn())
    times = {name: [] for name in fns}
    for _ in range(calls):
        for name, fn in fns.items():
            start = time.perf_counter()
            jax.block_until_ready(fn())
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(t) for name, t in times.items()}


VELOCITY_CANDIDATES = (
    # key, label, flow class, form, baseline
    ("multilayer", "`flows.Multilayer`", "Multilayer", "weights", "plain"),
    ("dnn_weights", "`flows.FeatureDNN(form=\"weights\")`", "FeatureDNN", "weights", "plain"),
    ("dnn_features", "`flows.FeatureDNN(form=\"features\")`", "FeatureDNN", "features", "plain"),
    ("resnet_weights", "`flows.FeatureResNet(form=\"weights\")`", "FeatureResNet", "weights", "residual"),
    ("resnet_features", "`flows.FeatureResNet(form=\"features\")`", "FeatureResNet", "features", "residual"),
)
BASELINES = {"plain": "bare `jax.grad(J)`, plain network", "residual": "bare `jax.grad(J)`, residual network"}
HAND_WRITTEN = "features-form velocity written by hand, plain network (informational)"


def velocity_timings(args) -> dict:
    """Median time of one velocity evaluation per candidate and baseline, and how far each flow's weight velocities
    are from −m_{ℓ−1}m_ℓ ∂J/∂w_ℓ of the plain network (max relative deviation)."""
    data = teacher(args)
    m = args.width
    init = mfpde.measures.IIDLayers(**INIT)
    t0 = jnp.asarray(0.0, data.X.dtype)
    bare = {kind: jax.jit(jax.grad(plain_loss(data.X, data.y, skip=kind == "residual"))) for kind in BASELINES}
    fns, checks, dtype = {}, {}, None
    ws = None
    for key, _, cls, form, kind in VELOCITY_CANDIDATES:
        flow = make_flow(cls, form)
        state = flow.initial_state(init, jax.random.key(SOLVE_KEY), flow.shapes((m, m), data), data)
        velocity = jax.jit(lambda s, flow=flow: flow.velocity(t0, s, data))
        fns[key] = (lambda velocity=velocity, state=state: velocity(state))
        ws = weights_of(state)
        v, g = velocity(state), bare[kind](ws)
        expected = [-r * gi for r, gi in zip(multipliers(ws), g)]
        checks[key] = max(float(jnp.max(jnp.abs(v[name] - e)) / jnp.max(jnp.abs(e)))
                          for name, e in zip(("w1", "w2", "w3"), expected))
        dtype = str(state["w2"].dtype)
    for kind, grad in bare.items():
        fns[kind] = (lambda grad=grad: grad(ws))
    by_hand = jax.jit(plain_feature_velocity(data.X, data.y))
    flow = make_flow("FeatureDNN", "features")
    state = flow.initial_state(init, jax.random.key(SOLVE_KEY), flow.shapes((m, m), data), data)
    hand_ws, thetas = weights_of(state), (state["theta1"], state["theta2"])
    v, expected = flow.velocity(t0, state, data), jax.tree.leaves(by_hand(hand_ws, thetas))
    checks["hand_written"] = max(float(jnp.max(jnp.abs(v[name] - e)) / jnp.max(jnp.abs(e)))
                                 for name, e in zip(("w1", "w2", "w3", "theta1", "theta2"), expected))
    fns["hand_written"] = lambda: by_hand(hand_ws, thetas)
    medians = round_robin(fns, args.velocity_calls)
    return {"dtype": dtype, "times": medians, "checks": checks, "calls": args.velocity_calls}


def velocity_float32(args) -> dict | None:
    """The float32 timings, from a child process without x64."""
    if args.no_float32:
        return None
    cmd = [sys.executable, __file__, "--velocity-child", "--width", str(args.width), "--n-samples", str(args.n_samples),
           "--d", str(args.d), "--velocity-calls", str(args.velocity_calls)]
    out = subprocess.run(cmd, capture_output=True, text=True)
    if out.returncode != 0:
        raise RuntimeError(f"float32 velocity child failed:\n{out.stderr[-3000:]}")
    return json.loads(out.stdout.strip().splitlines()[-1])


# ----------------------------------------------------------------------------------------------------------------
# 2. Time to accuracy.


def make_plain_solve(J, t1):
    """diffrax Tsit5 + PID on −m_{ℓ−1}m_ℓ ∂J/∂w_ℓ (no mfpde code), tolerances traced: one compile for all."""
    grad = jax.grad(J)
    term = diffrax.ODETerm(lambda t, ws, _: tuple(-r * g for r, g in zip(multipliers(ws), grad(ws))))

    @jax.jit
    def solve(w0, rtol, atol):
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, t1, None, w0, saveat=diffrax.SaveAt(t1=True),
                                  stepsize_controller=diffrax.PIDController(rtol=rtol, atol=atol))
        return tuple(y[-1] for y in sol.ys), sol.stats["num_steps"]

    return solve


def time_to_accuracy(args) -> dict:
    data = teacher(args)
    m, t1, tol = args.width, args.t1, args.tol
    init = mfpde.measures.IIDLayers(**INIT)

    def solve(rtol, flow_name="Multilayer", **options):
        prob = mfpde.FlowProblem(make_flow(flow_name), data, init, (0.0, t1))
        ds = mfpde.solve(prob, Units(n=(m, m), save_state=True), saveat=[0.0, t1], key=SOLVE_KEY, rtol=rtol,
                         atol=rtol / 100, **options).dataset
        return {"w0": tuple(ds[name].values[0] for name in ("w1", "w2", "w3")),
                "w": tuple(ds[name].values[-1] for name in ("w1", "w2", "w3")),
                "loss0": float(ds.loss.values[0]), "loss": float(ds.loss.values[-1]), "steps": int(ds.num_steps),
                "rejected": int(ds.num_rejected_steps), "result": int(ds.result), "solver": ds.attrs["solver"],
                "compile": float(ds.attrs["compile_time_s"]), "run": float(ds.attrs["run_time_s"]),
                "lam": ds.attrs.get("jacobian_spectral_radius"), "probe_iterations": ds.attrs.get("stiffness_probe_iterations"),
                "rtol": rtol}

    # Reference: the first mfpde solve of this process, so its compile time is that of a fresh process.
    ref = solve(1e-10)
    if ref["result"] != 0:
        raise RuntimeError(f"reference solve failed with result code {ref['result']}")
    log(f"(2) reference: rtol 1e-10, {ref['steps']} steps, loss {ref['loss0']:.4g} → {ref['loss']:.4g}, "
        f"compile {ref['compile']:.2f} s, run {ref['run']:.1f} s")
    J = plain_loss(data.X, data.y)
    w0 = tuple(jnp.asarray(w) for w in ref["w0"])

    def errors(ws):
        return rel_err(ws, ref["w"]), abs(float(J(tuple(jnp.asarray(w) for w in ws))) / ref["loss"] - 1)

    # (a) mfpde, loosest rtol meeting the target; the scan goes on to tol/100 for the informational table.
    scan, chosen = [], None
    for k in range(3, 10):
        r = solve(10.0**-k)
        r["err"], r["loss_err"] = errors(r["w"])
        scan.append(r)
        log(f"(a) rtol {r['rtol']:.0e}: {r['steps']} steps ({r['rejected']} rejected), error {r['err']:.2e}, "
            f"run {r['run']:.2f} s")
        if chosen is None and r["err"] <= tol and r["result"] == 0:
            chosen = r
        if r["err"] <= tol / 100:
            break
    if chosen is None:
        raise RuntimeError("no rtol down to 1e-9 met the target error")
    rtol = chosen["rtol"]
    setting = f"rtol {rtol:.0e}, atol {rtol / 100:.0e}"
    rows = {"a": dict(method=f"mfpde default: `Multilayer`, `Units`, {chosen['solver']} + PID", setting=setting,
                      steps=chosen["steps"], err=chosen["err"], loss_err=chosen["loss_err"], compile=ref["compile"])}

    # Informational, at the same rtol: (a') the solver passed explicitly (no stiffness probe); (a'') FeatureDNN on
    # the same ODE; (c) the same integrator on the plain network, without mfpde. First runs compile.
    variants = {"a'": ("same, `solver=diffrax.Tsit5()` passed (no stiffness probe)", {"solver": diffrax.Tsit5()}),
                "a''": ("same ODE as `FeatureDNN(form=\"weights\")` (same initial weights)", {"flow_name": "FeatureDNN"})}
    for key, (label, options) in variants.items():
        r = solve(rtol, **options)
        rows[key] = dict(method=label, setting=setting, steps=r["steps"], compile=r["compile"])
        rows[key]["err"], rows[key]["loss_err"] = errors(r["w"])
    plain = make_plain_solve(J, t1)
    start = time.perf_counter()
    plain_compiled = plain.lower(w0, jnp.asarray(rtol), jnp.asarray(rtol / 100)).compile()
    plain_compile = time.perf_counter() - start
    ws, steps_c = plain_compiled(w0, jnp.asarray(rtol), jnp.asarray(rtol / 100))
    rows["c"] = dict(method="plain JAX + diffrax Tsit5 + PID (no mfpde)", setting=setting, steps=int(steps_c),
                     compile=plain_compile)
    rows["c"]["err"], rows["c"]["loss_err"] = errors(ws)

    # (b) gradient descent in plain JAX.
    gd = make_gd(J)
    start = time.perf_counter()
    gd_compiled = gd.lower(w0, jnp.asarray(1.0), jnp.asarray(1)).compile()
    gd_compile = time.perf_counter() - start

    def run_gd(steps):
        start = time.perf_counter()
        ws = jax.block_until_ready(gd_compiled(w0, jnp.asarray(t1 / steps), jnp.asarray(steps)))
        return ws, time.perf_counter() - start

    k1, k2 = args.coarse_steps, 2 * args.coarse_steps
    e1 = rel_err(run_gd(k1)[0], ref["w"])
    e2 = rel_err(run_gd(k2)[0], ref["w"])
    order = math.log2(e1 / e2)
    log(f"(b) coarse runs: {k1} steps error {e1:.3e}, {k2} steps error {e2:.3e} (observed order {order:.3f})")
    steps = max(math.ceil(k2 * e2 / tol), 1)  # Euler: e(K) ≈ C / K
    trace = []
    while True:
        ws, t = run_gd(steps)
        err = rel_err(ws, ref["w"])
        trace.append((steps, err, t))
        log(f"(b) {steps} steps: error {err:.4e}, {t:.1f} s")
        if err <= tol:
            break
        steps = math.ceil(steps * err / tol * 1.01)
    # Two percent fewer steps should miss the target: the count is then the coarsest (to 2 %).
    coarser = math.floor(steps * 0.98)
    coarser_err = rel_err(run_gd(coarser)[0], ref["w"]) if coarser >= 1 else None
    rows["b"] = dict(method="gradient descent, plain JAX (`jax.grad`, `fori_loop`, jit)",
                     setting=f"dt = t1/{steps} = {t1 / steps:.3g}", steps=steps, compile=gd_compile)
    rows["b"]["err"], rows["b"]["loss_err"] = errors(ws)

    # Timed runs, interleaved (one of each method in turn), so that a change of the machine's load hits all alike.
    timed = {"a": lambda: solve(rtol)["run"], "a'": lambda: solve(rtol, **variants["a'"][1])["run"],
             "a''": lambda: solve(rtol, **variants["a''"][1])["run"], "b": lambda: run_gd(steps)[1]}

    def plain_run():
        start = time.perf_counter()
        jax.block_until_ready(plain_compiled(w0, jnp.asarray(rtol), jnp.asarray(rtol / 100)))
        return time.perf_counter() - start

    timed["c"] = plain_run
    runs = {key: [] for key in timed}
    for i in range(args.repeats):
        for key, fn in timed.items():
            runs[key].append(fn())
        log(f"(2) timed round {i + 1}: " + ", ".join(f"({k}) {v[-1]:.2f} s" for k, v in runs.items()))
    for key, row in rows.items():
        row["runs"] = runs[key]
        row["time"] = statistics.median(runs[key])

    # Informational: tighter targets, gradient descent projected from its first-order constant.
    per_step = rows["b"]["time"] / steps
    tighter = []
    for target in (tol / 10, tol / 100):
        a_run = next((r for r in scan if r["err"] <= target and r["result"] == 0), None)
        if a_run is not None:
            b_steps = math.ceil(err * steps / target)
            tighter.append(dict(tol=target, rtol=a_run["rtol"], a_steps=a_run["steps"], a_err=a_run["err"],
                                a_time=a_run["run"], b_steps=b_steps, b_time=b_steps * per_step))
    order_keys = ("a", "a'", "a''", "c", "b")
    return dict(ref=ref, scan=scan, rows=[dict(key=k, **rows[k]) for k in order_keys], coarse=((k1, e1), (k2, e2), order),
                trace=trace, coarser=(coarser, coarser_err), tighter=tighter)


# ----------------------------------------------------------------------------------------------------------------
# 3. Memory.


def plain_solve_memory(args, data):
    """The baseline of part 3: diffrax's Tsit5 + PID (rtol 1e-6, atol 1e-8, as mfpde's float64 default) on
    −m_{ℓ−1}m_ℓ ∂J/∂w_ℓ of the plain network, weights drawn with `jax.random.normal`, final state saved."""
    m = args.memory_width
    J = plain_loss(data.X, data.y)
    grad = jax.grad(J)
    keys = jax.random.split(jax.random.key(SOLVE_KEY), 3)
    shapes = ((m, data.d), (m, m), (m, data.k))
    before, hwm_before = peak_rss_mib(), high_water_mib()
    w0 = tuple(mean + jax.random.normal(k, s) for k, s, mean in zip(keys, shapes, INIT["mean"]))
    term = diffrax.ODETerm(lambda t, ws, _: tuple(-r * g for r, g in zip(multipliers(ws), grad(ws))))

    @jax.jit
    def solve(w0):
        sol = diffrax.diffeqsolve(term, diffrax.Tsit5(), 0.0, args.memory_t1, None, w0, saveat=diffrax.SaveAt(t1=True),
                                  stepsize_controller=diffrax.PIDController(rtol=1e-6, atol=1e-8))
        return sol.ys, sol.stats["num_steps"]

    start = time.perf_counter()
    compiled = solve.lower(w0).compile()
    compile_time = time.perf_counter() - start
    start = time.perf_counter()
    _, steps = jax.block_until_ready(compiled(w0))
    run = time.perf_counter() - start
    return {"flow": "plain", "width": m, "before": before, "peak": peak_rss_mib(), "hwm_before": hwm_before,
            "hwm": high_water_mib(), "state": sum(math.prod(s) for s in shapes) * 8 / 2**20, "steps": int(steps),
            "solver": "Tsit5", "rtol": 1e-6, "compile": compile_time, "run": run}


def memory_child(args):
    """One default solve at `--memory-width` in this fresh process; prints its peak resident memory as JSON."""
    data = teacher(args)
    if args.memory_child == "plain":
        print(json.dumps(plain_solve_memory(args, data)))
        return
    m = args.memory_width
    flow = make_flow(args.memory_child)
    prob = mfpde.FlowProblem(flow, data, mfpde.measures.IIDLayers(**INIT), (0.0, args.memory_t1))
    shapes = flow.shapes((m, m), data)
    before, hwm_before = peak_rss_mib(), high_water_mib()
    ds = mfpde.solve(prob, Units(n=(m, m), save_state=True), saveat=[args.memory_t1], key=SOLVE_KEY).dataset
    peak, hwm = peak_rss_mib(), high_water_mib()
    state_mib = sum(math.prod(s) for s in shapes.values()) * ds["w2"].dtype.itemsize / 2**20
    print(json.dumps({"flow": args.memory_child, "width": m, "before": before, "peak": peak, "hwm_before": hwm_before,
                      "hwm": hwm, "state": state_mib,
                      "steps": int(ds.num_steps), "solver": ds.attrs["solver"], "rtol": float(ds.attrs["rtol"]),
                      "compile": float(ds.attrs["compile_time_s"]), "run": float(ds.attrs["run_time_s"])}))


def memory(args) -> list:
    """Run first, while this process is small: a child's ru_maxrss starts from its parent's peak (Linux keeps it
    through fork and exec)."""
    out = []
    for name in args.memory_flows:
        cmd = [sys.executable, __file__, "--memory-child", name, "--memory-width", str(args.memory_width),
               "--memory-t1", str(args.memory_t1), "--n-samples", str(args.n_samples), "--d", str(args.d)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise RuntimeError(f"memory child for {name} failed:\n{proc.stderr[-3000:]}")
        out.append(json.loads(proc.stdout.strip().splitlines()[-1]))
        r = out[-1]
        log(f"(3) {name} m={r['width']}: peak {r['peak']:.0f} MiB (before the solve {r['before']:.0f} MiB), "
            f"weights {r['state']:.0f} MiB, {r['steps']} steps, run {r['run']:.1f} s, compile {r['compile']:.1f} s")
    return out


# ----------------------------------------------------------------------------------------------------------------


def main(argv=None):
    args = parse_args(argv)
    if args.velocity_child:
        print(json.dumps(velocity_timings(args)))
        return
    if args.memory_child:
        memory_child(args)
        return
    info = _common.machine()
    log(f"three-layer tanh network, m = {args.width}, n = {args.n_samples}, d = {args.d}"
        f"{' (quick)' if args.quick else ''}")
    log(_common.machine_line(info))
    parent_rss = peak_rss_mib()
    mem = memory(args) if 3 in args.parts else []

    v64 = v32 = None
    if 1 in args.parts:
        v64 = velocity_timings(args)
        for key, label, *_ in VELOCITY_CANDIDATES:
            log(f"(1) float64 {label}: {v64['times'][key] * 1e3:.2f} ms, agrees to {v64['checks'][key]:.1e}")
        log(f"(1) float64 bare grad: {v64['times']['plain'] * 1e3:.2f} ms (plain), "
            f"{v64['times']['residual'] * 1e3:.2f} ms (residual)")
        v32 = velocity_float32(args)
        if v32:
            log("(1) float32: " + ", ".join(f"{k} {t * 1e3:.2f} ms" for k, t in v32["times"].items()))

    tta = time_to_accuracy(args) if 2 in args.parts else None

    info["load_end"] = round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan")
    section = render(dict(args=args, info=info, v64=v64, v32=v32, tta=tta, mem=mem, parent_rss=parent_rss))
    log("\n" + section)
    if args.output is not None:
        _common.write_section(SECTION, section.split("\n", 1)[1], args.output)
        log(f"written to {args.output.name}")


# ----------------------------------------------------------------------------------------------------------------
# Report.


def evaluations(steps):
    """Velocity evaluations of a default Tsit5 solve: 6 per step (FSAL) + 1, the initial step-size choice (2) and the
    stiffness probe (9)."""
    return 6 * steps + 1 + 2 + 9


def render(r):
    a, info, v64, v32, tta, mem = r["args"], r["info"], r["v64"], r["v32"], r["tta"], r["mem"]
    lines = [SECTION, ""]
    parts = sorted(set(a.parts))
    flags = (" --quick" if a.quick else "") + ("" if parts == [1, 2, 3] else " --parts " + " ".join(map(str, parts)))
    lines.append(
        f"`python benchmarks/deep_flows.py{flags}`: three layers of weights (two hidden tanh layers of width m), "
        f"n = {a.n_samples} teacher points (d = {a.d}, seed 0), squared loss, gradient flow in mean-field time with "
        f"every weight of layer ℓ at rate m_{{ℓ−1}} m_ℓ; initial weights i.i.d. `measures.IIDLayers(std=1, "
        f"mean=(0, 1, 1))`, solve key {SOLVE_KEY}. The plain-JAX baselines are the same finite network written without "
        f"mfpde code.")
    lines.append("")

    ratios, speedup = {}, None
    if v64:
        part, ratios = render_velocity(a, v64, v32)
        lines += part
    if tta:
        part, speedup = render_accuracy(a, tta)
        lines += part
    if mem:
        lines += render_memory(a, mem, r["parent_rss"])

    # -- summary --
    lines.append("| check | measured | target | |")
    lines.append("|---|---:|---:|---|")
    for key, label, *_ in VELOCITY_CANDIDATES if v64 else ():
        shown = " / ".join(f"{x:.2f}×" for x in ratios[key])
        lines.append(f"| velocity of {label} / bare `jax.grad`{' (float64 / float32)' if v32 else ''} | {shown} | "
                     f"≤ {VELOCITY_RATIO_TARGET:g}× | {' / '.join(met(x <= VELOCITY_RATIO_TARGET) for x in ratios[key])} |")
    if tta:
        lines.append(f"| time to accuracy {a.tol:g}: gradient descent / mfpde run time | {speedup:.3g}× | "
                     f"≥ {SPEEDUP_TARGET:g}× | {met(speedup >= SPEEDUP_TARGET)} |")
    lines.append("")
    lines.append(_common.machine_line(info) + " Load: the 1-minute load average at the start (`load`) and the end "
                 "(`load_end`); another process may have shared the cores.")
    lines.append("")
    return "\n".join(lines)


def render_velocity(a, v64, v32):
    """Part 1's text and table, and each candidate's ratios to the bare gradient (float64, float32)."""
    lines = []
    lines.append(f"**1. One velocity evaluation**, m = {a.width}: jitted, warmed up, median of {v64['calls']} calls per "
                 f"candidate taken round-robin (one call of each in turn); the bare gradient is `jax.jit(jax.grad(J))` "
                 f"of the plain network (of the residual network for `FeatureResNet`). float64 in this process; "
                 f"float32 in a child process without `jax_enable_x64`. \"Agrees\" is the largest deviation of the "
                 f"flow's weight velocities from −m_{{ℓ−1}}m_ℓ ∂J/∂w_ℓ of the plain network, relative to its largest "
                 f"entry (float64).")
    lines.append("")
    head = "| velocity of | float64 time | / bare grad |"
    sep = "|---|---:|---:|"
    if v32:
        head += " float32 time | / bare grad |"
        sep += "---:|---:|"
    lines += [head + f" agrees | target ≤ {VELOCITY_RATIO_TARGET:g}× |", sep + "---:|---|"]
    for kind, label in BASELINES.items():
        row = f"| {label} | {v64['times'][kind] * 1e3:.2f} ms | 1 |"
        if v32:
            row += f" {v32['times'][kind] * 1e3:.2f} ms | 1 |"
        lines.append(row + " — | — |")
    row = f"| {HAND_WRITTEN} | {v64['times']['hand_written'] * 1e3:.2f} ms | {v64['times']['hand_written'] / v64['times']['plain']:.2f} |"
    if v32:
        row += f" {v32['times']['hand_written'] * 1e3:.2f} ms | {v32['times']['hand_written'] / v32['times']['plain']:.2f} |"
    lines.append(row + f" {v64['checks']['hand_written']:.0e} | — |")
    ratios = {}
    for key, label, cls, form, kind in VELOCITY_CANDIDATES:
        r64 = v64["times"][key] / v64["times"][kind]
        ratios[key] = [r64]
        row = f"| {label} | {v64['times'][key] * 1e3:.2f} ms | {r64:.2f} |"
        if v32:
            r32 = v32["times"][key] / v32["times"][kind]
            ratios[key].append(r32)
            row += f" {v32['times'][key] * 1e3:.2f} ms | {r32:.2f} |"
        verdict = " / ".join(met(x <= VELOCITY_RATIO_TARGET) for x in ratios[key])
        lines.append(row + f" {v64['checks'][key]:.0e} | {verdict}{' (float64 / float32)' if v32 else ''} |")
    lines.append("")
    lines.append(
        "The features form holds the features θ_ℓ (m × n) as state besides the weights and moves them by the chain "
        "rule, ∂_t θ_2 = (1/m)[(∂_t w_2)ᵀ h(θ_1) + w_2ᵀ (h'(θ_1) ⊙ ∂_t θ_1)]. Its first term is taken in the kernel "
        "form −ξ_2 (δ_2 K_1 + λ θ_2), K_1 = h(θ_1)ᵀh(θ_1)/m (n × n, two m × n × n products), so the velocity costs "
        "three m × m × n products — the backward pass's two and w_2ᵀ(h' ⊙ ∂_t θ_1), the forward pass being skipped — "
        "as many as `jax.grad`, plus the two m × n × n of the kernel. The same velocity written by hand in plain JAX "
        "(row \"written by hand\"; \"agrees\" there compares all five velocities, features included, with "
        "`FeatureDNN`'s) is the floor for any features form.")
    lines.append("")
    floor = [v["times"]["hand_written"] / v["times"]["plain"] for v in (v64, v32) if v]
    for key, label, cls, form, kind in VELOCITY_CANDIDATES:
        if max(ratios[key]) > VELOCITY_RATIO_TARGET:
            text = f"Missed by {label}: {' / '.join(f'{x:.2f}×' for x in ratios[key])} the bare gradient"
            if form == "features":
                text += (f", where the features velocity written by hand takes {' / '.join(f'{x:.2f}×' for x in floor)}: "
                         f"the three m × m × n products and the kernel's two m × n × n are the least a features form "
                         f"computes, and in float32 the element-wise passes over m × n arrays weigh more against them")
            lines += [text + ".", ""]
    return lines, ratios


def render_accuracy(a, tta):
    """Part 2's text and tables, and gradient descent's run time over mfpde's."""
    lines = []
    ref, rows = tta["ref"], {row["key"]: row for row in tta["rows"]}
    t_a = rows["a"]["time"]
    lines.append(
        f"**2. Time to accuracy**, m = {a.width}, t ∈ [0, {a.t1:g}], float64: the loss falls from {ref['loss0']:.4g} to "
        f"{ref['loss']:.4g} ({ref['loss0'] / ref['loss']:.1f}×). Each method at its cheapest setting with relative "
        f"error ‖w − w_ref‖_F / ‖w_ref‖_F ≤ {a.tol:g} of the final weights of all three layers together, against an "
        f"mfpde reference (default solver, {ref['solver']}, rtol 1e-10, atol 1e-12, {ref['steps']} steps); the "
        f"relative error of the final loss is shown too. Run time: median of {a.repeats} run(s), taken round-robin "
        f"(one run of each method in turn, so that a change of the machine's load hits all alike), compilation "
        f"excluded (`run_time_s` for mfpde, which includes sampling the initial weights and the stiffness probe); "
        f"compile time apart (for (a), that of the first solve in the process).")
    lines.append("")
    lines.append(f"| method | setting | steps | weights error | loss error | run time (median) | compile time | "
                 f"time / (a) | target ≥ {SPEEDUP_TARGET:g}× |")
    lines.append("|---|---|---:|---:|---:|---:|---:|---:|---|")
    for key, row in rows.items():
        ratio = row["time"] / t_a
        if key == "a":
            ratio_s, target = "1", "—"
        elif key != "b":
            ratio_s, target = f"{ratio:.2f}", "(informational)"
        else:
            ratio_s, target = f"{ratio:.3g}×", met(ratio >= SPEEDUP_TARGET)
        lines.append(f"| ({key}) {row['method']} | {row['setting']} | {row['steps']} | {row['err']:.2e} | "
                     f"{row['loss_err']:.1e} | {fmt_time(row['time'])} | {row['compile']:.2f} s | {ratio_s} | {target} |")
    lines.append("")
    scan = "; ".join(f"rtol {s['rtol']:.0e}: {s['steps']} steps, error {s['err']:.1e}, {fmt_time(s['run'])}"
                     for s in tta["scan"])
    lines.append(f"- (a) rtol scan (atol = rtol/100, loosest first): {scan}. Steps are accepted + rejected; a "
                 f"default solve makes about 6 velocity evaluations per step, plus its probes' "
                 f"{5 + int(ref['probe_iterations'] or 0)} (v(y0), four kink points and "
                 f"{ref['probe_iterations']} power-iteration steps, which stop once they tell the flow is not stiff; "
                 f"the Jacobian's spectral radius estimated from below at {ref['lam']:.3g}). Changing rtol reuses "
                 f"the compiled program.")
    (k1, e1), (k2, e2), order = tta["coarse"]
    trace = "; ".join(f"{s} steps → {e:.3e}" for s, e, _ in tta["trace"])
    coarser, coarser_err = tta["coarser"]
    coarser_s = f"; {coarser} steps (2 % fewer) → {coarser_err:.3e}, above the target" if coarser_err and coarser_err > a.tol \
        else (f"; {coarser} steps → {coarser_err:.3e}" if coarser_err else "")
    lines.append(f"- (b) step count from two coarse runs by Euler's first-order error — {k1} steps: {e1:.2e}, {k2} "
                 f"steps: {e2:.2e} (observed order {order:.3f}, which also vouches for the reference) — then "
                 f"verified: {trace}{coarser_s}. {rows['b']['time'] / rows['b']['steps'] * 1e3:.1f} ms per step; "
                 f"compile time of the jitted loop (dt and step count traced).")
    lines.append(f"- (a') is (a) with the solver passed explicitly, which skips the stiffness probe (a power iteration "
                 f"of the velocity's Jacobian) run before every default solve. (a'') solves the same ODE from the same "
                 f"weights with `flows.FeatureDNN(form=\"weights\")` in place of `flows.Multilayer`: the two differ "
                 f"only in their observables, evaluated at each save time. (c) is the same integrator at the same "
                 f"tolerances called directly on the plain network's gradient (weights as a tuple, final state "
                 f"only): what (a) costs beyond it is mfpde's own work per solve — sampling the initial weights "
                 f"(once, before the probe, which starts from them like the solve), the probe, the observables and "
                 f"saved state, the xarray Dataset.")
    if tta["tighter"]:
        lines.append("")
        lines.append("Informational, at tighter targets: (a) measured in the rtol scan above (one run); (b) projected "
                     "from its measured error constant C = K·error and time per step.")
        lines.append("")
        lines.append("| target error | (a) rtol | (a) steps | (a) error | (a) run time | (b) steps (projected) | "
                     "(b) time (projected) | (b) / (a) |")
        lines.append("|---:|---:|---:|---:|---:|---:|---:|---:|")
        for e in tta["tighter"]:
            lines.append(f"| {e['tol']:g} | {e['rtol']:.0e} | {e['a_steps']} | {e['a_err']:.2e} | {fmt_time(e['a_time'])} "
                         f"| {e['b_steps']} | {fmt_time(e['b_time'])} | {e['b_time'] / e['a_time']:.3g}× |")
    lines.append("")
    speedup = rows["b"]["time"] / t_a
    if speedup < SPEEDUP_TARGET:
        b = rows["b"]
        evals = evaluations(rows["a"]["steps"])
        t_grad = b["time"] / b["steps"]
        text = (f"Missed: gradient descent takes {speedup:.3g}× mfpde's time, short of {SPEEDUP_TARGET:g}×. At a "
                f"relative error of {a.tol:g} it needs {b['steps']} gradient steps ({t_grad * 1e3:.1f} ms each); "
                f"mfpde's {rows['a']['steps']} Tsit5 steps cost about {evals} velocity evaluations "
                f"({t_a / evals * 1e3:.1f} ms per evaluation, all included), so even at equal cost per evaluation "
                f"the gap is bounded by about {b['steps'] / evals:.0f}×.")
        c = rows["c"]
        text += (f" Against diffrax called directly on the plain network ((c): {c['steps']} steps, "
                 f"{fmt_time(c['time'])}), gradient descent takes {b['time'] / c['time']:.3g}×.")
        t_a2 = rows["a'"]["time"]
        text += (f" The stiffness probe accounts for about {fmt_time(max(t_a - t_a2, 0))} of (a)'s "
                 f"{fmt_time(t_a)} (compare (a')); without it the ratio would be {b['time'] / t_a2:.3g}×.")
        text += (" Euler's error falls only as 1/K while the 5th-order solver's step count grows as about "
                 "error^(−1/5), so the gap widens at tighter targets (table above).")
        lines += [text, ""]
    else:
        lines += [f"Met: gradient descent takes {speedup:.3g}× mfpde's time.", ""]
    a2 = rows["a''"]
    if a2["time"] > 1.5 * t_a:
        lines.append(
            f"`FeatureDNN` solves the same ODE as `Multilayer` {a2['time'] / t_a:.1f}× slower ((a'') against (a)) "
            f"although its velocity costs about the same (part 1). The difference is its observables, evaluated inside "
            f"the solver's loop at each save time; their own arithmetic is small (a second velocity and the Gram "
            f"spectra, two n × n `eigvalsh`, per save time), but the `eigvalsh` is a LAPACK call (OpenBLAS, with its "
            f"own thread pool) inside the compiled loop, and OpenBLAS's threads compete with XLA's for the cores. In "
            f"side experiments, not repeated by this script (a 7-step solve at m = 1024 with the two `eigvalsh` in "
            f"the save function): with another process busy on the 2 cores it took 13–14 s against 2.2 s without "
            f"them, and 2.5 s with `OPENBLAS_NUM_THREADS=1`; on an idle machine, 1.7 s against 1.2 s. So the "
            f"excess depends on the load at the time.")
        lines.append("")
    return lines, speedup


def render_memory(a, mem, parent_rss):
    """Part 3's text and table."""
    lines = []
    lines.append(f"**3. Memory**, m = {a.memory_width}: one default solve (`Units(n=(m, m), save_state=True)`, "
                 f"saveat = [t1], t ∈ [0, {a.memory_t1:g}]) in a fresh child process per flow, started before the "
                 f"other measurements while this process's own peak was {parent_rss:.0f} MiB (a child's "
                 f"`ru_maxrss` starts from its parent's peak: Linux keeps it through fork and exec). Peak resident "
                 f"memory `resource.getrusage(RUSAGE_SELF).ru_maxrss` after the solve and before it (Python, JAX, "
                 f"mfpde and the data loaded); VmHWM from /proc/self/status, the child's own high-water mark, as a "
                 f"cross-check. Weights: w1, w2, w3 in float64.")
    lines.append("")
    lines.append("| flow | weights | ru_maxrss before the solve | ru_maxrss after the solve | VmHWM after | "
                 "peak / weights | steps | run time | compile time |")
    lines.append("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for mrow in mem:
        hwm = "—" if mrow["hwm"] is None else f"{mrow['hwm']:.0f} MiB"
        label = "plain JAX + diffrax Tsit5 (no mfpde)" if mrow["flow"] == "plain" else f"`flows.{mrow['flow']}`"
        lines.append(f"| {label} | {mrow['state']:.0f} MiB | {mrow['before']:.0f} MiB | "
                     f"{mrow['peak']:.0f} MiB | {hwm} | {mrow['peak'] / mrow['state']:.1f} | {mrow['steps']} "
                     f"({mrow['solver']}, rtol {mrow['rtol']:.0e}) | {fmt_time(mrow['run'])} | {mrow['compile']:.1f} s |")
    lines.append("")
    by_flow = {mrow["flow"]: mrow for mrow in mem}
    if by_flow:
        grown = {k: v["peak"] - v["before"] for k, v in by_flow.items()}
        text = "Growth during the solve, in units of the weights: " + ", ".join(
            f"{'plain baseline' if k == 'plain' else k} {g / by_flow[k]['state']:.1f}× ({g:.0f} MiB)" for k, g in grown.items()) + "."
        if "plain" in by_flow:
            text += (" The baseline holds diffrax's own working set (the Tsit5 stages, the current, next and error "
                     "states, the loop's buffers). mfpde's excess over it comes with what it does besides integrating: "
                     "it samples the initial weights with `IIDLayers` (one key per row and one draw along it, so that "
                     "widths share their first units) before the solve and keeps them for the stiffness probe, runs "
                     "the probe, and saves the state.")
        lines += [text, ""]
    return lines


if __name__ == "__main__":
    sys.exit(main())
