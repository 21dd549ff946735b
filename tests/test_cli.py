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
