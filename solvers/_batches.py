"""Parameter studies: points batched through one compiled vmapped program, optionally
written batch by batch to a directory, or run as Dask tasks."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np
import optimistix as optx
import xarray as xr

import mfpde
from mfpde.extend import ChunkStore, is_solver_parameter

from ._integrate import NONFINITE, AbstractWrappedController, brownian_path, proposed_step


def _problem_values(values: dict) -> dict:
    return {k: v for k, v in values.items() if not is_solver_parameter(k)}


def _padded(start: int, size: int, total: int) -> np.ndarray:
    """The points of a batch from `start`, padded with the last point to `size`."""
    return np.minimum(np.arange(start, start + size), total - 1)


def solve_values(point, base, values: dict, key, meter):
    """One point of a sweep: the base problem with the point's values (traced), solved from its key."""
    if "algorithm.dt" in values:
        point = eqx.tree_at(lambda p: p.integrate.keywords["dt"], point, values["algorithm.dt"])
    observed, stats, _ = point(mfpde.remake(base, **_problem_values(values)), key, meter)
    return observed, stats


def map_in_groups(fn, args, group: int):
    """`fn` over the leading (point) axis of the pytree `args`: vmapped within groups of `group` points, the groups
    one after another (`lax.map`). Group g holds points g, g + B/group, g + 2B/group, …: it spans the devices when
    the point axis is split over them."""
    points = jax.tree.leaves(args)[0].shape[0]
    if group == points:
        return eqx.filter_vmap(fn)(*args)
    if group == 1:  # no vmap of one: measured 10% faster for a shared-step batch at N = 1024 on a CPU
        return jax.lax.map(lambda a: fn(*a), args)
    rows = lambda a: jnp.swapaxes(a.reshape(group, points // group, *a.shape[1:]), 0, 1)  # noqa: E731
    out = jax.lax.map(lambda a: eqx.filter_vmap(fn)(*a), jax.tree.map(rows, args))
    return jax.tree.map(lambda a: jnp.swapaxes(a, 0, 1).reshape(points, *a.shape[2:]), out)


@eqx.filter_jit
def run_batch(point, base, values, keys, meter, group):
    """One compiled program for a batch of points, each with its own steps (see `run_ensemble`)."""
    return map_in_groups(lambda v, key: solve_values(point, base, v, key, meter), (values, keys), group)


def finite_rms_norm(error):
    """The RMS norm (mean_i e_i²)^{1/2}, or +∞ when any entry is not finite.

    diffrax rejects a step whose error norm is +∞ and shrinks the next one by the controller's `factormin`; a NaN
    norm would make the next step NaN instead. A step that overflows is thus retried smaller, not lost."""
    norm = optx.rms_norm(error)
    return jnp.where(jnp.all(jnp.isfinite(error)), norm, jnp.inf)


class MaxRMSNorm(eqx.Module):
    """The error norm of a batch stepped together: the largest of its points' RMS norms,

        ‖e‖ = max_b (mean_i e_{b,i}²)^{1/2},   e the flat error of `points` stacked states,

    so that a step is accepted only when every point meets the tolerance. A non-finite error of any point gives
    +∞: the step is rejected and retried smaller, as that point alone would be (`finite_rms_norm`); a point still
    non-finite at the smallest steps leaves the batch (`SharedSteps`). Pass it as `norm=` of a
    `diffrax.PIDController` given to a study with `batch_stepping="shared"`.
    """

    points: int = eqx.field(static=True)

    def __call__(self, error):
        per_point = jnp.sqrt(jnp.mean(jnp.square(error.reshape(self.points, -1)), axis=1))
        return jnp.max(jnp.where(jnp.isfinite(per_point), per_point, jnp.inf))


class SharedSteps(AbstractWrappedController):
    """`controller` over a batch stepped together, with a way out for a point that dies.

    A step whose error is not finite for some point is rejected and retried smaller (`MaxRMSNorm`), as that point
    alone would be. Once the step is below `floor` × the span and a point's candidate state or error is still not
    finite, that point is marked failed: its non-finite candidate is accepted, `StackedSystem` freezes it, and from
    then on it is left out of the error control (its states and error count as zero), so the others go on at the
    steps they need. Its saves before that time are kept; its result is `nonfinite`.
    """

    controller: diffrax.AbstractAdaptiveStepSizeController
    points: int = eqx.field(static=True)
    floor: float = eqx.field(static=True, default=1e-9)

    def wrap(self, direction):
        return SharedSteps(self.controller.wrap(direction), self.points, self.floor)

    def proposed_step(self, state):
        return proposed_step(self.controller, state[0])

    def init(self, terms, t0, t1, y0, dt0, args, func, error_order):
        first, state = self.controller.init(terms, t0, t1, y0, dt0, args, func, error_order)
        return first, (state, self.floor * jnp.abs(t1 - t0))

    def adapt_step_size(self, t0, t1, y0, y1_candidate, args, y_error, error_order, controller_state):
        state, smallest = controller_state
        finite = lambda y: jnp.all(jnp.isfinite(y.reshape(self.points, -1)), axis=1)  # noqa: E731
        dead = ~finite(y0)
        failing = ~finite(y1_candidate) if y_error is None else ~(finite(y1_candidate) & finite(y_error))
        out = dead | (failing & (jnp.abs(t1 - t0) <= smallest))

        def without(y):
            return jnp.where(out[:, None], 0.0, y.reshape(self.points, -1)).reshape(y.shape)

        keep, next_t0, next_t1, jump, state, result = self.controller.adapt_step_size(
            t0, t1, without(y0), without(y1_candidate), args, None if y_error is None else without(y_error),
            error_order, state)
        return keep, next_t0, next_t1, jump, (state, smallest), result


class SeedBrownianPaths(diffrax.AbstractBrownianPath):
    """The Brownian paths of a batch stepped together: one path per distinct seed (a tree, or independent
    increments), evaluated once per step and handed to every point with that seed (`index[b]` is point b's path).
    Each is the path a single solve of that seed draws from, so that with a tree each point sees the same path as
    alone; the noise costs one draw per distinct seed, not per point."""

    paths: diffrax.AbstractBrownianPath  # stacked: a leading axis over the distinct seeds
    index: jax.Array
    levy_area: type = eqx.field(static=True, default=diffrax.SpaceTimeLevyArea)

    @property
    def t0(self):
        return self.paths.t0[0]

    def at_step(self, step):
        return SeedBrownianPaths(self.paths.at_step(jnp.broadcast_to(step, self.paths.key.shape)), self.index)

    @property
    def t1(self):
        return self.paths.t1[0]

    def evaluate(self, t0, t1=None, left=True, use_levy=False):
        out = eqx.filter_vmap(lambda path: path.evaluate(t0, t1, left, use_levy=True))(self.paths)
        W, H = (a[self.index].reshape(-1) for a in (out.W, out.H))
        increment = diffrax.SpaceTimeLevyArea(dt=out.dt[0], W=W, H=H)
        return increment if use_levy else increment.W


class StackedSystem(eqx.Module):
    """The points of a batch as one system on their stacked states (a flat vector of points × state entries):
    each point's velocity, noise scale and observables come from its own problem's system, `point.system`. A point
    whose state is no longer finite is frozen (zero velocity), so that it neither stops the batch nor enters its
    error control; it is reported as failed."""

    point: eqx.Module
    base: mfpde.FlowProblem
    values: dict  # the points' swept problem values, one row each
    index: jax.Array  # each point's Brownian path among the batch's distinct seeds
    group: int = eqx.field(static=True)  # points evaluated together (`map_in_groups`)

    def _each(self, fn, y):
        states = y.reshape(self.index.shape[0], -1)
        one = lambda v, y: fn(self.point.system(mfpde.remake(self.base, **v)), y)  # noqa: E731
        return map_in_groups(one, (self.values, states), self.group)

    def alive(self, y):
        return jnp.all(jnp.isfinite(y.reshape(self.index.shape[0], -1)), axis=1)

    def velocity(self, t, y, args=None):
        v = self._each(lambda system, y: system.velocity(t, y), y)
        return jnp.where(self.alive(y)[:, None], v, 0.0).reshape(-1)

    def noise_scale(self, y):
        return self._each(lambda system, y: system.noise_scale(y), y).reshape(-1)

    def observe(self, t, y, noisy: bool, save: bool):
        return self._each(lambda system, y: system.observe(t, y, noisy, save), y)

    def brownian(self, span, tol, keys, like):
        one = like.reshape(self.index.shape[0], -1)[0]
        paths = eqx.filter_vmap(lambda key: brownian_path(span, tol, key, one))(keys)
        return SeedBrownianPaths(paths, self.index)

    @property
    def event(self):
        """Stops the batch once every point has failed."""
        return diffrax.Event(lambda t, y, args, **kwargs: ~jnp.any(self.alive(y)))


def solve_shared(point, base, values: dict, keys, paths, meter, group):
    """A batch of points stepped together as one `StackedSystem`: one step size for all, each step checked against
    every point's tolerance (`MaxRMSNorm`), the Brownian path of each distinct seed drawn once. `paths` =
    (the point holding each distinct seed, each point's seed among them)."""
    problem_values = _problem_values(values)
    y0, noise_keys = eqx.filter_vmap(lambda v, key: point.start(mfpde.remake(base, **v), key))(problem_values, keys)
    holders, index = paths
    system = StackedSystem(point, base, problem_values, index, group)
    span = tuple(jnp.asarray(t, point.dtype) for t in base.tspan)
    observed, stats, final = point.integrate(system, y0.reshape(-1), span[0], span, noise_keys[holders], meter,
                                             event=system.event)
    if isinstance(final, tuple):  # (state, solver state, controller state) of predictable steps
        final = final[0]
    points = index.shape[0]
    failed = ~system.alive(final)
    stats = {k: jnp.broadcast_to(v, (points,)) for k, v in stats.items()}
    stats["result"] = jnp.where(failed, NONFINITE, stats["result"])
    return jax.tree.map(lambda a: jnp.moveaxis(a, 0, 1), observed), stats


@eqx.filter_jit
def run_shared(point, base, values, keys, paths, meter, group):
    return solve_shared(point, base, values, keys, paths, meter, group)


def error_norm(stepping: str, ensemble, batch_size: int):
    """The error norm of the default step-size controller under `batch_stepping=stepping` (checked here):
    `MaxRMSNorm` for the batches of a study stepped together, else diffrax's RMS norm."""
    if stepping not in ("per_point", "shared"):
        raise ValueError(f"`batch_stepping` must be 'per_point' or 'shared', got {stepping!r}.")
    if stepping == "shared" and ensemble is not None:
        return MaxRMSNorm(min(batch_size, int(np.prod(ensemble.shape))))
    return finite_rms_norm


def seed_paths(key_data, paths: int):
    """(the point holding each distinct key, each point's key among them), padded to `paths` distinct keys so
    that every batch reuses one compiled program."""
    _, holders, index = np.unique(key_data, axis=0, return_index=True, return_inverse=True)
    holders = np.concatenate([holders, np.full(paths - len(holders), holders[0])])
    return jnp.asarray(holders), jnp.asarray(index.reshape(-1))


_CPU_GROUP_ENTRIES = 2**14


def _group_size(point, problem, size: int, devices: int) -> int:
    """How many points of a batch of `size` run vmapped together (`map_in_groups`). On an accelerator: all. On CPUs:
    a multiple of the devices sharing the batch, dividing `size`, whose states hold about 2¹⁴ entries. Vmapping more
    evicts their intermediates from the cache (a two-layer velocity at N = 1024 takes 3× longer per point vmapped
    over 64 points than alone); vmapping fewer leaves small states paying per-operation overheads (at N = 64 a
    noisy batch took 8.5 s one point at a time and 6.6 s all together)."""
    if jax.devices()[0].platform != "cpu":
        return size
    entries = eqx.filter_eval_shape(point.start, problem, jax.random.key(0))[0].size
    fits = [g for g in range(devices, size + 1, devices) if size % g == 0 and g * entries <= _CPU_GROUP_ENTRIES]
    return max(fits, default=devices if size % devices == 0 else 1)


def solve_batch(point, problem, values, key_data, start, stop, size, sharding, paths=None):
    """Points start..stop−1 of a sweep, padded with the last point to `size` so that every batch reuses one
    compiled program; stepped per point, or together when `paths` (the number of distinct seeds a batch may hold)
    is given."""
    group = _group_size(point, problem, size, 1 if sharding is None else len(sharding.device_set))
    index = _padded(start, size, len(key_data))
    batch = {name: jnp.asarray(v[index], point.dtype) for name, v in values.items()}
    keys = jax.random.wrap_key_data(jnp.asarray(key_data[index]))
    if sharding is not None:
        batch, keys = jax.device_put((batch, keys), sharding)
    if paths is None:
        out = run_batch(point, problem, batch, keys, diffrax.NoProgressMeter(), group)
    else:
        out = run_shared(point, problem, batch, keys, seed_paths(key_data[index], paths), diffrax.NoProgressMeter(),
                         group)
    return jax.tree.map(lambda a: a[: stop - start], jax.device_get(out))


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x) if eqx.is_array(x) else x, tree)


def _remote_batch(point, problem, values, key_data, start, stop, size, paths, directory, study_fingerprint, x64):
    """A Dask task: run one batch in a worker process and write it to the study's directory; returns the path."""
    jax.config.update("jax_enable_x64", x64)  # before any array is made, as in the driver
    point, problem = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, (point, problem))
    store = ChunkStore(directory, study_fingerprint)
    if not store.path(start, stop).exists():
        store.save(start, stop, solve_batch(point, problem, values, key_data, start, stop, size, None, paths))
    return str(store.path(start, stop))


def _output_structure(point, ensemble, values, keys, size):
    """The pytree structure (and dtypes) of one batch's output, without running it."""
    index = np.zeros(size, dtype=int)
    batch = {name: jnp.asarray(v[index], point.dtype) for name, v in values.items()}
    meter = diffrax.NoProgressMeter()
    shapes = eqx.filter_eval_shape(run_batch, point, ensemble.problem, batch, keys[index], meter, size)
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def run_ensemble(point, ensemble, key, batch_size, progress_meter, store, devices, client=None, stepping="per_point"):
    """Run every point of the sweep, `batch_size` at a time through one compiled program.

    With `stepping="per_point"` each point keeps its own step size and error control (results equal those of single
    solves). The points of a group (`_group_size`: all of a batch on an accelerator) are vmapped, and the adaptive
    loop runs in lock step: a group costs as many iterations as its slowest point needs, while points that finish
    early idle. Group points of similar stiffness, or lower `batch_size`, when they differ a lot. With
    `stepping="shared"` a batch is one system with one step size (`solve_shared`): no point idles, each step meets
    every point's tolerance, and points with the same seed share one draw of their Brownian path.

    With a `store`, each finished batch is written to its own file at once, and batches already there are read
    instead of run, so an interrupted study resumes where it stopped. With a Dask `client`, each missing batch is a
    task: a worker runs it, writes its file into the store and returns the path.
    """
    points = ensemble.points()
    values = {name: np.asarray([p[name] for p in points]) for name in ensemble.sweep if name != "seed"}
    keys = jnp.stack([jax.random.key(int(p["seed"])) if "seed" in p else key for p in points])
    key_data = np.asarray(jax.random.key_data(keys))
    size = min(batch_size, len(points))
    sharding = None
    if len(devices) > 1 and size % len(devices) == 0:
        sharding = jax.sharding.NamedSharding(jax.sharding.Mesh(devices, ("points",)), jax.sharding.PartitionSpec("points"))
    batches = [(start, min(start + size, len(points))) for start in range(0, len(points), size)]
    paths = None
    if stepping == "shared":
        paths = max(len(np.unique(key_data[_padded(start, size, len(points))], axis=0)) for start, _ in batches)
    missing = [b for b in batches if store is None or not store.path(*b).exists()]
    progress = None
    if not isinstance(progress_meter, diffrax.NoProgressMeter):
        import tqdm

        done = len(points) - sum(stop - start for start, stop in missing)
        progress = tqdm.tqdm(total=len(points), initial=done, unit="point", desc=f"{len(batches)} batches of {size}")
    outs = {}
    if client is not None:
        import distributed

        shipped = _to_numpy((point, ensemble.problem))
        futures = [
            client.submit(_remote_batch, *shipped, values, key_data, start, stop, size, paths, str(store.directory),
                          store.fingerprint, point.dtype == jnp.float64, pure=False)
            for start, stop in missing
        ]
        for future in distributed.as_completed(futures):
            start, stop = missing[futures.index(future)]
            progress is not None and progress.update(stop - start)
        client.gather(futures)  # re-raises a worker's error
    else:
        for start, stop in missing:
            outs[start, stop] = solve_batch(point, ensemble.problem, values, key_data, start, stop, size, sharding, paths)
            if store is not None:
                store.save(start, stop, outs[start, stop])
            progress is not None and progress.update(stop - start)
    if progress is not None:
        progress.close()
    like = next(iter(outs.values()), None)
    for batch in batches:
        if batch not in outs:
            like = _output_structure(point, ensemble, values, keys, size) if like is None else like
            outs[batch] = store.load(*batch, like)
    outs = [outs[batch] for batch in batches]
    return jax.tree.map(lambda *a: np.concatenate(a), *outs)


def sweep_variables(observables: dict, described: dict, ts, stats: dict, ensemble):
    """Data variables `name → (dims, values, attrs)` of saved observables, with the sweep's dimensions in front for a
    study, NaN at the times an early stop did not reach; the sweep coordinates; the statistics in the sweep's shape.

    `observables` hold (time, ...) arrays for one problem, (point, time, ...) for a sweep; `described` maps each
    name to its dims beyond time and its CF attributes.
    """
    shape, sweep_dims = (ensemble.shape, ensemble.dims) if ensemble is not None else ((), ())
    result = np.asarray(stats["result"]).reshape(-1)
    # Times an early stop did not reach are filled with inf by diffrax (and by the scan path).
    risk = np.asarray(observables["risk"]).reshape(len(result), len(ts))
    unreached = (result[:, None] != 0) & np.isposinf(risk)
    variables = {}
    for name, values in observables.items():
        values = np.asarray(values)
        values = values.reshape(len(result), len(ts), *values.shape[2 if ensemble is not None else 1 :])
        if unreached.any() and np.issubdtype(values.dtype, np.floating):
            values = np.where(unreached.reshape(*unreached.shape, *[1] * (values.ndim - 2)), np.nan, values)
        dims, attrs = described[name]
        variables[name] = ((*sweep_dims, "time", *dims), values.reshape(*shape, *values.shape[1:]), attrs)
    coords = sweep_coords(ensemble) if ensemble is not None else {}
    return variables, coords, {k: np.asarray(v).reshape(shape) for k, v in stats.items()}


def sweep_coords(ensemble) -> dict:
    """The coordinates of a study's sweep dimensions: each swept parameter along its dimension (a vector parameter
    as an index, its rows beside it), and the point index of a zipped sweep."""
    coords = {}
    for name, values in ensemble.sweep.items():
        dim = ensemble.dims[list(ensemble.sweep).index(name)] if ensemble.product else "point"
        label = name.replace(".", "_")
        if values.ndim == 1:
            coords[label] = ((dim,), values, {"long_name": f"swept parameter {name}"})
            continue
        # A vector parameter: an index along its sweep dimension, the vectors beside it.
        if ensemble.product:
            coords[label] = ((dim,), np.arange(len(values)), {"long_name": f"index of the swept {name}"})
        entries = tuple(f"{label}_entry" + (str(i) if values.ndim > 2 else "") for i in range(values.ndim - 1))
        coords[f"{label}_value"] = ((dim, *entries), values, {"long_name": f"swept parameter {name}"})
    if not ensemble.product:
        coords["point"] = (("point",), np.arange(ensemble.shape[0]), {"long_name": "sweep point index"})
    return coords


_JOINED_ATTRS = ("solver", "stepsize_controller", "rtol", "atol", "noisy", "stiff_detected", "jacobian_spectral_radius",
                 "kinks_detected", "kink_deviation", "explicit_stability_steps", "imex_split", "transport_cap")


def merge_points(ensemble, parts) -> xr.Dataset:
    """One study's dataset from the datasets of zipped sub-studies of its points: `parts` = [(a label, the points'
    indices in the study's C order, their dataset with a leading `point` dimension)]. A variable missing from a part
    is NaN at its points; the solver attributes of the parts are joined ("label: value; ..."), the times added."""
    total = int(np.prod(ensemble.shape))
    first = parts[0][2]
    variables = {}
    for name in dict.fromkeys(name for _, _, ds in parts for name in ds.data_vars):
        like = next(ds[name] for _, _, ds in parts if name in ds.data_vars)
        rest = like.shape[1:]
        dtype = like.dtype if all(name in ds.data_vars for _, _, ds in parts) else np.result_type(like.dtype, float)
        values = np.full((total, *rest), np.nan if np.issubdtype(dtype, np.floating) else 0, dtype)
        for _, index, ds in parts:
            if name in ds.data_vars:
                values[index] = ds[name].values
        variables[name] = ((*ensemble.dims, *like.dims[1:]), values.reshape(*ensemble.shape, *rest), like.attrs)
    coords = {name: (c.dims, c.values, c.attrs) for name, c in first.coords.items() if "point" not in c.dims}
    coords.update(sweep_coords(ensemble))
    attrs = dict(first.attrs)
    for key in _JOINED_ATTRS:
        values = [(label, str(ds.attrs[key])) for label, _, ds in parts if key in ds.attrs]
        if values:
            attrs[key] = "; ".join(f"{label}: {v}" for label, v in values)
    for key in ("wall_time_s", "compile_time_s", "run_time_s"):
        attrs[key] = sum(ds.attrs.get(key, 0.0) for _, _, ds in parts)
    return xr.Dataset(variables, coords, attrs)
