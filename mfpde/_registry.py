"""Algorithms by name, for configuration files and the CLI.

`mfpde` (problems) never imports an algorithm package: a package declares its algorithms as entry points of the group
`mfpde.algorithms` (name = "package:Class"; `solvers` does so in `pyproject.toml`), and they are loaded when a
configuration names one.
"""

import functools
import importlib.metadata
import types

GROUP = "mfpde.algorithms"


@functools.cache
def algorithms() -> types.SimpleNamespace:
    """Every registered algorithm class, as attributes named by their entry points."""
    found = {entry.name: entry.load() for entry in importlib.metadata.entry_points(group=GROUP)}
    if not found:
        raise RuntimeError(f"No algorithm is registered in the entry-point group {GROUP!r}: install the package "
                           "with its metadata (`pip install -e .`).")
    return types.SimpleNamespace(**found)


def algorithm(name: str) -> type:
    """The algorithm class registered as `name`; a ValueError listing the registered ones otherwise."""
    registered = algorithms()
    if not hasattr(registered, name):
        raise ValueError(f"Unknown algorithm {name!r}; registered: {sorted(vars(registered))}.")
    return getattr(registered, name)
