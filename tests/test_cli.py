import os
import re
import subprocess
import sys

import numpy as np
import pytest
import xarray as xr

import mfpde
from mfpde.cli import main


def test_demo_writes_netcdf_plot_and_summary(tmp_path, capsys):
    out = tmp_path / "run.nc"
    assert main(["demo", "-o", str(out), "--particles", "64", "--samples", "32", "--t1", "2", "-q"]) == 0
    printed = capsys.readouterr().out
    assert "loss" in printed and "steps" in printed and "compiling" in printed
    assert (tmp_path / "run.png").stat().st_size > 10_000
    ds = mfpde.load(out).dataset
    assert ds.sizes["particle"] == 64 and ds.loss[-1] < ds.loss[0]
    xr.testing.assert_identical(ds, xr.load_dataset(out, decode_times=False))  # mean-field time, not dates


CONFIG = """
[data]
kind = "teacher"
seed = 0
n = 32
d = 2

[flow]
kind = "TwoLayer"
l2 = 1e-3
temperature = 0.01

[init]
kind = "Product"
u = { kind = "Gaussian", std = 0.5 }
w = { kind = "Gaussian", std = 1.0 }

[problem]
tspan = [0.0, 2.0]

[algorithm]
kind = "Particles"
n = 16

[solve]
saveat = { start = 0.0, stop = 2.0, num = 5 }
key = 3
"""


def test_run_matches_python_api_and_records_command(tmp_path):
    import jax.numpy as jnp

    from solvers import Particles

    config = tmp_path / "c.toml"
    config.write_text(CONFIG)
    assert main(["run", str(config), "-o", str(tmp_path / "r.nc"), "-q"]) == 0
    ds = mfpde.load(tmp_path / "r.nc").dataset
    assert "mfpde run" in ds.attrs["history"] and ds.attrs["config"] == CONFIG
    data = mfpde.datasets.teacher(0, n=32, d=2)
    init = mfpde.measures.Product(u=mfpde.measures.Gaussian(std=0.5), w=mfpde.measures.Gaussian(std=1.0))
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3, temperature=0.01), data, init, (0.0, 2.0))
    direct = mfpde.solve(prob, Particles(n=16), saveat=jnp.linspace(0, 2, 5), key=3).dataset
    xr.testing.assert_equal(ds.drop_attrs(), direct.drop_attrs())


def test_sweep_and_show(tmp_path, capsys):
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.replace("key = 3", 'key = 3\nbatch_stepping = "shared"'))
    out = tmp_path / "study"
    args = ["sweep", str(config), "--set", "temperature=0:0.1:3", "--set", "seed=0:2", "-o", str(out), "-q"]
    assert main(args) == 0
    ds = mfpde.load(out / "sweep.nc").dataset
    assert ds.loss.dims == ("temperature", "seed", "time") and ds.loss.shape == (3, 2, 5)
    assert ds.attrs["batch_stepping"] == "shared"
    assert main(args) == 0  # resumes from the stored batches
    xr.testing.assert_equal(mfpde.load(out / "sweep.nc").dataset.drop_attrs(), ds.drop_attrs())
    assert main(["show", str(out / "sweep.nc")]) == 0
    assert "over 6 points" in capsys.readouterr().out and (out / "sweep.png").exists()


@pytest.mark.parametrize(
    "edit, match",
    [
        (("[flow]", "[flow]\nwidth = 3"), "flow.width: unknown key"),
        (("l2 = 1e-3", 'l2 = "big"'), r"flow.l2: expected a number, got 'big'"),
        (("temperature = 0.01", "temperature = -1.0"), r"flow.temperature: .*`temperature`"),
        (('kind = "TwoLayer"', 'kind = "ThreeLayer"'), "flow.kind: unknown"),
        (("[algorithm]", "[algorithms]"), "algorithms: unknown section"),
        (("n = 16", "n = 0"), r"algorithm.n: .*`n`"),
        (("key = 3", 'key = 3\nrtol = "tight"'), r"solve.rtol: expected a positive number, got 'tight'"),
        (("key = 3", 'key = 3\nbatch_size = "two"'), r"solve.batch_size: expected a positive integer, got 'two'"),
        (("key = 3", "keys = 3"), "solve.keys: unknown key"),
        (("key = 3", 'key = 3\nbatch_stepping = "together"'), "solve.batch_stepping: must be"),
        (("tspan = [0.0, 2.0]", "tspan = [2.0, 0.0]"), "problem.tspan: .*`tspan`"),
        (("std = 0.5", "std = -0.5"), r"init.u.std: .*`std`"),
    ],
)
def test_bad_config_names_the_key(tmp_path, capsys, monkeypatch, edit, match):
    import solvers._driver

    monkeypatch.setattr(solvers._driver, "run_point", None)  # nothing may be compiled or run
    config = tmp_path / "c.toml"
    config.write_text(CONFIG.replace(*edit, 1))
    assert main(["run", str(config), "-o", str(tmp_path / "r.nc")]) == 2
    assert re.search(match, capsys.readouterr().err), match


def test_vector_sweep_from_config_and_set(tmp_path):
    """A vector parameter (Multilayer's learning-rate multipliers) is swept with one row per point, from a [sweep]
    table or from --set with a TOML array; rows of different lengths are refused with the key's path."""
    from mfpde._config import ConfigError, build, parse_range

    config = {"data": {"kind": "teacher", "n": 8, "d": 2}, "flow": {"kind": "Multilayer", "activations": ["tanh", "tanh"]},
              "init": {"kind": "IIDLayers"}, "problem": {"tspan": [0.0, 1.0]},
              "algorithm": {"kind": "Units", "widths": [4, 4]}, "sweep": {"rates": [[1, 1, 1], [1, 0.5, 1]]}}
    problem, _, _ = build(config)
    assert isinstance(problem, mfpde.EnsembleProblem) and problem.shape == (2,)
    assert problem.sweep["rates"].tolist() == [[1, 1, 1], [1, 0.5, 1]]
    rows = parse_range("[[1, 0, 1], [0, 1, 1], [1, 1, 0]]")
    assert rows.shape == (3, 3)
    problem, _, _ = build({**config, "sweep": {}}, {"rates": rows})
    assert problem.shape == (3,)
    with pytest.raises(ConfigError, match="sweep.rates: rows of a vector parameter"):
        build({**config, "sweep": {"rates": [[1, 1, 1], [1, 0.5]]}})
    with pytest.raises(ConfigError, match="--set: cannot read '\\[\\[1, 1' as a TOML array"):
        parse_range("[[1, 1")


# A noisy run on the lean fixed-step path: cheap to compile, and it exercises the Brownian increments too.
SCAN_CONFIG = CONFIG.replace("n = 16", 'n = 16\nmethod = "scan"\ndt = 0.05')


def _fresh_python(args, cwd):
    """Run `python args` in a fresh process without 64-bit JAX (as a user's shell would start it)."""
    env = {name: value for name, value in os.environ.items() if name.upper() != "JAX_ENABLE_X64"}
    done = subprocess.run([sys.executable, *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=300,
                          check=False)
    assert done.returncode == 0, done.stderr
    return done


def _scan_problem():
    from solvers import Particles

    data = mfpde.datasets.teacher(0, n=32, d=2)
    init = mfpde.measures.Product(u=mfpde.measures.Gaussian(std=0.5), w=mfpde.measures.Gaussian(std=1.0))
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3, temperature=0.01), data, init, (0.0, 2.0))
    return prob, Particles(n=16, method="scan", dt=0.05)


def test_cli_in_a_fresh_process_computes_in_float64_like_the_api(tmp_path):
    """`mfpde run` enables 64-bit itself, before the configuration builds any array: a fresh process without it gives
    the numbers of the API run in float64 (this test process has 64-bit on)."""
    import jax.numpy as jnp

    (tmp_path / "c.toml").write_text(SCAN_CONFIG)
    _fresh_python(["-m", "mfpde.cli", "run", "c.toml", "-o", "r.nc", "-q"], tmp_path)
    ds = mfpde.load(tmp_path / "r.nc").dataset
    prob, algorithm = _scan_problem()
    direct = mfpde.solve(prob, algorithm, saveat=jnp.linspace(0, 2, 5), key=3).dataset
    assert direct.loss.dtype == np.float64
    for name, variable in direct.variables.items():
        if variable.dtype.kind == "f":
            assert ds[name].dtype == variable.dtype, name
            np.testing.assert_allclose(ds[name], variable, rtol=1e-10, atol=1e-10, err_msg=name)
        else:
            np.testing.assert_array_equal(ds[name], variable, err_msg=name)


# Data-free and lean (compiles in a second or two); the kappa and temperature are not exact in float32.
OU_CONFIG = """
[flow]
kind = "OrnsteinUhlenbeck"
kappa = 1.3
temperature = 0.1
dim = 2

[init]
kind = "Gaussian"
std = 0.7

[problem]
tspan = [0.0, 2.0]

[algorithm]
kind = "Particles"
n = 16
method = "scan"
dt = 0.05

[solve]
saveat = { start = 0.0, stop = 2.0, num = 5 }
key = 3
"""

FLOAT32_API = """
import jax.numpy as jnp
import mfpde
from mfpde.cli import main
from solvers import Particles

assert main(["run", "c.toml", "-o", "cli.nc", "--dtype", "float32", "-q"]) == 0
flow = mfpde.flows.OrnsteinUhlenbeck(kappa=1.3, temperature=0.1, dim=2)
prob = mfpde.FlowProblem(flow, None, mfpde.measures.Gaussian(std=0.7), (0.0, 2.0))
mfpde.solve(prob, Particles(n=16, method="scan", dt=0.05), saveat=jnp.linspace(0, 2, 5), key=3).to_netcdf("api.nc")
"""


def test_cli_float32_on_request_equals_the_float32_api(tmp_path):
    """`--dtype float32` leaves 64-bit off: every floating-point variable written is float32, and equals the API run
    in float32 in a fresh process (the CLI runs first there, so had it turned 64-bit on, the API run would be
    float64 too and the dtypes would show it)."""
    (tmp_path / "c.toml").write_text(OU_CONFIG)
    _fresh_python(["-c", FLOAT32_API], tmp_path)
    cli, api = (mfpde.load(tmp_path / name).dataset for name in ("cli.nc", "api.nc"))
    floats = [name for name, variable in cli.variables.items() if variable.dtype.kind == "f"]
    assert {"risk", "free_energy", "theta_mean", "time"} <= set(floats)
    assert {name: str(cli[name].dtype) for name in floats} == dict.fromkeys(floats, "float32")
    assert {name: str(api[name].dtype) for name in floats} == dict.fromkeys(floats, "float32")
    xr.testing.assert_equal(cli.drop_attrs(), api.drop_attrs())
    assert "--dtype float32" in cli.attrs["history"]
