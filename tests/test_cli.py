import re

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
    xr.testing.assert_identical(ds, xr.load_dataset(out))


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
        (("l2 = 1e-3", 'l2 = "big"'), r"flow: .*`l2`"),
        (("temperature = 0.01", "temperature = -1.0"), r"flow: .*`temperature`"),
        (('kind = "TwoLayer"', 'kind = "ThreeLayer"'), "flow.kind: unknown"),
        (("[algorithm]", "[algorithms]"), "algorithms: unknown section"),
        (("n = 16", "n = 0"), r"algorithm: .*`n`"),
        (("key = 3", "keys = 3"), "solve.keys: unknown key"),
        (("key = 3", 'key = 3\nbatch_stepping = "together"'), "solve.batch_stepping: must be"),
        (("tspan = [0.0, 2.0]", "tspan = [2.0, 0.0]"), "problem: .*`tspan`"),
        (("std = 0.5", "std = -0.5"), r"init.u: .*`std`"),
    ],
)
def test_bad_config_names_the_key(tmp_path, capsys, monkeypatch, edit, match):
    import solvers.particles

    monkeypatch.setattr(solvers.particles, "_run", None)  # nothing may be compiled or run
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
