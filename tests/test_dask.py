import numpy as np
import pytest
import xarray as xr

import mfpde
from solvers import Particles

distributed = pytest.importorskip("distributed")


def _study():
    data = mfpde.datasets.teacher(0, n=24, d=2)
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(l2=1e-3, temperature=0.01), data, mfpde.measures.Gaussian(), (0.0, 2.0))
    return mfpde.EnsembleProblem(prob, sweep={"temperature": [0.01, 0.02, 0.03], "seed": [0, 1]})


def test_dask_study_equals_local_run(tmp_path):
    algorithm = Particles(n=16, method="scan", dt=0.01)
    local = mfpde.solve(_study(), algorithm, saveat=[1.0, 2.0], batch_size=2).dataset
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True, dashboard_address=None) as cluster:
        with distributed.Client(cluster) as client:
            remote = mfpde.solve(_study(), algorithm, saveat=[1.0, 2.0], batch_size=2, directory=tmp_path, client=client)
    assert len(list(tmp_path.glob("points-*.nc"))) == 3
    assert remote.dataset.theta_mean.dtype == np.float64
    xr.testing.assert_equal(remote.dataset.drop_attrs(), local.drop_attrs())


def test_client_needs_directory():
    with pytest.raises(ValueError, match="`directory`"):
        mfpde.solve(_study(), Particles(n=4), saveat=[1.0], client=object())
