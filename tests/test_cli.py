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
    captured = capsys.readouterr()
    printed = captured.out
    assert "loss" in printed and "steps" in printed and "compiling" in printed
    assert captured.err.startswith("mfpde demo: compiling"), captured.err
    assert (tmp_path / "run.png").stat().st_size > 10_000
    ds = mfpde.load(out).dataset
    assert ds.sizes["particle"] == 64 and ds.loss[-1] < ds.loss[0]
    xr.testing.assert_identical(ds, xr.load_dataset(out, decode_times=False))  # mean-field time, not dates
    # The file read by netCDF4 itself: its loss at every time is ½ mean_i (f(x_i) − y_i)² of its own particles,
    # f = (1/N) Σ_j u_j tanh(w_j·x), on the demo's data (teacher, seed 0), in float64.
    import netCDF4

    with netCDF4.Dataset(out) as nc:
        theta, loss = np.asarray(nc["theta"][:]), np.asarray(nc["loss"][:])
        assert nc["theta"].dimensions == ("time", "particle", "param") and nc["loss"].dtype == np.float64
    data = mfpde.datasets.teacher(0, n=32, d=2, activation="tanh", noise=0.01, n_test=1000)
    X, y = np.asarray(data.X), np.asarray(data.y)[:, 0]
    f = np.einsum("tj,tij->ti", theta[:, :, 0], np.tanh(np.einsum("id,tjd->tij", X, theta[:, :, 1:3]))) / 64
    np.testing.assert_allclose(loss, 0.5 * np.mean((f - y) ** 2, axis=1), rtol=1e-10)


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
    args = ["sweep", str(config), "--set", "temperature=0.05:0.1:3", "--set", "seed=0:2", "-o", str(out), "-q"]
    assert main(args) == 0
    assert "mfpde sweep: compiling" in capsys.readouterr().err
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
              "algorithm": {"kind": "Units", "n": [4, 4]}, "sweep": {"rates": [[1, 1, 1], [1, 0.5, 1]]}}
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


# --- user errors: one line on stderr, exit status 2, nothing compiled ------------------------------------------------

_COMPILES = []


def _count_compiles(event, duration, **kwargs):
    if event == "/jax/core/compile/backend_compile_duration":
        _COMPILES.append(event)


def _as_root() -> bool:
    return hasattr(os, "geteuid") and os.geteuid() == 0


def _read_only_dir(tmp):
    """A folder nobody but root may write to."""
    folder = tmp / "locked"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


def _foreign_netcdf(tmp):
    path = tmp / "foreign.nc"
    xr.Dataset({"x": (("t",), np.arange(3.0))}, attrs={"title": "not from mfpde"}).to_netcdf(path, engine="netcdf4")
    return path


def _ours(tmp):
    from mfpde._netcdf import write_atomic

    return write_atomic(xr.Dataset({"risk": (("time",), np.ones(2))}, coords={"time": [0.0, 1.0]}), tmp / "ours.nc")


def _config(tmp, text=OU_CONFIG, name="c.toml"):
    path = tmp / name
    path.write_bytes(text.encode() if isinstance(text, str) else text)
    return str(path)


def _a_file(tmp):
    path = tmp / "file.txt"
    path.write_text("plain text\n")
    return path


_ROOT_SKIP = pytest.mark.skipif(_as_root(), reason="root may write into a read-only folder")

# id → (command line from the test's folder, what stderr must say)
USER_ERRORS = {
    "run saveat outside tspan": (lambda t: ["run", _config(t, OU_CONFIG.replace("stop = 2.0, num", "stop = 5.0, num"))],
                                 r"solve\.saveat: .*tspan \[0, 2\]"),
    "run rtol tight": (lambda t: ["run", _config(t, OU_CONFIG + 'rtol = "tight"\n')],
                       r"solve\.rtol: expected a positive number, got 'tight'"),
    "run rtol negative": (lambda t: ["run", _config(t, OU_CONFIG + "rtol = -1e-6\n")],
                          r"solve\.rtol: expected a positive number, got -1e-06"),
    "run key of the wrong type": (lambda t: ["run", _config(t, OU_CONFIG.replace("n = 16", 'n = "many"'))],
                                  r"algorithm\.n: expected"),
    "run unknown key": (lambda t: ["run", _config(t, OU_CONFIG.replace("kappa = 1.3", "kappa = 1.3\nspeed = 2"))],
                        r"flow\.speed: unknown key for OrnsteinUhlenbeck"),
    "run bad TOML syntax": (lambda t: ["run", _config(t, OU_CONFIG.replace("kappa = 1.3", "kappa = "))],
                            r"c\.toml: invalid TOML: .*line 4"),
    "run binary TOML": (lambda t: ["run", _config(t, b"\x89PNG\r\n\x1a\n\xff\xfe")], r"c\.toml: not a text"),
    "run missing table": (lambda t: ["run", _config(t, OU_CONFIG.replace("[algorithm]", "[algorithms]"))],
                          r"algorithms: unknown section"),
    "run missing TOML": (lambda t: ["run", str(t / "missing.toml")], r"missing\.toml: no such file"),
    "run TOML is a folder": (lambda t: ["run", str(t)], r"is a folder, not a TOML file"),
    "run -o below a file": (lambda t: ["run", _config(t), "-o", str(_a_file(t) / "r.nc")],
                            r"-o .*file\.txt.* is not a folder"),
    "run -o into a read-only folder": pytest.param(
        lambda t: ["run", _config(t), "-o", str(_read_only_dir(t) / "r.nc")], r"-o: cannot write into .*locked",
        marks=_ROOT_SKIP),
    "run -o is a folder": (lambda t: ["run", _config(t), "-o", str(t)], r"-o .* is a folder; give a file name"),
    "run --dtype float16": (lambda t: ["run", _config(t), "--dtype", "float16"],
                            r"argument --dtype: invalid choice: 'float16'"),
    "run unknown option": (lambda t: ["run", _config(t), "--particles", "3"], r"unrecognized arguments: --particles 3"),
    "run without TOML": (lambda t: ["run"], r"the following arguments are required: CONFIG"),
    "no command": (lambda t: [], r"the following arguments are required: COMMAND"),
    "unknown command": (lambda t: ["solve", "c.toml"], r"invalid choice: 'solve'"),
    "sweep -o below a file": (lambda t: ["sweep", _config(t), "--set", "temperature=0:0.1:2", "-o",
                                         str(_a_file(t) / "study")], r"-o .*file\.txt.* is not a folder"),
    "sweep -o read-only": pytest.param(
        lambda t: ["sweep", _config(t), "--set", "temperature=0:0.1:2", "-o", str(_read_only_dir(t) / "study")],
        r"-o: cannot write into .*locked", marks=_ROOT_SKIP),
    "sweep --set without =": (lambda t: ["sweep", _config(t), "--set", "temperature"],
                              r"--set: expected NAME=VALUES, got 'temperature'"),
    "sweep --set unreadable": (lambda t: ["sweep", _config(t), "--set", "temperature=low:high"],
                               r"--set: cannot read 'low:high'"),
    "sweep nothing to sweep": (lambda t: ["sweep", _config(t)], r"nothing to sweep"),
    "sweep unknown parameter": (lambda t: ["sweep", _config(t), "--set", "speed=0:1:2"], r"--set speed: "),
    "show a text file": (lambda t: ["show", str(_a_file(t))], r"file\.txt.* is not a NetCDF file"),
    "show a missing file": (lambda t: ["show", str(t / "missing.nc")], r"missing\.nc: no such file"),
    "show a NetCDF mfpde did not write": (lambda t: ["show", str(_foreign_netcdf(t))],
                                          r"foreign\.nc.* was not written by mfpde"),
    "show --png below a file": (lambda t: ["show", str(_ours(t)), "--png", str(_a_file(t) / "p.png")],
                                r"--png .*file\.txt.* is not a folder"),
    "demo --particles -5": (lambda t: ["demo", "--particles", "-5"],
                            r"argument --particles: must be a positive integer, got '-5'"),
    "demo --particles many": (lambda t: ["demo", "--particles", "many"],
                              r"argument --particles: must be a positive integer, got 'many'"),
    "demo --samples 0": (lambda t: ["demo", "--samples", "0"], r"argument --samples: must be a positive integer"),
    "demo --t1 0": (lambda t: ["demo", "--t1", "0"], r"argument --t1: must be a positive number, got '0'"),
    "demo --temperature -1": (lambda t: ["demo", "--temperature", "-1"],
                              r"argument --temperature: must be a number ≥ 0, got '-1'"),
    "demo --seed 1.5": (lambda t: ["demo", "--seed", "1.5"], r"argument --seed: must be an integer, got '1.5'"),
    "demo -o below a file": (lambda t: ["demo", "-o", str(_a_file(t) / "run.nc")], r"-o .*file\.txt.* is not a folder"),
}


@pytest.fixture(scope="module")
def _warm():
    """What every case builds before it fails (JAX arrays of a configuration) is compiled once here; the cases
    themselves must compile nothing."""
    import jax
    import jax.monitoring

    from mfpde._config import build

    jax.monitoring.register_event_duration_secs_listener(_count_compiles)
    import tomllib

    build(tomllib.loads(OU_CONFIG))
    build(tomllib.loads(OU_CONFIG), {"temperature": np.linspace(0.0, 0.1, 2)})
    before = len(_COMPILES)
    jax.jit(lambda x: x + 1.5)(np.arange(3.0))
    assert len(_COMPILES) > before  # the listener sees a compilation


def _cases():
    for name, case in USER_ERRORS.items():
        values, marks = (case.values, case.marks) if hasattr(case, "marks") else (case, ())
        yield pytest.param(*values, marks=marks, id=name)


@pytest.mark.parametrize("argv, match", list(_cases()))
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, monkeypatch, _warm, argv, match):
    import solvers._batches
    import solvers._driver

    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(solvers._driver, "run_point", None)  # nothing may be run
    monkeypatch.setattr(solvers._batches, "solve_batch", None)
    argv = argv(tmp_path)
    before = len(_COMPILES)
    status = main(argv)
    err = capsys.readouterr().err
    assert status == 2, err
    assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
    assert re.search(match, err), err
    assert err.startswith("mfpde"), err
    assert len(_COMPILES) == before, "compiled before failing"
    assert not list(tmp_path.glob("**/*.nc")) or argv[0] == "show", "wrote a result"


def test_user_errors_from_the_installed_command(tmp_path):
    """Two cases in a fresh process, as a user's shell runs them: the console script's exit status and stderr."""
    script = [sys.executable, "-m", "mfpde.cli"]
    for args, match in ((["run", "missing.toml"], "missing.toml: no such file"),
                        (["demo", "--particles", "-5"], "must be a positive integer")):
        done = subprocess.run([*script, *args], cwd=tmp_path, capture_output=True, text=True, timeout=120, check=False)
        assert done.returncode == 2, done.stderr
        assert len(done.stderr.strip().splitlines()) == 1 and match in done.stderr, done.stderr


# --- help --------------------------------------------------------------------------------------------------------


def test_every_option_has_a_default_and_an_example():
    import argparse

    from mfpde.cli import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    assert set(commands.choices) == {"demo", "run", "sweep", "show"}
    for name, sub in commands.choices.items():
        assert "e.g." in (sub.epilog or "") or "example" in (sub.epilog or "").lower(), name
        for action in sub._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            text = action.help or ""
            assert "default" in text or action.required, (name, action.dest, text)
            assert "e.g." in text, (name, action.dest, text)
            if action.default not in (None, False, []) and action.default is not argparse.SUPPRESS:
                assert str(action.default) in text, (name, action.dest, text)


def test_help_answers_in_under_two_seconds_without_heavy_imports(tmp_path):
    import time

    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-m", "mfpde.cli", "--help"], cwd=tmp_path, capture_output=True, text=True,
                          timeout=60, check=False)
    elapsed = time.perf_counter() - start
    assert done.returncode == 0 and "sweep" in done.stdout and not done.stderr, done.stderr
    assert elapsed < 2.0, f"mfpde --help took {elapsed:.2f} s"
    probe = ("import sys; from mfpde.cli import main\n"
             "for sub in ('demo', 'run', 'sweep', 'show'): assert main([sub, '--help']) == 0\n"
             "heavy = sorted(m for m in ('jax', 'xarray', 'solvers', 'matplotlib', 'netCDF4') if m in sys.modules)\n"
             "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", probe], cwd=tmp_path, capture_output=True, text=True, timeout=120,
                          check=False)
    assert done.returncode == 0, done.stderr


PUBLIC = {
    "activations": "mfpde.activations", "datasets": "mfpde.datasets", "flows": "mfpde.flows", "losses": "mfpde.losses",
    "measures": "mfpde.measures", "AbstractAlgorithm": "mfpde._algorithm", "solve": "mfpde._algorithm",
    "certify": "mfpde._certify", "Dataset": "mfpde._dataset", "EnsembleProblem": "mfpde._ensemble",
    "extrapolate": "mfpde._extrapolate",
    "Population": "mfpde._population", "AbstractProblem": "mfpde._problem", "FlowProblem": "mfpde._problem",
    "StationaryProblem": "mfpde._problem", "remake": "mfpde._problem", "repopulate": "mfpde._repopulate",
    "IntegrationError": "mfpde._solution", "Solution": "mfpde._solution", "load": "mfpde._solution",
}


def test_public_names_are_the_objects_of_their_modules():
    import importlib

    for name, module in PUBLIC.items():
        target = importlib.import_module(module)
        expected = target if module == f"mfpde.{name}" else getattr(target, name)
        assert getattr(mfpde, name) is expected, name
        assert name in dir(mfpde), name
    assert sorted(mfpde.__all__) == sorted(PUBLIC)
    assert isinstance(mfpde.__version__, str)
    with pytest.raises(AttributeError, match="no attribute 'Solver'"):
        mfpde.Solver  # noqa: B018


# --- plots -------------------------------------------------------------------------------------------------------


def _sweep_dataset(temperatures, seeds):
    time = np.linspace(0.0, 1.0, 4)
    loss = np.exp(-time) * (1.0 + np.arange(len(temperatures) * len(seeds)).reshape(len(temperatures), len(seeds), 1))
    return xr.Dataset({"loss": (("temperature", "seed", "time"), loss, {"long_name": "training loss", "units": "1"})},
                      coords={"time": time, "temperature": temperatures, "seed": seeds}), loss


def test_sweep_plot_has_a_legend_and_labelled_axes():
    from mfpde.cli import _sweep_plot

    temperatures, seeds = [0.0, 0.05, 0.1], [0, 1]
    ds, loss = _sweep_dataset(temperatures, seeds)
    ax = _sweep_plot(mfpde.Solution(ds)).axes[0]
    legend = ax.get_legend()
    assert legend is not None
    assert [t.get_text() for t in legend.get_texts()] == [f"temperature={t:g}, seed={s}" for t in temperatures
                                                          for s in seeds]
    points = [(i, j) for i in range(len(temperatures)) for j in range(len(seeds))]
    for line, (i, j) in zip(ax.get_lines(), points, strict=True):  # each labelled line is its point's curve
        np.testing.assert_array_equal(line.get_ydata(), loss[i, j])
    assert ax.get_xlabel() == "time (mean-field units)"
    assert ax.get_ylabel() == "loss: training loss"
    # Many points: the legend names the first and the last, and says how many there are.
    ds, _ = _sweep_dataset(list(np.linspace(0.0, 1.0, 10)), [0, 1, 2])
    texts = [t.get_text() for t in _sweep_plot(mfpde.Solution(ds)).axes[0].get_legend().get_texts()]
    assert texts[0] == "temperature=0, seed=0" and texts[-1] == "temperature=1, seed=2" and len(texts) <= 13
