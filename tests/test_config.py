"""TOML configurations: every bad value is refused with its full key path, before anything is compiled."""

import inspect
import re
import tomllib

import pytest

import mfpde
import solvers
from mfpde._config import _SOLVE_OPTIONS, ConfigError, build

BASE = """
[data]
kind = "teacher"
seed = 0
n = 8
d = 2

[flow]
kind = "TwoLayer"
l2 = 1e-3

[init]
kind = "Product"
u = { kind = "Gaussian", std = 0.5 }
w = { kind = "Gaussian", std = 1.0 }

[problem]
tspan = [0.0, 1.0]

[algorithm]
kind = "Particles"
n = 4

[solve]
saveat = [0.0, 1.0]

[sweep]
l2 = [0.0, 1e-3]
"""

# One wrong value per field of every table of BASE's kinds, and the message expected after the key's path.
WRONG = [
    ("data.seed", "zero", "expected an integer, got 'zero'"),
    ("data.n", "many", "expected an integer, got 'many'"),
    ("data.d", 2.5, "expected an integer, got 2.5"),
    ("data.activation", 3, "expected a string, got 3"),
    ("data.width", [4], r"expected an integer, got \[4\]"),
    ("data.k", True, "expected an integer, got True"),
    ("data.noise", "loud", "expected a number, got 'loud'"),
    ("data.n_test", "none", "expected an integer, got 'none'"),
    ("data.kind", 3, "unknown data 3"),
    ("flow.activation", 1.0, "expected a string, got 1.0"),
    ("flow.alpha", "one", "expected a number, got 'one'"),
    ("flow.bias", "yes", "expected true or false, got 'yes'"),
    ("flow.train_output", 1, "expected true or false, got 1"),
    ("flow.l2", "big", "expected a number, got 'big'"),
    ("flow.l2_output", "big", "`l2_output` of TwoLayer must be a number"),  # the constructor's message
    ("flow.temperature", "hot", "expected a number, got 'hot'"),
    ("flow.loss", 2, "expected one of 'squared', 'logistic', got 2"),
    ("flow.loss", "hinge", "expected one of 'squared', 'logistic', got 'hinge'"),
    ("flow.kind", ["TwoLayer"], r"unknown flow \['TwoLayer'\]"),
    ("init.u", "gaussian", r"expected a table \{ kind = \.\.\. \} building a measure, got 'gaussian'"),
    ("init.w", 1.0, r"expected a table \{ kind = \.\.\. \} building a measure, got 1.0"),
    ("init.u.std", "wide", "expected a number, got 'wide'"),
    ("init.u.mean", {"x": 1}, r"expected a number, got \{'x': 1\}"),
    ("init.u.kind", "Cauchy", "unknown init.u 'Cauchy'"),
    ("problem.tspan", "0:1", "expected a list of two numbers, got '0:1'"),
    ("problem.tspan", [0.0, "one"], r"expected a list of two numbers, got \[0.0, 'one'\]"),
    ("algorithm.n", "four", "expected an integer, got 'four'"),
    ("algorithm.method", 1, "expected one of 'adaptive', 'scan', got 1"),
    ("algorithm.dt", "small", "`dt` of Particles must be a number"),
    ("algorithm.chunk_size", 2.5, "expected an integer, got 2.5"),
    ("algorithm.save_state", "no", "expected true or false, got 'no'"),
    ("algorithm.entropy_samples", "many", "expected an integer, got 'many'"),
    ("algorithm.stiff_steps", 1e4, "expected an integer, got 10000.0"),
    ("algorithm.shard", 0, "expected true or false, got 0"),
    ("solve.saveat", "all", "must be a list of numbers or a table"),
    ("solve.key", "seven", "expected an integer, got 'seven'"),
    ("solve.rtol", "tight", "expected a positive number, got 'tight'"),
    ("solve.atol", -1.0, "expected a positive number, got -1.0"),
    ("solve.dt0", "small", "expected a positive number, got 'small'"),
    ("solve.max_steps", 0, "expected a positive integer, got 0"),
    ("solve.brownian_tol", [1e-3], r"expected a positive number, got \[0.001\]"),
    ("solve.batch_size", "two", "expected a positive integer, got 'two'"),
    ("solve.batch_stepping", "together", "must be 'per_point' or 'shared', got 'together'"),
    ("solve.throw", "yes", "expected true or false, got 'yes'"),
    ("solve.progress_meter", 1, "expected true or false, got 1"),
    ("sweep.l2", "all", "must be a list of numbers or a table"),
    ("sweep.l2", [0.0, "big"], "must be a list of numbers or a table"),
    ("sweep.l2", ["a", "b"], "must be a list of numbers or a table"),
]


def _config(path, value):
    config = tomllib.loads(BASE)
    *tables, name = path.split(".")
    table = config
    for t in tables:
        table = table[t]
    table[name] = value
    return config


def test_wrong_values_cover_every_field():
    """Every parameter of the kinds in BASE, and every [solve] option, has a wrong-type case above."""
    fields = {"data.seed", "data.kind", "flow.kind", "init.u", "init.w", "init.u.kind", "problem.tspan",
              "sweep.l2", *(f"solve.{name}" for name in _SOLVE_OPTIONS)}
    for prefix, target in [("data", mfpde.datasets.teacher), ("flow", mfpde.flows.TwoLayer),
                           ("init.u", mfpde.measures.Gaussian), ("algorithm", solvers.Particles)]:
        fields |= {f"{prefix}.{name}" for name in inspect.signature(target).parameters if name != "key"}
    assert fields == {path for path, _, _ in WRONG}


@pytest.mark.parametrize("path, value, message", WRONG, ids=[f"{p}={v!r}" for p, v, _ in WRONG])
def test_wrong_value_names_its_full_key_path(monkeypatch, path, value, message):
    import solvers._driver

    monkeypatch.setattr(solvers._driver, "run_point", None)  # nothing may be compiled or run
    with pytest.raises(ConfigError) as info:
        build(_config(path, value))
    assert re.fullmatch(f"{re.escape(path)}: {message}.*", str(info.value), flags=re.DOTALL), str(info.value)


@pytest.mark.parametrize(
    "path, value, message",
    [
        ("flow.temperature", -1.0, "`temperature`"),
        ("flow.l2", -1.0, "`l2`"),
        ("init.u.std", -0.5, "`std`"),
        ("algorithm.n", 0, "`n`"),
        ("problem.tspan", [1.0, 0.0], "`tspan`"),
        ("data.n", 0, "`n`"),
    ],
)
def test_bad_value_of_the_right_type_names_its_full_key_path(path, value, message):
    """Values the constructors refuse (the constructor's message, after the key's path)."""
    with pytest.raises(ConfigError, match=f"^{re.escape(path)}: .*{message}"):
        build(_config(path, value))


def test_good_config_builds():
    problem, algorithm, options = build(tomllib.loads(BASE))
    assert isinstance(problem, mfpde.EnsembleProblem) and problem.shape == (2,)
    assert algorithm.n == 4 and list(options["saveat"]) == [0.0, 1.0]


@pytest.mark.parametrize(
    "table, values, message",
    [
        ("algorithm", {"kind": "GibbsFixedPoint", "grid": "coarse"}, r"algorithm.grid: expected a table \{ kind = \.\.\. \} building a Grid"),
        ("algorithm", {"kind": "GibbsFixedPoint", "grid": {"kind": "Grid", "bounds": [[-1.0, 1.0]], "cells": 8},
                       "dense_cells": "all"}, "algorithm.dense_cells: expected an integer, got 'all'"),
        ("algorithm", {"kind": "GibbsFixedPoint", "grid": {"kind": "Grid", "bounds": [[-1.0, 1.0]], "cells": 8,
                                                           "axes": [1]}}, r"algorithm.grid.axes: expected a list of strings, got \[1\]"),
        ("algorithm", {"kind": "Convex", "n": "many"}, "algorithm.n: expected an integer or a list of integers, got 'many'"),
        ("algorithm", {"kind": "Convex", "entropy": [0.1, "x"]}, "algorithm.entropy: expected a number or a list of numbers"),
        ("flow", {"kind": "Multilayer", "activations": ["tanh", "tanh"], "rates": "fast"}, "flow.rates: "),
        ("sweep", {"nonsense": [1, 2]}, "sweep.nonsense: `nonsense` is not a field"),
        ("sweep", {"l2": [0.0, 1e-3], "flow.temperature": [0.1, -1.0]}, "sweep.flow.temperature: .*`temperature`"),
        ("sweep", {"l2": [0.0, 1e-3], "init.std": [0.1, 0.2]}, "sweep.init.std: `init.std`: Product has no field"),
        ("solve", "fast", "solve: expected a table"),
    ],
)
def test_other_kinds_and_tables_name_their_key_path(table, values, message):
    config = tomllib.loads(BASE)
    config[table] = values
    if table == "algorithm":
        config["init"] = {"kind": "Gaussian"}
    with pytest.raises(ConfigError, match=f"^{message}"):
        build(config)


def test_set_override_names_its_option():
    from mfpde._config import parse_range

    config = tomllib.loads(BASE)
    del config["sweep"]
    with pytest.raises(ConfigError, match="^--set temperature: .*`temperature`"):
        build(config, {"temperature": parse_range("-1,0")})


def test_data_set_that_takes_seed_by_name():
    """`seed` goes to a data set's PRNG key when it has one (teacher), else to its own `seed` argument (digits)."""
    import numpy as np

    config = tomllib.loads(BASE)
    config["data"] = {"kind": "digits", "seed": 1}
    problem, _, _ = build(config)
    np.testing.assert_array_equal(problem.problem.data.X, mfpde.datasets.digits(seed=1).X)
    np.testing.assert_array_equal(build(tomllib.loads(BASE))[0].problem.data.X, mfpde.datasets.teacher(0, n=8, d=2).X)
