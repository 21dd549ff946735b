"""Durable results: a study writes each finished batch of points to its own NetCDF file, so that an interrupted
run keeps what it finished and a rerun with the same directory resumes."""

import hashlib
import time
from pathlib import Path

import equinox as eqx
import jax
import numpy as np
import xarray as xr

from ._netcdf import write_atomic


def fingerprint(*parts) -> str:
    """A hash of the leaves of pytrees (array bytes, or the repr of other leaves) and of their paths: equal for
    the same study in any process, different when a value in it changes. Leaves must have process-independent
    reprs (numbers, strings; no functions)."""
    digest = hashlib.sha256()
    for part in parts:
        for path, leaf in jax.tree_util.tree_flatten_with_path(part)[0]:
            digest.update(jax.tree_util.keystr(path).encode())
            if hasattr(leaf, "dtype") and jax.dtypes.issubdtype(leaf.dtype, jax.dtypes.prng_key):
                leaf = jax.random.key_data(leaf)
            if hasattr(leaf, "dtype") and hasattr(leaf, "shape"):
                array = np.ascontiguousarray(np.asarray(leaf))
                digest.update(f"{array.dtype}{array.shape}".encode() + array.tobytes())
            else:
                digest.update(repr(leaf).encode())
    return digest.hexdigest()[:16]


def numerics(*modules) -> tuple:
    """What identifies numerical settings (solvers, step-size controllers) in a stored run's fingerprint: their reprs,
    which show every field but arrays only as shapes, and their arrays."""
    return repr(modules), eqx.filter(modules, eqx.is_array)


class ChunkStore:
    """Batches of points of one study, stored as `points-START-STOP.nc` files in `directory`.

    Each file holds a pytree of arrays whose leading axis runs over the points START..STOP−1; its `fingerprint`
    attribute ties it to one study, so a directory is never silently shared by two different studies. Its
    `wall_time_s` attribute is the wall time the call that wrote it spent on it (since the store was opened, or since
    its previous batch); `earlier_wall_time` sums those of the batches read back that earlier calls wrote, so that a
    resumed study can record the wall time of all its calls.
    """

    def __init__(self, directory, study_fingerprint: str):
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.fingerprint = study_fingerprint
        self.earlier_wall_time = 0.0
        self._earlier = {path.name for path in self.directory.glob("points-*.nc")}  # written by earlier calls
        self._mark = time.perf_counter()

    def path(self, start: int, stop: int) -> Path:
        return self.directory / f"points-{start:06d}-{stop:06d}.nc"

    def load(self, start: int, stop: int, like):
        """The stored batch as a pytree with the structure of `like`, or None when it is not there yet."""
        path = self.path(start, stop)
        if not path.exists():
            return None
        with xr.open_dataset(path, engine="netcdf4") as ds:
            if ds.attrs.get("fingerprint") != self.fingerprint:
                raise ValueError(
                    f"`directory` holds results of a different study ({path.name} has fingerprint "
                    f"{ds.attrs.get('fingerprint')}, this study {self.fingerprint}); use a new directory."
                )
            leaves = [ds[f"leaf_{i}"].values for i in range(len(jax.tree.leaves(like)))]
            if path.name in self._earlier:
                self._earlier.discard(path.name)  # counted once, however often it is read
                self.earlier_wall_time += float(ds.attrs.get("wall_time_s", 0.0))
        return jax.tree.unflatten(jax.tree.structure(like), leaves)

    def save(self, start: int, stop: int, batch) -> Path:
        leaves = jax.tree.leaves(batch)
        variables = {
            f"leaf_{i}": ([f"axis_{i}_{j}" for j in range(np.ndim(leaf))], np.asarray(leaf)) for i, leaf in enumerate(leaves)
        }
        now = time.perf_counter()
        attrs = {"fingerprint": self.fingerprint, "start": start, "stop": stop, "wall_time_s": now - self._mark}
        self._mark = now
        return write_atomic(xr.Dataset(variables, attrs=attrs), self.path(start, stop))
