"""TOML configurations that map one-to-one onto the Python API.

    [data]      kind = "teacher"      # a function of mfpde.datasets, with its keyword arguments
                n = 256
    [flow]      kind = "TwoLayer"     # a class of mfpde.flows, with its fields
                temperature = 0.01
    [init]      kind = "Gaussian"     # a class of mfpde.measures
    [problem]   tspan = [0.0, 50.0]
    [algorithm] kind = "Particles"    # a class of the `solvers` package
                n = 1024
    [solve]     saveat = {start = 0.0, stop = 50.0, num = 101}   # or a list of times
                key = 0               # and rtol, atol, max_steps, batch_size, batch_stepping, ...
    [sweep]     temperature = [0.0, 0.01, 0.1]   # optional: an EnsembleProblem
                seed = {start = 0, stop = 4}
                rates = [[1, 1, 1], [1, 0.5, 1]]  # a vector parameter: one row per point
"""

import inspect
import tomllib

import numpy as np

from . import datasets, flows, measures
from ._ensemble import EnsembleProblem
from ._problem import FlowProblem

SECTIONS = ("data", "flow", "init", "problem", "algorithm", "solve", "sweep")
_SOLVE_OPTIONS = ("saveat", "key", "rtol", "atol", "dt0", "max_steps", "brownian_tol", "batch_size", "batch_stepping",
                  "throw", "progress_meter")


class ConfigError(ValueError):
    """A configuration that cannot be built; the message starts with the key's path."""


def _parameters(target) -> set[str]:
    signature = inspect.signature(target)
    return {name for name, p in signature.parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name != "key"}


def _build(section: str, table: dict, namespace, *, positional_key=False):
    if "kind" not in table:
        raise ConfigError(f"{section}.kind: missing (the name of the {section} to build)")
    kind = table["kind"]
    target = getattr(namespace, kind, None) if isinstance(kind, str) and not kind.startswith("_") else None
    if target is None or not callable(target):
        raise ConfigError(f"{section}.kind: unknown {section} {kind!r}")
    arguments = {}
    allowed = _parameters(target) | ({"seed"} if positional_key else set())
    for name, value in table.items():
        if name == "kind":
            continue
        if name not in allowed and not _takes_kwargs(target):
            raise ConfigError(f"{section}.{name}: unknown key for {kind}; allowed: {sorted(allowed)}")
        # A nested table with a kind is built from the same namespace, e.g. [init] kind = "Product", u = {kind = ...}.
        arguments[name] = _build(f"{section}.{name}", value, namespace) if isinstance(value, dict) and "kind" in value else value
    try:
        if positional_key:
            seed = arguments.pop("seed", 0)
            return target(seed, **arguments)
        return target(**arguments)
    except (TypeError, ValueError) as e:
        raise ConfigError(f"{section}: {e}") from None


def _takes_kwargs(target) -> bool:
    return any(p.kind is p.VAR_KEYWORD for p in inspect.signature(target).parameters.values())


def _times(path: str, value):
    if isinstance(value, dict):
        unknown = set(value) - {"start", "stop", "num", "step"}
        if unknown:
            raise ConfigError(f"{path}: unknown keys {sorted(unknown)}; use start, stop and num (or step)")
        try:
            if "num" in value:
                return np.linspace(value.get("start", 0), value["stop"], value["num"])
            return np.arange(value.get("start", 0), value["stop"], value.get("step", 1))
        except (KeyError, TypeError, ValueError) as e:
            raise ConfigError(f"{path}: {e}") from None
    if not isinstance(value, list) or not all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in value):
        raise ConfigError(f"{path}: must be a list of numbers or a table {{start, stop, num}}, got {value!r}")
    return np.asarray(value)


def _sweep_values(path: str, value):
    """Values of a swept parameter: as `_times`, or a list of equal-length number lists (a vector parameter)."""
    if isinstance(value, list) and value and all(isinstance(row, list) for row in value):
        if not all(len(row) == len(value[0]) and all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in row)
                   for row in value):
            raise ConfigError(f"{path}: rows of a vector parameter must be lists of numbers of one length, got {value!r}")
        return np.asarray(value)
    return _times(path, value)


def parse_range(text: str):
    """`--set` values: "a:b:num" (num points from a to b), "a:b" (integers a..b−1), "x,y,z", or a TOML array such
    as "[[1, 1, 1], [1, 0.5, 1]]" (one row per point for a vector parameter)."""
    if text.startswith("["):
        try:
            return _sweep_values("--set", tomllib.loads(f"value = {text}")["value"])
        except tomllib.TOMLDecodeError:
            raise ConfigError(f"--set: cannot read {text!r} as a TOML array") from None
    parts = text.split(":")
    try:
        if len(parts) == 3:
            return np.linspace(float(parts[0]), float(parts[1]), int(parts[2]))
        if len(parts) == 2:
            return np.arange(int(parts[0]), int(parts[1]))
        values = [float(v) for v in text.split(",")]
        return np.asarray([int(v) for v in values] if all(v.is_integer() for v in values) and "." not in text else values)
    except ValueError:
        raise ConfigError(f"--set: cannot read {text!r}; use a:b:num, a:b, a comma list or a TOML array") from None


def load_config(path) -> dict:
    with open(path, "rb") as f:
        try:
            return tomllib.load(f)
        except tomllib.TOMLDecodeError as e:
            raise ConfigError(f"{path}: {e}") from None


def build(config: dict, sweep_overrides: dict | None = None):
    """(problem, algorithm, solve options) from a configuration dict; an EnsembleProblem when it has a sweep."""
    import solvers

    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{sorted(unknown)[0]}: unknown section; allowed: {list(SECTIONS)}")
    for section in ("flow", "init", "problem", "algorithm"):
        if not isinstance(config.get(section), dict):
            raise ConfigError(f"{section}: missing table [{section}]")
    data = _build("data", config["data"], datasets, positional_key=True) if "data" in config else None
    flow = _build("flow", config["flow"], flows)
    init = _build("init", config["init"], measures)
    problem_table = dict(config["problem"])
    extra = set(problem_table) - {"tspan"}
    if extra:
        raise ConfigError(f"problem.{sorted(extra)[0]}: unknown key; allowed: ['tspan']")
    if "tspan" not in problem_table:
        raise ConfigError("problem.tspan: missing ([t0, t1])")
    try:
        problem = FlowProblem(flow, data, init, tuple(problem_table["tspan"]))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"problem: {e}") from None
    algorithm = _build("algorithm", config["algorithm"], solvers)
    options = dict(config.get("solve", {}))
    for name in options:
        if name not in _SOLVE_OPTIONS:
            raise ConfigError(f"solve.{name}: unknown key; allowed: {list(_SOLVE_OPTIONS)}")
    if "saveat" in options:
        options["saveat"] = _times("solve.saveat", options["saveat"])
    if options.get("batch_stepping", "per_point") not in ("per_point", "shared"):
        raise ConfigError(f"solve.batch_stepping: must be 'per_point' or 'shared', got {options['batch_stepping']!r}")
    sweep = {name: _sweep_values(f"sweep.{name}", value) for name, value in config.get("sweep", {}).items()}
    sweep.update(sweep_overrides or {})
    if sweep:
        try:
            problem = EnsembleProblem(problem, sweep)
        except (TypeError, ValueError) as e:
            raise ConfigError(f"sweep: {e}") from None
    return problem, algorithm, options
