"""Shared by the benchmark scripts: the machine description and the section writer of RESULTS.md."""

import datetime
import os
import platform
import statistics
import time
from pathlib import Path

RESULTS = Path(__file__).resolve().parent / "RESULTS.md"
HEADER = "# Benchmark results\n\nFigures written by the scripts in `benchmarks/`; each section names the script.\n"


def machine() -> dict:
    """CPU model, cores, load, and the versions that matter for the timings."""
    import diffrax
    import jax

    import mfpde

    cpu = ""
    try:
        cpu = next(line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                   if line.startswith("model name"))
    except (OSError, StopIteration):
        pass
    devices = jax.devices()
    return {
        "cpu": cpu or platform.processor() or platform.machine(),
        "cores": len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count(),
        "devices": f"{len(devices)} × {devices[0].device_kind}",
        "jax": f"{jax.__version__} ({jax.default_backend()})",
        "diffrax": diffrax.__version__,
        "mfpde": mfpde.__version__,
        "python": platform.python_version(),
        "date": datetime.date.today().isoformat(),
        "load": round(os.getloadavg()[0], 2) if hasattr(os, "getloadavg") else float("nan"),
    }


def machine_line(info: dict) -> str:
    return "Machine: " + "; ".join(f"{k} {v}" for k, v in info.items()) + "."


def write_section(heading: str, body: str, path: Path = RESULTS) -> None:
    """Replace the section `heading` (a `## ` line) of RESULTS.md with `body`, or append it; other sections stay."""
    text = path.read_text() if path.exists() else HEADER
    lines = text.splitlines(keepends=True)
    start = next((i for i, line in enumerate(lines) if line.rstrip() == heading), None)
    section = heading + "\n\n" + body.strip("\n") + "\n"
    if start is None:
        text = text.rstrip("\n") + "\n\n" + section
    else:
        end = next((i for i in range(start + 1, len(lines)) if lines[i].startswith("## ")), len(lines))
        text = "".join(lines[:start]) + section + ("\n" if end < len(lines) else "") + "".join(lines[end:])
    path.write_text(text.rstrip("\n") + "\n")


def met(ok: bool) -> str:
    """A target's verdict as RESULTS.md writes it."""
    return "met" if ok else "**missed**"


def fmt_time(t: float) -> str:
    return f"{t * 1e3:.0f} ms" if t < 1 else f"{t:.2f} s"


def median_time(fn, calls: int, warmup: int = 1) -> float:
    """The median wall time of `calls` calls of `fn` (its JAX result awaited), after `warmup` untimed calls."""
    import jax

    for _ in range(warmup):
        jax.block_until_ready(fn())
    times = []
    for _ in range(calls):
        start = time.perf_counter()
        jax.block_until_ready(fn())
        times.append(time.perf_counter() - start)
    return statistics.median(times)
