"""Grid solver against py-pde on the 2D Ornstein–Uhlenbeck Fokker–Planck equation, at equal accuracy.

Both codes solve

    ∂_t ρ = κ ∇·(θ ρ) + τ Δρ   on [−L, L]², zero flux through the walls,   κ = 1, τ = 0.5,

from ρ₀ = N((1, −0.5), 0.5² I) to t = 2, on the same n × n cell-centred grid, and are compared with the exact
Gaussian ρ(t) (mean m₀e^{−κt}, variance s₀²e^{−2κt} + (τ/κ)(1 − e^{−2κt})) by the L1 error
Σ_k |ρ_k − ρ(θ_k, t)| h² at the nodes. Each code gets its cheapest setting with L1 ≤ `--target`:

  - mfpde: `solvers.Grid` (Scharfetter–Gummel finite volumes; default integrator KenCarp4 with the diffusion
    implicit and solved exactly by the discrete cosine transform), scanning rtol = 1e-3, 1e-4, ... (loosest first);
    initial density: the exact cell averages.
  - py-pde: the same PDE as a `PDEBase` subclass compiled with numba (`divergence` of the drift flux κθρ with a
    zero-value condition, so no drift flux leaves the box, and `laplace` with a zero-derivative condition), scanning
    the tolerance of each candidate solver; initial density: the exact values at the nodes. Candidates: scipy's
    `solve_ivp` RK45 through `ScipySolver`, and py-pde's own adaptive `runge-kutta`. (py-pde's `implicit` and
    `crank-nicolson` solvers iterate the implicit equation by fixed-point iteration, which converges only at
    explicit-size steps on a stiff diffusion, and scipy's stiff methods difference a dense Jacobian of the
    n² unknowns; neither is competitive here, so they are not timed.)

The fastest passing py-pde candidate at the first size is used at the larger sizes. Run time is the best of
`--repeats` calls after the first (which includes JIT compilation: XLA for mfpde, numba for py-pde); both are shown.
Writes the section "## Grid vs py-pde" of benchmarks/RESULTS.md.

    python benchmarks/grid_vs_pypde.py                          # 128², 256², 512² (py-pde at 512² takes long)
    python benchmarks/grid_vs_pypde.py --sizes 64 --output /tmp/smoke.md   # smoke test
"""

import argparse
import math
import sys
import time
from pathlib import Path

import jax

jax.config.update("jax_enable_x64", True)

import numpy as np  # noqa: E402

import mfpde  # noqa: E402
from solvers import GibbsFixedPoint, Grid  # noqa: E402

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import RESULTS, machine, machine_line, write_section  # noqa: E402

SECTION = "## Grid vs py-pde"
KAPPA, TAU, T1 = 1.0, 0.5, 2.0
MEAN0, STD0 = np.array([1.0, -0.5]), 0.5
TARGETS = {128: 30.0, 512: 100.0}  # py-pde time / mfpde time at least this


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--sizes", type=int, nargs="+", default=[128, 256, 512], help="cells per axis (default 128 256 512)")
    p.add_argument("--half-width", type=float, default=4.5, help="L of the box [−L, L]² (default 4.5)")
    p.add_argument("--target", type=float, default=1e-3, help="L1 error to reach at t = 2 (default 1e-3)")
    p.add_argument("--repeats", type=int, default=3, help="timed calls after the first; the best is reported (default 3)")
    p.add_argument("--pypde-repeat-below", type=float, default=120.0,
                   help="repeat a py-pde call only when its first call took less than this many seconds (default 120)")
    p.add_argument("--gibbs-sizes", type=int, nargs="*", default=[64, 128], help="grids of the Gibbs timing (default 64 128)")
    p.add_argument("--t-steady", type=float, default=40.0, help="time integrated to reach the steady state (default 40)")
    p.add_argument("--output", type=Path, default=RESULTS, help="results file (default benchmarks/RESULTS.md)")
    return p.parse_args(argv)


def exact_density(x, y, t):
    mean = MEAN0 * math.exp(-KAPPA * t)
    var = STD0**2 * math.exp(-2 * KAPPA * t) + TAU / KAPPA * (1 - math.exp(-2 * KAPPA * t))
    return np.exp(-((x - mean[0]) ** 2 + (y - mean[1]) ** 2) / (2 * var)) / (2 * np.pi * var)


def l1_error(density, nodes, h):
    x, y = np.meshgrid(*nodes, indexing="ij")
    return float(np.abs(density - exact_density(x, y, T1)).sum() * h * h)


# --- mfpde -----------------------------------------------------------------------------------------------------


def run_mfpde(n, half_width, target, repeats):
    flow = mfpde.flows.OrnsteinUhlenbeck(kappa=KAPPA, dim=2, temperature=TAU)
    problem = mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(mean=MEAN0, std=STD0), (0.0, T1))
    grid = Grid(bounds=((-half_width, half_width),) * 2, cells=n)
    h = grid.spacing[0]
    scan, chosen, first = [], None, None
    for rtol in (1e-3, 1e-4, 1e-5, 1e-6, 1e-7):
        start = time.perf_counter()
        sol = mfpde.solve(problem, grid, saveat=[T1], rtol=rtol)
        wall = time.perf_counter() - start
        ds = sol.dataset
        if first is None:
            first = {"wall": wall, "compile": ds.attrs["compile_time_s"]}
        error = l1_error(ds.density.values[-1], grid.nodes(), h)
        entry = {"rtol": rtol, "error": error, "steps": int(ds.num_steps), "wall": wall, "solver": ds.attrs["solver"],
                 "success": sol.success}
        scan.append(entry)
        if sol.success and error <= target:
            chosen = entry
            break
    if chosen is None:
        return {"n": n, "scan": scan, "chosen": None, "first": first}
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        mfpde.solve(problem, grid, saveat=[T1], rtol=chosen["rtol"])
        times.append(time.perf_counter() - start)
    return {"n": n, "scan": scan, "chosen": chosen, "first": first, "run": min(times)}


# --- py-pde ----------------------------------------------------------------------------------------------------


def pypde_equation():
    import pde

    class OUFokkerPlanck(pde.PDEBase):
        """∂_t ρ = κ ∇·(θρ) + τΔρ with zero flux: zero drift flux and zero normal derivative on the walls."""

        def __init__(self, kappa, tau):
            super().__init__()
            self.kappa, self.tau = kappa, tau
            self.bc_density = {"derivative": 0}
            self.bc_flux = {"value": 0}

        def evolution_rate(self, state, t=0):
            coords = np.moveaxis(state.grid.cell_coords, -1, 0)
            flux = pde.VectorField(state.grid, self.kappa * coords * state.data)
            return flux.divergence(bc=self.bc_flux) + self.tau * state.laplace(bc=self.bc_density)

        def make_evolution_rate(self, state, backend):
            laplace = state.grid.make_operator("laplace", bc=self.bc_density, backend=backend, dtype=state.dtype)
            divergence = state.grid.make_operator("divergence", bc=self.bc_flux, backend=backend, dtype=state.dtype)
            coords = np.ascontiguousarray(np.moveaxis(state.grid.cell_coords, -1, 0)) * self.kappa
            tau = self.tau

            def rhs(state_data, t=0):
                return divergence(coords * state_data) + tau * laplace(state_data)

            return rhs

    return OUFokkerPlanck(KAPPA, TAU)


def _scipy_rk45(equation, tol):
    import pde

    return pde.ScipySolver(equation, method="RK45", rtol=tol, atol=tol * 1e-3), None


def _pypde_rk(equation, tol):
    import pde

    return pde.RungeKuttaSolver(equation, adaptive=True, tolerance=tol), 1e-4


PYPDE_CANDIDATES = {"scipy RK45 (`ScipySolver`)": _scipy_rk45, "py-pde `runge-kutta`, adaptive": _pypde_rk}


def pypde_run(n, half_width, make, tol, repeats, repeat_below):
    """Build py-pde's stepper once (numba compiles it), step from t = 0 to t1; repeat the stepping on fresh copies
    of the initial state when the first call was short enough. Returns error, steps, first-call and run time."""
    import pde

    grid = pde.CartesianGrid([(-half_width, half_width)] * 2, [n, n])
    x = grid.cell_coords
    initial = pde.ScalarField(grid, exact_density(x[..., 0], x[..., 1], 0.0))
    solver, dt = make(pypde_equation(), tol)
    start = time.perf_counter()
    stepper = solver.make_stepper(initial, dt=dt)
    state = initial.copy()
    stepper(state, 0.0, T1)
    first = time.perf_counter() - start
    nodes = [grid.axes_coords[0], grid.axes_coords[1]]
    out = {"tol": tol, "error": l1_error(state.data, nodes, grid.discretization[0]), "steps": solver.info.get("steps", ""),
           "first": first, "run": first, "repeated": False}
    if first < repeat_below:
        times = []
        for _ in range(repeats):
            state = initial.copy()
            start = time.perf_counter()
            stepper(state, 0.0, T1)
            times.append(time.perf_counter() - start)
        out.update(run=min(times), repeated=True)
    return out


def run_pypde(n, half_width, target, repeats, repeat_below, candidates):
    results = []
    for name, make in candidates.items():
        scan, chosen = [], None
        for tol in (1e-3, 1e-4, 1e-5):
            entry = pypde_run(n, half_width, make, tol, repeats, repeat_below)
            scan.append(entry)
            print(f"  py-pde {name} n={n} tol={tol:g}: L1 {entry['error']:.3e}, first {entry['first']:.2f} s, "
                  f"run {entry['run']:.2f} s", flush=True)
            if entry["error"] <= target:
                chosen = entry
                break
        results.append({"name": name, "scan": scan, "chosen": chosen})
    return results


# --- Gibbs fixed point against integrating to steady state ----------------------------------------------------


def run_gibbs(n, t_steady, repeats):
    """A two-layer flow with features w ∈ R² on an n × n grid (u fixed, τ = 0.1): Φ depends on ρ, so the Gibbs
    state is a genuine fixed point. Times `GibbsFixedPoint` and `Grid` integrating to t_steady, and their L1 gap."""
    import jax.numpy as jnp

    X = jax.random.normal(jax.random.key(0), (24, 2))
    data = mfpde.Dataset(X, jnp.tanh(X @ jnp.array([2.0, -1.0]))[:, None])
    flow = mfpde.flows.TwoLayer(activation="tanh", train_output=False, l2=0.5, temperature=0.1)
    init = mfpde.measures.Product(u=mfpde.measures.Gaussian(mean=2.0, std=0.0), w=mfpde.measures.Gaussian(std=0.7))
    grid = Grid(bounds=((-4.0, 4.0),) * 2, cells=n, axes=("w_0", "w_1"), fixed={"u": 2.0})
    out = {"n": n}
    for name, call in (
        ("gibbs", lambda: mfpde.solve(mfpde.StationaryProblem(flow, data, init), GibbsFixedPoint(grid))),
        ("flow", lambda: mfpde.solve(mfpde.FlowProblem(flow, data, init, (0.0, t_steady)), grid, saveat=[t_steady])),
    ):
        start = time.perf_counter()
        ds = call().dataset
        first = time.perf_counter() - start
        times = []
        for _ in range(repeats):
            start = time.perf_counter()
            call()
            times.append(time.perf_counter() - start)
        density = ds.density.values.reshape(n, n)
        out[name] = {"first": first, "run": min(times), "steps": int(ds.num_steps), "density": density,
                     "solver": ds.attrs.get("solver")}
    out["l1"] = float(np.abs(out["gibbs"]["density"] - out["flow"]["density"]).sum() * grid.cell_volume)
    return out


# --- report ----------------------------------------------------------------------------------------------------


def fmt_time(s):
    return f"{s * 1e3:.0f} ms" if s < 1 else f"{s:.2f} s"


def main(argv=None):
    args = parse_args(argv)
    import pde

    info = machine()
    info["py-pde"] = pde.__version__
    import numba

    info["numba"] = numba.__version__
    rows, notes, verdicts = [], [], []
    best_name = None
    for i, n in enumerate(args.sizes):
        print(f"n = {n}", flush=True)
        ours = run_mfpde(n, args.half_width, args.target, args.repeats)
        print(f"  mfpde: {ours['chosen']}, run {ours.get('run')}", flush=True)
        candidates = PYPDE_CANDIDATES if best_name is None else {best_name: PYPDE_CANDIDATES[best_name]}
        theirs = run_pypde(n, args.half_width, args.target, args.repeats, args.pypde_repeat_below, candidates)
        passing = [r for r in theirs if r["chosen"] is not None]
        if best_name is None and passing:
            best_name = min(passing, key=lambda r: r["chosen"]["run"])["name"]
        c = ours["chosen"]
        if c is None:
            rows.append(f"| {n}² | mfpde `Grid` | no rtol reached the target | — | — | — | — | — |")
        else:
            rows.append(
                f"| {n}² | mfpde `Grid` ({c['solver']}) | rtol {c['rtol']:g} | {c['error']:.2e} | {c['steps']} | "
                f"{fmt_time(ours['first']['wall'])} ({fmt_time(ours['first']['compile'])} compiling) | "
                f"{fmt_time(ours['run'])} | 1 |"
            )
        notes.append(f"- {n}², mfpde rtol scan: " + ", ".join(
            f"rtol {e['rtol']:g}: L1 {e['error']:.2e}, {e['steps']} steps" for e in ours["scan"]) + ".")
        for r in theirs:
            notes.append(f"- {n}², py-pde {r['name']} tolerance scan: " + ", ".join(
                f"tol {e['tol']:g}: L1 {e['error']:.2e}, {e['steps']} steps, run {fmt_time(e['run'])}"
                for e in r["scan"]) + ".")
            if r["chosen"] is None:
                rows.append(f"| {n}² | py-pde {r['name']} | no tolerance reached the target | — | — | — | — | — |")
                continue
            chosen = r["chosen"]
            ratio = chosen["run"] / ours["run"] if c is not None else float("nan")
            run_note = "" if chosen["repeated"] else " (single call)"
            rows.append(
                f"| {n}² | py-pde {r['name']} | tol {chosen['tol']:g} | {chosen['error']:.2e} | "
                f"{chosen['steps']} | {fmt_time(chosen['first'])} | {fmt_time(chosen['run'])}{run_note} | {ratio:.1f}× |"
            )
            if r["name"] == best_name and n in TARGETS:
                met = ratio >= TARGETS[n]
                verdicts.append(
                    f"| {n}² | {ratio:.1f}× | ≥ {TARGETS[n]:g}× | {'met' if met else '**missed**'} |"
                )
                if not met:
                    notes.append(
                        f"- Missed at {n}²: py-pde's {r['name']} takes {fmt_time(chosen['run'])} against mfpde's "
                        f"{fmt_time(ours['run'])} ({ours['chosen']['steps']} KenCarp4 steps, each with five "
                        f"cosine-transform solves, at {ours['run'] / ours['chosen']['steps'] * 1e3:.1f} ms a step "
                        f"against {chosen['run'] / max(int(chosen['steps'] or 1), 1) * 1e3:.2f} ms for py-pde's "
                        f"explicit steps). On a coarse grid the L1 target is met by the spatial error alone and the "
                        f"explicit stability limit h²/(4τ) still allows large steps, so py-pde needs few of them; "
                        f"each refinement multiplies its step count by 4 and leaves the implicit solver's unchanged, "
                        f"which is why the gap widens with n."
                    )
    gibbs_rows = []
    for n in args.gibbs_sizes:
        g = run_gibbs(n, args.t_steady, args.repeats)
        print(f"  Gibbs {n}²: fixed point {g['gibbs']['run']:.3f} s, flow {g['flow']['run']:.3f} s, L1 {g['l1']:.2e}", flush=True)
        gibbs_rows.append(
            f"| {n}² | {fmt_time(g['gibbs']['run'])} ({g['gibbs']['steps']} iterations; first call "
            f"{fmt_time(g['gibbs']['first'])}) | {fmt_time(g['flow']['run'])} ({g['flow']['steps']} {g['flow']['solver']} "
            f"steps to t = {args.t_steady:g}; first call {fmt_time(g['flow']['first'])}) | "
            f"{g['flow']['run'] / g['gibbs']['run']:.1f}× | {g['l1']:.1e} |"
        )
    for n, goal in TARGETS.items():
        if n not in args.sizes:
            verdicts.append(f"| {n}² | not run | ≥ {goal:g}× | **missed** (size not run) |")

    body = (
        f"`python benchmarks/grid_vs_pypde.py`: ∂_t ρ = κ∇·(θρ) + τΔρ, κ = {KAPPA:g}, τ = {TAU:g}, on "
        f"[−{args.half_width:g}, {args.half_width:g}]² with zero-flux walls, from N((1, −0.5), 0.5² I) to t = {T1:g}, "
        f"float64, n × n cells; L1 error Σ|ρ_k − ρ(θ_k, t)|h² against the exact Gaussian, target ≤ {args.target:g}. "
        "Each code at its cheapest setting reaching the target (tolerances scanned loosest first); run time is the "
        f"best of {args.repeats} calls after the first; the first call includes compilation (XLA for mfpde, numba for "
        "py-pde). Steps: accepted + rejected for mfpde; as py-pde reports them for its solvers (scipy: its step count).\n\n"
        "| grid | method | setting | L1 error | steps | first call | run time | py-pde / mfpde |\n"
        "|---|---|---|---:|---:|---:|---:|---:|\n" + "\n".join(rows) + "\n\n"
        "| grid | speed-up (py-pde's fastest passing solver / mfpde) | target | |\n|---|---:|---:|---|\n"
        + "\n".join(verdicts) + "\n\n" + "\n".join(notes) + "\n\n"
        + ("Gibbs fixed point against integrating to steady state: a two-layer flow (tanh, u = 2 fixed, l2 = 0.5, "
           "τ = 0.1, 24 training points) with features w ∈ [−4, 4]² on the grid, where Φ depends on ρ. "
           "`GibbsFixedPoint` (optimistix Newton on the fixed-point residual, GMRES beyond 2048 cells) against `Grid` "
           f"integrated to t = {args.t_steady:g} at its default rtol; L1 is the distance between their densities. "
           "Best of the repeated calls.\n\n"
           "| grid | Gibbs fixed point | integrate to steady state | ratio | L1 gap |\n|---|---:|---:|---:|---:|\n"
           + "\n".join(gibbs_rows) + "\n\n" if gibbs_rows else "")
        + machine_line(info)
    )
    write_section(SECTION, body, args.output)
    print(body)


if __name__ == "__main__":
    main()
