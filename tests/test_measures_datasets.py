import jax
import numpy as np
import pytest
import scipy.special

import mfpde
from solvers import Particles

GROUPS = {"u": 1, "w": 3, "b": 1}


def test_gaussian_moments_and_density():
    g = mfpde.measures.Gaussian(mean=np.arange(5.0), std=np.array([1.0, 2.0, 0.5, 1.0, 3.0]))
    parts = g.sample(jax.random.key(0), 100_000, GROUPS)
    theta = np.concatenate([np.asarray(parts[k]) for k in GROUPS], axis=1)
    np.testing.assert_allclose(theta.mean(0), np.arange(5.0), atol=0.03)
    np.testing.assert_allclose(theta.std(0), [1.0, 2.0, 0.5, 1.0, 3.0], rtol=0.02)
    from scipy.stats import norm

    x = np.array([[0.1, 1.2, 2.0, 2.5, 4.0]])
    expected = np.sum(norm.logpdf(x, loc=np.arange(5.0), scale=[1.0, 2.0, 0.5, 1.0, 3.0]))
    np.testing.assert_allclose(g.log_density(x, GROUPS), [expected], rtol=1e-12)


def test_product_and_uniform():
    m = mfpde.measures.Product(u=mfpde.measures.Gaussian(std=0.0), w=mfpde.measures.Uniform(-1.0, 2.0), b=mfpde.measures.Gaussian(mean=3.0, std=0.0))
    parts = m.sample(jax.random.key(1), 1000, GROUPS)
    assert np.all(np.asarray(parts["u"]) == 0.0) and np.all(np.asarray(parts["b"]) == 3.0)
    w = np.asarray(parts["w"])
    assert w.shape == (1000, 3) and w.min() >= -1.0 and w.max() <= 2.0 and abs(w.mean() - 0.5) < 0.1
    with pytest.raises(ValueError, match="groups"):
        mfpde.measures.Product(u=mfpde.measures.Gaussian()).sample(jax.random.key(0), 3, GROUPS)


def test_explicit_particles_are_used_exactly():
    rng = np.random.default_rng(0)
    u, w = rng.normal(size=7), rng.normal(size=(7, 2))
    data = mfpde.Dataset(rng.normal(size=(10, 2)), rng.normal(size=10))
    prob = mfpde.FlowProblem(mfpde.flows.TwoLayer(), data, mfpde.measures.Particles(u=u, w=w), (0.0, 1.0))
    ds = mfpde.solve(prob, Particles(save_state=True), saveat=[0.0], key=123).dataset
    np.testing.assert_array_equal(ds.theta.values[0], np.column_stack([u, w]))


def test_teacher_shapes_and_noise():
    data = mfpde.datasets.teacher(0, n=50, d=4, k=2, noise=0.0, n_test=20)
    assert data.X.shape == (50, 4) and data.y.shape == (50, 2) and data.X_test.shape == (20, 4)
    noisy = mfpde.datasets.teacher(0, n=50, d=4, k=2, noise=0.5)
    assert 0.2 < float(np.std(np.asarray(noisy.y - data.y))) < 0.8
    with pytest.raises(ValueError, match="`n`"):
        mfpde.datasets.teacher(0, n=0)


def test_teacher_student_2d_labels():
    data = mfpde.datasets.teacher_student_2d(0, n=1000, noise=0.0, n_test=10)
    X, y = np.asarray(data.X), np.asarray(data.y[:, 0])
    a = np.array(mfpde.datasets.TEACHER_2D_DIRECTIONS)
    np.testing.assert_allclose(y, np.mean(scipy.special.expit(X @ a.T), axis=1), rtol=1e-12)
    assert 80 < X.std() < 120


def test_shipped_tables():
    digits = mfpde.datasets.digits()
    assert digits.d == 64 and digits.k == 10 and digits.n + digits.X_test.shape[0] == 1797
    np.testing.assert_array_equal(np.asarray(digits.y).sum(axis=1), 1.0)
    np.testing.assert_allclose(np.asarray(digits.X).mean(axis=0), 0.0, atol=1e-12)
    pair = mfpde.datasets.digits(classes=(3, 8), test_fraction=0.0)
    assert pair.k == 2 and pair.X_test is None and 300 < pair.n < 400
    diabetes = mfpde.datasets.diabetes()
    assert diabetes.d == 10 and diabetes.n + diabetes.X_test.shape[0] == 442
    assert abs(float(np.asarray(diabetes.y).std()) - 1.0) < 1e-12
    with pytest.raises(ValueError, match="`classes`"):
        mfpde.datasets.digits(classes=(1, 11))


@pytest.mark.parametrize("partitionable", [True, False])
def test_iid_layers_share_first_units_across_widths(partitionable):
    """Widths N and 2N drawn from one key share their first units exactly; the entries are N(mean, std²)."""
    init = mfpde.measures.IIDLayers(std=(1.0, 2.0, 0.5), mean=(0.0, 1.0, 0.0))
    before = jax.config.jax_threefry_partitionable
    jax.config.update("jax_threefry_partitionable", partitionable)
    try:
        small = init.sample_layers(jax.random.key(3), {"w1": (40, 3), "w2": (40, 40), "w3": (40, 2)})
        large = init.sample_layers(jax.random.key(3), {"w1": (80, 3), "w2": (80, 80), "w3": (80, 2)})
    finally:
        jax.config.update("jax_threefry_partitionable", before)
    for name, a in small.items():
        np.testing.assert_array_equal(np.asarray(large[name])[: a.shape[0], : a.shape[1]], np.asarray(a))
    w2 = np.asarray(large["w2"])
    assert abs(w2.mean() - 1.0) < 0.1 and abs(w2.std() - 2.0) < 0.1
    # Rows and columns are not copies of each other.
    assert np.corrcoef(w2[0], w2[1])[0, 1] < 0.3 and np.corrcoef(w2[:, 0], w2[:, 1])[0, 1] < 0.3
