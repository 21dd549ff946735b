"""Parameter studies on the particle solver: points batched through one compiled vmapped program, optionally
written batch by batch to a directory, or run as Dask tasks."""

import diffrax
import equinox as eqx
import jax
import jax.numpy as jnp
import numpy as np

import mfpde
from mfpde._ensemble import is_solver_parameter
from mfpde._store import ChunkStore


def solve_values(point, base, values: dict, key, meter):
    """One point of a sweep: the base problem with the point's values (traced), solved from its key."""
    if "algorithm.dt" in values:
        point = eqx.tree_at(lambda p: p.integrate.keywords["dt"], point, values["algorithm.dt"])
    problem_values = {k: v for k, v in values.items() if not is_solver_parameter(k)}
    observed, stats, _ = point(mfpde.remake(base, **problem_values), key, meter)
    return observed, stats


# One compiled program for a batch of points: vmap over swept values and keys, in lock step (see `run_ensemble`).
run_batch = eqx.filter_jit(eqx.filter_vmap(solve_values, in_axes=(None, None, 0, 0, None)))


def solve_batch(point, problem, values, key_data, start, stop, size, sharding):
    """Points start..stop−1 of a sweep, padded with the last point to `size` so that every batch reuses one
    compiled program."""
    index = np.minimum(np.arange(start, start + size), len(key_data) - 1)
    batch = {name: jnp.asarray(v[index], point.dtype) for name, v in values.items()}
    keys = jax.random.wrap_key_data(jnp.asarray(key_data[index]))
    if sharding is not None:
        batch, keys = jax.device_put((batch, keys), sharding)
    out = jax.device_get(run_batch(point, problem, batch, keys, diffrax.NoProgressMeter()))
    return jax.tree.map(lambda a: a[: stop - start], out)


def _to_numpy(tree):
    return jax.tree.map(lambda x: np.asarray(x) if eqx.is_array(x) else x, tree)


def _remote_batch(point, problem, values, key_data, start, stop, size, directory, study_fingerprint, x64):
    """A Dask task: run one batch in a worker process and write it to the study's directory; returns the path."""
    jax.config.update("jax_enable_x64", x64)  # before any array is made, as in the driver
    point, problem = jax.tree.map(lambda x: jnp.asarray(x) if isinstance(x, np.ndarray) else x, (point, problem))
    store = ChunkStore(directory, study_fingerprint)
    if not store.path(start, stop).exists():
        store.save(start, stop, solve_batch(point, problem, values, key_data, start, stop, size, None))
    return str(store.path(start, stop))


def _output_structure(point, ensemble, values, keys, size):
    """The pytree structure (and dtypes) of one batch's output, without running it."""
    index = np.zeros(size, dtype=int)
    batch = {name: jnp.asarray(v[index], point.dtype) for name, v in values.items()}
    shapes = eqx.filter_eval_shape(run_batch, point, ensemble.problem, batch, keys[index], diffrax.NoProgressMeter())
    return jax.tree.map(lambda s: np.zeros(s.shape, s.dtype), shapes)


def run_ensemble(point, ensemble, key, batch_size, progress_meter, store, devices, client=None):
    """Run every point of the sweep, `batch_size` at a time through one compiled vmapped program.

    Under vmap the adaptive loop runs in lock step: each point keeps its own step size and error control (results
    equal those of single solves), but a batch costs as many iterations as its slowest point needs; points that
    finish early idle. Group points of similar stiffness, or lower `batch_size`, when they differ a lot.

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
    missing = [b for b in batches if store is None or not store.path(*b).exists()]
    progress = None
    if not isinstance(progress_meter, diffrax.NoProgressMeter):
        import tqdm

        progress = tqdm.tqdm(total=len(batches), initial=len(batches) - len(missing), unit="batch", desc=f"{len(points)} points")
    outs = {}
    if client is not None:
        import distributed

        shipped = _to_numpy((point, ensemble.problem))
        futures = [
            client.submit(_remote_batch, *shipped, values, key_data, start, stop, size, str(store.directory),
                          store.fingerprint, point.dtype == jnp.float64, pure=False)
            for start, stop in missing
        ]
        for _ in distributed.as_completed(futures):
            progress is not None and progress.update()
        client.gather(futures)  # re-raises a worker's error
    else:
        for start, stop in missing:
            outs[start, stop] = solve_batch(point, ensemble.problem, values, key_data, start, stop, size, sharding)
            if store is not None:
                store.save(start, stop, outs[start, stop])
            progress is not None and progress.update()
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
    coords = {}
    if ensemble is not None:
        for name, values in ensemble.sweep.items():
            dim = sweep_dims[list(ensemble.sweep).index(name)] if ensemble.product else "point"
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
    return variables, coords, {k: np.asarray(v).reshape(shape) for k, v in stats.items()}
