"""Wall time split into compilation and execution, read from JAX's own compile-duration events."""

import threading
import time

import jax.monitoring

_COMPILE_EVENTS = (
    "/jax/core/compile/jaxpr_trace_duration",
    "/jax/core/compile/jaxpr_to_mlir_module_duration",
    "/jax/core/compile/backend_compile_duration",
)
_active = threading.local()


def _listener(event: str, duration: float, **kwargs) -> None:
    if event in _COMPILE_EVENTS:
        for timer in getattr(_active, "timers", ()):
            timer.compile_time += duration


jax.monitoring.register_event_duration_secs_listener(_listener)


class Timer:
    """Context manager measuring `wall_time` and the part of it spent tracing and compiling (`compile_time`)."""

    def __init__(self):
        self.compile_time = 0.0
        self.wall_time = 0.0

    @property
    def run_time(self) -> float:
        return max(self.wall_time - self.compile_time, 0.0)

    def __enter__(self):
        if not hasattr(_active, "timers"):
            _active.timers = []
        _active.timers.append(self)
        self._start = time.perf_counter()
        return self

    def __exit__(self, *exc):
        self.wall_time = time.perf_counter() - self._start
        _active.timers.remove(self)
        return False
