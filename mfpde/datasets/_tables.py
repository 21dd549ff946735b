"""The real data sets shipped in `data/` (sources and licences in `data/README.md`)."""

import gzip
from pathlib import Path

import numpy as np

from .._dataset import Dataset


def data_dir() -> Path:
    """The folder holding the shipped tables: `data/` of a source checkout, or its copy inside an installed wheel."""
    here = Path(__file__).resolve().parent.parent
    for candidate in (here.parent / "data", here / "_data"):
        if candidate.is_dir():
            return candidate
    raise FileNotFoundError("The shipped data folder was not found beside the mfpde package.")


def _read(name: str) -> tuple[list[str], np.ndarray]:
    with gzip.open(data_dir() / name, "rt") as f:
        header = f.readline().strip().split(",")
        return header, np.loadtxt(f, delimiter=",", ndmin=2)


def _standardize(A, rows):
    mean, std = A[rows].mean(axis=0), A[rows].std(axis=0)
    return (A - mean) / np.where(std > 0, std, 1.0)


def _split(X, y, test_fraction: float, seed: int, standardize: bool, name: str, scale_targets: bool = False) -> Dataset:
    if not 0.0 <= test_fraction < 1.0:
        raise ValueError(f"`test_fraction` must lie in [0, 1), got {test_fraction}.")
    order = np.random.default_rng(seed).permutation(len(X))
    n_test = int(round(test_fraction * len(X)))
    test, train = order[:n_test], order[n_test:]
    if standardize:
        X = _standardize(X, train)
        if scale_targets:
            y = _standardize(y, train)
    split = dict(X_test=X[test], y_test=y[test]) if n_test else {}
    return Dataset(X[train], y[train], **split, name=name)


def digits(*, classes=None, test_fraction: float = 0.25, seed: int = 0, standardize: bool = True) -> Dataset:
    """UCI optical handwritten digits (8×8 images, 1797 samples, 64 pixel features in 0..16).

    Targets are one-hot vectors over `classes` (default all ten digits), k = len(classes), for the squared loss.

    **Arguments:**

    - `classes`: the digits to keep, e.g. `(3, 8)`.
    - `test_fraction`: share of the samples held out as test points (a seeded random split).
    - `seed`: seed of the split.
    - `standardize`: scale each pixel to mean 0, standard deviation 1 on the training points (constant pixels stay 0).
    """
    _, table = _read("digits.csv.gz")
    X, labels = table[:, :-1], table[:, -1].astype(int)
    classes = tuple(range(10)) if classes is None else tuple(int(c) for c in classes)
    if not classes or any(c not in range(10) for c in classes) or len(set(classes)) != len(classes):
        raise ValueError(f"`classes` must be distinct digits 0..9, got {classes}.")
    keep = np.isin(labels, classes)
    X, labels = X[keep], labels[keep]
    y = (labels[:, None] == np.asarray(classes)[None, :]).astype(float)
    return _split(X, y, test_fraction, seed, standardize, f"digits{list(classes) if len(classes) < 10 else ''}")


def diabetes(*, test_fraction: float = 0.25, seed: int = 0, standardize: bool = True) -> Dataset:
    """Diabetes progression (Efron et al. 2004): 442 patients, 10 baseline variables, a disease-progression target.

    With `standardize`, features and target are scaled to mean 0 and standard deviation 1 on the training points.
    """
    _, table = _read("diabetes.csv.gz")
    return _split(table[:, :-1], table[:, -1:], test_fraction, seed, standardize, "diabetes", scale_targets=True)
