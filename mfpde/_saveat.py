import diffrax
import numpy as np


def save_times(saveat, tspan) -> np.ndarray:
    """The times to save at, from an array or a `diffrax.SaveAt`, checked against `tspan`.

    `None` means 101 equally spaced times over `tspan`.
    """
    t0, t1 = (float(t) for t in tspan)
    # A time equal to t1 up to the precision tspan is stored in (float32 rounds 0.02 to 0.0199999996) is t1.
    eps = max(float(np.finfo(np.asarray(t).dtype if np.issubdtype(np.asarray(t).dtype, np.floating) else float).eps)
              for t in tspan)
    if saveat is None:
        return np.linspace(t0, t1, 101)
    if isinstance(saveat, diffrax.SaveAt):
        sub = saveat.subs
        if not isinstance(sub, diffrax.SubSaveAt):
            raise ValueError("`saveat`: `subs` (several SubSaveAt) is not supported; give one set of times, "
                             "`SaveAt(ts=...)`: every observable is saved at all of them.")
        if sub.fn is not diffrax.SaveAt(t1=True).subs.fn:  # diffrax's default, saving y
            raise ValueError("`saveat`: `fn` is not supported; the algorithm saves its observables (loss, risk, "
                             "moments, ...; the state with `save_state`) at `ts`.")
        if sub.steps or saveat.dense:
            raise ValueError("`saveat`: saving every step or a dense solution is not supported; give times (`SaveAt(ts=...)`).")
        if saveat.solver_state or saveat.controller_state or saveat.made_jump:
            raise ValueError("`saveat`: solver_state, controller_state and made_jump are not supported.")
        times = [] if sub.ts is None else list(np.asarray(sub.ts, dtype=float))
        times = ([t0] if sub.t0 else []) + times + ([t1] if sub.t1 else [])
        ts = np.asarray(times, dtype=float)
    else:
        try:
            ts = np.atleast_1d(np.asarray(saveat, dtype=float))
        except (TypeError, ValueError):
            raise TypeError(f"`saveat` must be an array of times or a diffrax.SaveAt, got {type(saveat).__name__}.") from None
    if ts.ndim != 1 or ts.size == 0:
        raise ValueError(f"`saveat` must be a non-empty 1-D array of times, got shape {ts.shape}.")
    if not np.all(np.isfinite(ts)):
        raise ValueError("`saveat` contains NaN or infinite times.")
    if np.any(np.diff(ts) < 0):
        raise ValueError("`saveat` times must be non-decreasing.")
    scale = max(abs(t0), abs(t1), 1.0) * max(4 * eps, 1e-12)
    if ts[0] < t0 - scale or ts[-1] > t1 + scale:
        raise ValueError(f"`saveat` times must lie in tspan [{t0:g}, {t1:g}], got [{ts[0]:g}, {ts[-1]:g}].")
    return np.clip(ts, t0, t1)
