"""NetCDF-safe attributes, CF metadata and atomic writes."""

import dataclasses
import os
import tempfile
from pathlib import Path

import numpy as np
import xarray as xr

CONVENTIONS = "CF-1.10"

# Mean-field time is dimensionless, but CF (4.4) wants a coordinate named time to be a time coordinate with units
# "<unit> since <epoch>". One unit of mean-field time is recorded as one second after a nominal epoch; readers get the
# numbers back with decode_times=False (as `mfpde.load` does).
TIME_ATTRS = {
    "standard_name": "time",
    "long_name": "mean-field time",
    "units": "seconds since 1970-01-01 00:00:00",
    "calendar": "standard",
    "comment": "mean-field time is dimensionless; one unit is recorded as one second after the nominal epoch "
               "1970-01-01, as CF requires of a time coordinate. Read with decode_times=False for the numbers.",
}

# Every file `write_atomic` writes holds an empty group of this name, whose attributes say so: xarray reads the root
# group only, so the datasets read back are exactly those written, while `mfpde.load` can tell its own files.
WRITER_GROUP = "mfpde"

# Attributes hold parameters; arrays larger than this, and every matrix (explicit initial states, for example), are
# stored as variables instead.
ATTRIBUTE_MAX_SIZE = 8


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
    """The fields of an (Equinox) dataclass as flat attributes `prefix_field`, nested ones recursively.

    Arrays are kept whole (they enter the fingerprints of stored studies); `describe` moves the large ones into
    variables before anything is written.
    """
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
        else:
            out[key] = value
    return out


def _is_large_array(value) -> bool:
    return hasattr(value, "shape") and (np.ndim(value) >= 2 or np.size(value) > ATTRIBUTE_MAX_SIZE)


def describe(obj, prefix: str) -> tuple[dict, dict]:
    """`obj`'s parameters for a dataset: (attributes, variables).

    The attributes are `flatten_attrs(obj, prefix)`, except that arrays with more than `ATTRIBUTE_MAX_SIZE` elements
    or more than one dimension, such as the explicit states of `measures.Particles` and `measures.Layers`, become
    variables named as their key (dimensions `key_dim_0`, …); the attribute then names the variable.

    **Arguments:**

    - `obj`: a flow, an initial measure or an algorithm.
    - `prefix`: the attributes' prefix, e.g. `"init"`.
    """
    attrs, variables = {}, {}
    for key, value in flatten_attrs(obj, prefix).items():
        if _is_large_array(value):
            array = np.asarray(value)
            field = key.removeprefix(f"{prefix}_")
            variables[key] = xr.Variable(
                tuple(f"{key}_dim_{i}" for i in range(array.ndim)), array,
                {"long_name": f"array {field} of the {prefix} ({type(obj).__name__})", "units": "1"},
            )
            attrs[key] = f"variable {key}"
        else:
            attrs[key] = value
    return attrs, variables


def sanitize_attrs(attrs: dict) -> dict:
    """`attrs` with every value made NetCDF-safe by `attr_value`, and those it drops left out."""
    return {k: v for k, v in ((k, attr_value(v)) for k, v in attrs.items()) if v is not None}


def _mark(path) -> None:
    import netCDF4

    with netCDF4.Dataset(path, "a") as nc:
        group = nc.createGroup(WRITER_GROUP)
        group.setncattr("comment", "written by mfpde; the data are in the root group")


def check_written_by_mfpde(path) -> None:
    """Refuse, with a ValueError naming `path`, a file that is not NetCDF or that mfpde did not write: one written by
    `write_atomic` (it holds the `WRITER_GROUP`), or a result with the CF attributes mfpde gives every result
    (`source` listing mfpde's version, or a `history` of mfpde calls), as files written before the group have."""
    import netCDF4

    try:
        nc = netCDF4.Dataset(path)
    except FileNotFoundError:
        raise FileNotFoundError(f"{path}: no such file") from None
    except OSError as e:
        raise ValueError(f"{path} is not a NetCDF file ({e.strerror or e}).") from None
    with nc:
        if WRITER_GROUP in nc.groups:
            return
        attrs = {name: nc.getncattr(name) for name in nc.ncattrs()}
    source, history = str(attrs.get("source", "")), str(attrs.get("history", ""))
    if source.startswith("mfpde ") or " mfpde." in history:
        return
    raise ValueError(f"{path} was not written by mfpde (it has none of the marks mfpde gives its files); read it with "
                     "xarray.open_dataset instead.")


def write_atomic(dataset: xr.Dataset, path) -> Path:
    """Write `dataset` to `path` (netCDF4 engine) through a temporary file in the same folder and a rename.

    Coordinates are written without `_FillValue`: CF (2.5.1) does not allow missing values in them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp.nc", dir=path.parent)
    os.close(fd)
    try:
        dataset = dataset.copy(deep=False)  # the caller's encodings stay as they are
        for coord in dataset.coords.values():
            coord.encoding["_FillValue"] = None
        dataset.to_netcdf(tmp, engine="netcdf4")
        _mark(tmp)
        # mkstemp creates the file private (0600); give it the permissions a plain open() would.
        umask = os.umask(0)
        os.umask(umask)
        os.chmod(tmp, 0o666 & ~umask)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path
