"""NetCDF-safe attributes and atomic writes."""

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr


def attr_value(value):
    """A value NetCDF can store as an attribute (no bool, dict, None, JAX array or length-1 list), or None to drop."""
    if value is None:
        return None
    if isinstance(value, (bool, np.bool_)):
        return int(value)
    if isinstance(value, (str, int, float, np.integer, np.floating)):
        return value.item() if isinstance(value, np.generic) else value
    if callable(value) and not hasattr(value, "shape"):
        return getattr(value, "__qualname__", None) or type(value).__name__
    try:
        array = np.asarray(value)
    except Exception:
        return repr(value)
    if array.dtype == object:
        return repr(value)
    if array.dtype == bool:
        array = array.astype(np.int8)
    if array.size == 1:
        return array.reshape(()).item()
    if array.size == 0:
        return None
    return array.ravel()


def flatten_attrs(obj, prefix: str) -> dict:
    """The fields of an (Equinox) dataclass as flat NetCDF attributes `prefix_field`, nested ones recursively."""
    out = {prefix: type(obj).__name__}
    if not dataclasses.is_dataclass(obj):
        return out
    for field in dataclasses.fields(obj):
        value = getattr(obj, field.name)
        key = f"{prefix}_{field.name}"
        if dataclasses.is_dataclass(value):
            out.update(flatten_attrs(value, key))
        elif isinstance(value, dict):
            for name, item in value.items():
                out.update(flatten_attrs(item, f"{key}_{name}") if dataclasses.is_dataclass(item) else {f"{key}_{name}": item})
        elif isinstance(value, tuple) and value and all(isinstance(v, str) for v in value):
            out[key] = ", ".join(value)
        elif isinstance(value, tuple) and all(np.ndim(v) == 0 for v in value):
            out[key] = [float(v) for v in value] if value else None
        elif hasattr(value, "shape") and np.size(value) > 64:
            out[key] = f"array of shape {tuple(value.shape)}"
        else:
            out[key] = value
    return out


def sanitize_attrs(attrs: dict) -> dict:
    return {k: v for k, v in ((k, attr_value(v)) for k, v in attrs.items()) if v is not None}


def write_atomic(dataset: xr.Dataset, path) -> Path:
    """Write `dataset` to `path` (netCDF4 engine) through a temporary file in the same folder and a rename."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.nc", dir=path.parent)
    os.close(fd)
    try:
        dataset.to_netcdf(tmp, engine="netcdf4")
        # mkstemp creates the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
