"""The cosine transform under the grid's implicit diffusion solve: the library's own DCT (one real FFT of length n,
Makhoul's reordering) against `jax.scipy.fft.dct` / `idct` (type II), which a user would call.

Each case is one solve's worth of work: a forward transform along every axis of a float64 array, then the inverse,
as `SpectralDiffusion.solve` does for walled axes. Both versions are checked to agree (jax's unnormalised DCT is
twice ours), compiled apart (compile time reported separately), and timed interleaved, median of the calls.
The own DCT is kept only if it is faster here.

    python benchmarks/dct.py [--calls 31]
"""

import argparse
import time

import jax

jax.config.update("jax_enable_x64", True)
import jax.numpy as jnp  # noqa: E402
import jax.scipy.fft as jfft  # noqa: E402
import numpy as np  # noqa: E402

from _common import fmt_time, machine, machine_line, met, write_section  # noqa: E402
from solvers._grid_ops import _dct, _idct  # noqa: E402

SHAPES = [(64, 64), (63, 63), (256, 256), (1024, 1024), (48, 48, 48), (4096,)]


def along_every_axis(transform):
    def apply(x):
        for axis in range(x.ndim):
            x = transform(x, axis)
        return x

    return apply


forward_own = along_every_axis(_dct)
forward_library = along_every_axis(lambda x, axis: jfft.dct(x, type=2, axis=axis))
inverse_own = along_every_axis(_idct)
inverse_library = along_every_axis(lambda x, axis: jfft.idct(x, type=2, axis=axis))


def own(x):
    return inverse_own(forward_own(x))


def library(x):
    return inverse_library(forward_library(x))


def ms(t: float) -> str:
    return f"{t * 1e3:.3g} ms"


def compiled(fn, x):
    start = time.perf_counter()
    out = jax.jit(fn).lower(x).compile()
    return out, time.perf_counter() - start


def interleaved_medians(fns, x, calls):
    for fn in fns:
        jax.block_until_ready(fn(x))
    times = [[] for _ in fns]
    for _ in range(calls):
        for i, fn in enumerate(fns):
            start = time.perf_counter()
            jax.block_until_ready(fn(x))
            times[i].append(time.perf_counter() - start)
    return [float(np.median(t)) for t in times]


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=31)
    args = parser.parse_args()
    rows = []
    for shape in SHAPES:
        x = jax.random.normal(jax.random.key(0), shape, jnp.float64)
        scale = 2.0 ** x.ndim  # jax's unnormalised type-II DCT is 2 Σ x cos(...) per axis
        agree_forward = float(jnp.max(jnp.abs(forward_own(x) * scale - forward_library(x))) / jnp.max(jnp.abs(forward_library(x))))
        agree_round = float(jnp.max(jnp.abs(own(x) - x)))
        (own_c, own_compile), (lib_c, lib_compile) = compiled(own, x), compiled(library, x)
        own_run, lib_run = interleaved_medians([own_c, lib_c], x, args.calls)
        rows.append((shape, own_run, lib_run, own_compile, lib_compile, agree_forward, agree_round))
        print(shape, ms(own_run), ms(lib_run), f"{lib_run / own_run:.2f}x", flush=True)
    lines = [
        "Script `benchmarks/dct.py`: a forward cosine transform along every axis and its inverse (float64), as one",
        "implicit diffusion solve of `Grid` does on walled axes. Own: `solvers/_grid_ops.py` `_dct`/`_idct` (one real",
        "FFT of length n); jax: `jax.scipy.fft.dct`/`idct` type II. Median of interleaved calls; compile apart.",
        "",
        "| shape | own run | jax run | jax / own | own compile | jax compile | forward agreement (rel.) | own round trip |",
        "|---|---|---|---|---|---|---|---|",
    ]
    for shape, own_run, lib_run, own_compile, lib_compile, agree_forward, agree_round in rows:
        lines.append(f"| {'×'.join(map(str, shape))} | {ms(own_run)} | {ms(lib_run)} | {lib_run / own_run:.2f} "
                     f"| {fmt_time(own_compile)} | {fmt_time(lib_compile)} | {agree_forward:.1e} | {agree_round:.1e} |")
    ratios = [lib_run / own_run for _, own_run, lib_run, *_ in rows]
    faster = all(r > 1 for r in ratios)
    lines += ["", f"Own DCT faster than jax.scipy.fft at every shape: {met(faster)} (jax / own "
              f"{min(ratios):.2f}–{max(ratios):.2f}×); "
              + ("kept." if faster else "where it is not, `jax.scipy.fft.dct` should replace it."),
              "", machine_line(machine())]
    write_section("## DCT: own vs jax.scipy.fft.dct", "\n".join(lines))


if __name__ == "__main__":
    main()
