"""TOML configurations that map one-to-one onto the Python API.

    [data]      kind = "teacher"      # a function of mfpde.datasets, with its keyword arguments
                n = 256
    [flow]      kind = "TwoLayer"     # a class of mfpde.flows, with its fields
                temperature = 0.01
    [init]      kind = "Gaussian"     # a class of mfpde.measures
    [problem]   tspan = [0.0, 50.0]
    [algorithm] kind = "Particles"    # a registered algorithm (entry points `mfpde.algorithms`: the `solvers` classes)
                n = 1024
    [solve]     saveat = {start = 0.0, stop = 50.0, num = 101}   # or a list of times
                key = 0               # and rtol, atol, max_steps, batch_size, batch_stepping, ...
    [sweep]     temperature = [0.0, 0.01, 0.1]   # optional: an EnsembleProblem
                seed = {start = 0, stop = 4}
                rates = [[1, 1, 1], [1, 0.5, 1]]  # a vector parameter: one row per point
"""

import collections.abc
import inspect
import re
import tomllib
import types
import typing

import numpy as np

from . import datasets, flows, measures
from ._ensemble import EnsembleProblem
from ._problem import FlowProblem
from ._registry import algorithms

SECTIONS = ("data", "flow", "init", "problem", "algorithm", "solve", "sweep")
_SOLVE_OPTIONS = ("saveat", "key", "rtol", "atol", "dt0", "max_steps", "brownian_tol", "batch_size", "batch_stepping",
                  "throw", "progress_meter")


class ConfigError(ValueError):
    """A configuration that cannot be built; the message starts with the key's path."""


def _is_int(value) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_numbers(value) -> bool:
    """A number or a (nested) list of numbers: what NumPy reads as a numeric array."""
    return _is_number(value) or (isinstance(value, list) and all(_is_numbers(v) for v in value))


def _is_kind_table(value) -> bool:
    return isinstance(value, dict) and "kind" in value


def _any_of(*expectations):
    """The union of expectations, or None when one of them is unknown (then anything may be right)."""
    if not expectations or any(e is None for e in expectations):
        return None
    if len(expectations) == 1:
        return expectations[0]
    return " or ".join(e[0] for e in expectations), lambda v: any(e[1](v) for e in expectations)


_BOOL = ("true or false", lambda v: isinstance(v, bool))
_INT = ("an integer", _is_int)
_NUMBER = ("a number", _is_number)
_STRING = ("a string", lambda v: isinstance(v, str))
_POSITIVE_INT = ("a positive integer", lambda v: _is_int(v) and v > 0)
_POSITIVE_NUMBER = ("a positive number", lambda v: _is_number(v) and v > 0)
_TSPAN = ("a list of two numbers", lambda v: isinstance(v, list) and len(v) == 2 and all(map(_is_number, v)))
_SOLVE_TYPES = {"key": _INT, "rtol": _POSITIVE_NUMBER, "atol": _POSITIVE_NUMBER, "dt0": _POSITIVE_NUMBER,
                "brownian_tol": _POSITIVE_NUMBER, "max_steps": _POSITIVE_INT, "batch_size": _POSITIVE_INT,
                "throw": _BOOL, "progress_meter": _BOOL}


def _from_annotation(annotation):
    """(description, test) of the TOML values that `annotation` admits, or None where it says too little."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is bool:
        return _BOOL
    if annotation is int:
        return _INT
    if annotation is float:
        return _NUMBER
    if annotation is str:
        return _STRING
    if origin is typing.Literal:
        return "one of " + ", ".join(map(repr, args)), lambda v: isinstance(v, str) and v in args
    if origin in (typing.Union, types.UnionType):
        return _any_of(*(_from_annotation(a) for a in args if a is not type(None)))
    if origin in (tuple, list, collections.abc.Sequence) and args:
        if origin is tuple and not (len(args) == 2 and args[1] is Ellipsis):
            return None
        item = {bool: "booleans", int: "integers", float: "numbers", str: "strings"}.get(args[0])
        if item is not None:
            test = _from_annotation(args[0])[1]
            return f"a list of {item}", lambda v: isinstance(v, list) and all(map(test, v))
        return None
    if origin is collections.abc.Mapping or annotation is collections.abc.Mapping:
        return "a table", lambda v: isinstance(v, dict)
    if isinstance(annotation, type) and (annotation.__module__.split(".")[0] == "mfpde"
                                         or annotation in vars(algorithms()).values()):
        noun = annotation.__name__
        noun = noun.removeprefix("Abstract").lower() if inspect.isabstract(annotation) else noun
        return f"a table {{ kind = ... }} building a {noun}", _is_kind_table
    return None


def _expectation(parameter: inspect.Parameter):
    """What a parameter of a constructor admits from TOML: from its annotation, else from the type of its default."""
    if parameter.annotation not in (inspect.Parameter.empty, typing.Any):
        return _from_annotation(parameter.annotation)
    default = parameter.default
    if isinstance(default, bool):
        return _BOOL
    if isinstance(default, int):
        return _INT
    if isinstance(default, float):  # a parameter that NumPy converts: a number or an array of numbers
        return "a number", _is_numbers
    if isinstance(default, str):
        return _STRING
    return None


def _check(path: str, value, expectation):
    if expectation is not None and not expectation[1](value):
        raise ConfigError(f"{path}: expected {expectation[0]}, got {value!r}")


def _culprit(names, message: str, build_without) -> str | None:
    """Which of `names` a constructor's error is about: the first one the message quotes in backticks, else the
    first one without which the constructor succeeds."""
    for quoted in re.findall(r"`([^`]+)`", message):
        if quoted in names:
            return quoted
    for name in names:
        try:
            build_without(name)
        except (TypeError, ValueError):
            continue
        return name
    return None


def _build(path: str, table, namespace, *, positional_key=False):
    """Build `table` (a dict with a `kind`) from `namespace`; every error names its key below `path`."""
    if not isinstance(table, dict):
        raise ConfigError(f"{path}: expected a table, got {table!r}")
    if "kind" not in table:
        raise ConfigError(f"{path}.kind: missing (the name of the {path} to build)")
    kind = table["kind"]
    target = getattr(namespace, kind, None) if isinstance(kind, str) and not kind.startswith("_") else None
    if target is None or not callable(target) or inspect.ismodule(target):
        raise ConfigError(f"{path}.kind: unknown {path} {kind!r}")
    parameters = inspect.signature(target).parameters
    # A data set's PRNG key is given as an integer `seed`; a data set that takes `seed` itself gets it by name.
    positional_key = positional_key and "key" in parameters
    named = {name: p for name, p in parameters.items() if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD) and name != "key"}
    var_keyword = next((p for p in parameters.values() if p.kind is p.VAR_KEYWORD), None)
    arguments = {}
    for name, value in table.items():
        if name == "kind":
            continue
        key = f"{path}.{name}"
        if positional_key and name == "seed":
            parameter = inspect.Parameter("seed", inspect.Parameter.KEYWORD_ONLY, annotation=int)
        elif name in named:
            parameter = named[name]
        elif var_keyword is not None:
            parameter = var_keyword
        else:
            allowed = sorted(named) + (["seed"] if positional_key else [])
            raise ConfigError(f"{key}: unknown key for {kind}; allowed: {allowed}")
        if _is_kind_table(value):  # e.g. [init] kind = "Product", u = {kind = "Gaussian", ...}
            value = _build(key, value, namespace)
        else:
            _check(key, value, _expectation(parameter))
        arguments[name] = value

    def call(arguments):
        if positional_key:
            arguments = dict(arguments)
            return target(arguments.pop("seed", 0), **arguments)
        return target(**arguments)

    try:
        return call(arguments)
    except (TypeError, ValueError) as e:
        culprit = _culprit(arguments, str(e), lambda name: call({k: v for k, v in arguments.items() if k != name}))
        raise ConfigError(f"{path}.{culprit}: {e}" if culprit else f"{path}: {e}") from None


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
    """(problem, algorithm, solve options) from a configuration dict; an EnsembleProblem when it has a sweep.

    Every value is checked before anything is compiled, and every error is a `ConfigError` whose message starts with
    the full path of its key (`solve.rtol: expected a positive number, got 'tight'`).

    **Arguments:**

    - `config`: the tables of the configuration (as `load_config` returns them).
    - `sweep_overrides`: further swept values (`--set NAME=VALUES` on the command line), name → values.
    """
    unknown = set(config) - set(SECTIONS)
    if unknown:
        raise ConfigError(f"{min(unknown)}: unknown section; allowed: {list(SECTIONS)}")
    for section in ("flow", "init", "problem", "algorithm"):
        if section not in config:
            raise ConfigError(f"{section}: missing table [{section}]")
    for section in SECTIONS:
        if section in config and not isinstance(config[section], dict):
            raise ConfigError(f"{section}: expected a table [{section}], got {config[section]!r}")
    data = _build("data", config["data"], datasets, positional_key=True) if "data" in config else None
    flow = _build("flow", config["flow"], flows)
    init = _build("init", config["init"], measures)
    problem_table = config["problem"]
    extra = set(problem_table) - {"tspan"}
    if extra:
        raise ConfigError(f"problem.{min(extra)}: unknown key; allowed: ['tspan']")
    if "tspan" not in problem_table:
        raise ConfigError("problem.tspan: missing ([t0, t1])")
    _check("problem.tspan", problem_table["tspan"], _TSPAN)
    try:
        problem = FlowProblem(flow, data, init, tuple(problem_table["tspan"]))
    except (TypeError, ValueError) as e:
        raise ConfigError(f"problem.tspan: {e}") from None
    algorithm = _build("algorithm", config["algorithm"], algorithms())
    options = dict(config.get("solve", {}))
    for name, value in options.items():
        if name not in _SOLVE_OPTIONS:
            raise ConfigError(f"solve.{name}: unknown key; allowed: {list(_SOLVE_OPTIONS)}")
        _check(f"solve.{name}", value, _SOLVE_TYPES.get(name))
    if "saveat" in options:
        options["saveat"] = _times("solve.saveat", options["saveat"])
    if options.get("batch_stepping", "per_point") not in ("per_point", "shared"):
        raise ConfigError(f"solve.batch_stepping: must be 'per_point' or 'shared', got {options['batch_stepping']!r}")
    sweep = {name: _sweep_values(f"sweep.{name}", value) for name, value in config.get("sweep", {}).items()}
    origin = {name: f"sweep.{name}" for name in sweep}
    for name, value in (sweep_overrides or {}).items():
        sweep[name], origin[name] = value, f"--set {name}"
    if sweep:
        try:
            problem = EnsembleProblem(problem, sweep)
        except (TypeError, ValueError) as e:
            def without(name):
                return EnsembleProblem(problem, {k: v for k, v in sweep.items() if k != name})

            culprit = _culprit(list(sweep), str(e), without)
            raise ConfigError(f"{origin[culprit]}: {e}" if culprit else f"sweep: {e}") from None
    return problem, algorithm, options
