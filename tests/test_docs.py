"""The documentation site builds with `mkdocs build --strict`: a broken link, a missing anchor, a page left out of the
navigation or a docstring that mkdocstrings cannot render fails the build. The notebooks are rendered from their
stored outputs (nothing is executed), so the build is fast and needs no network.
"""

import os
import pathlib
import subprocess
import sys

import pytest


ROOT = pathlib.Path(__file__).resolve().parents[1]


@pytest.fixture(scope="module")
def site(tmp_path_factory):
    out = tmp_path_factory.mktemp("site")
    env = {**os.environ, "NO_MKDOCS_2_WARNING": "1"}
    result = subprocess.run(
        [sys.executable, "-m", "mkdocs", "build", "--strict", "--site-dir", str(out)],
        cwd=ROOT, env=env, capture_output=True, text=True, timeout=600,
    )
    log = result.stdout + result.stderr
    assert result.returncode == 0, f"mkdocs build --strict failed:\n{log}"
    warnings = [line for line in log.splitlines() if line.startswith(("WARNING", "ERROR"))]
    assert not warnings, "\n".join(warnings)
    return out


def _page(site, path: str) -> str:
    page = site / path / "index.html" if not path.endswith(".html") else site / path
    assert page.is_file(), f"{path} was not built"
    return page.read_text(encoding="utf-8")


def test_api_reference_lists_the_public_names(site):
    solvers_page = _page(site, "api/solvers")
    for name in ("Particles", "Units", "Grid", "GibbsFixedPoint", "ParticleStationary", "Convex", "MaxRMSNorm"):
        assert f'id="solvers.{name}"' in solvers_page, name
    flows_page = _page(site, "api/flows")
    for name in ("TwoLayer", "Multilayer", "FeatureDNN", "FeatureResNet", "Potential", "OrnsteinUhlenbeck", "AbstractFlow"):
        assert f'id="mfpde.flows.{name}"' in flows_page, name
    mfpde_page = _page(site, "api/mfpde")
    for name in ("FlowProblem", "StationaryProblem", "EnsembleProblem", "solve", "remake", "Solution", "load", "certify"):
        assert f'id="mfpde.{name}"' in mfpde_page, name
    assert 'id="mfpde.measures.IIDLayers"' in _page(site, "api/measures")
    assert 'id="mfpde.datasets.teacher"' in _page(site, "api/datasets")
    # Equinox modules get their dataclass signature, and docstring mathematics keeps its underscores.
    assert "train_output" in flows_page and "∂_t w_ℓ = −N_{ℓ−1}" in flows_page


def test_guide_pages_exist(site):
    pages = ["getting-started", "write-your-own-flow", "cli", "netcdf", "flows/two-layer", "flows/multilayer",
             "flows/feature-flows", "flows/potential", "algorithms/particles", "algorithms/units", "algorithms/grid",
             "algorithms/gibbs-fixed-point", "algorithms/particle-stationary", "algorithms/convex",
             "algorithms/studies"]
    html = {page: _page(site, page) for page in pages}
    for page in ("flows/two-layer", "flows/feature-flows", "algorithms/grid", "algorithms/convex"):
        assert 'class="arithmatex"' in html[page], f"{page}: no typeset mathematics"
    assert "mfpde sweep" in html["cli"] and "Attraction" in html["write-your-own-flow"]


def test_notebooks_are_rendered_with_their_figures(site):
    notebooks = sorted(p.stem for p in (ROOT / "notebooks").glob("*.ipynb"))
    assert notebooks
    for name in notebooks:
        html = _page(site, f"notebooks/{name}")
        assert "data:image/png;base64," in html, f"{name}: no stored figure rendered"
        assert "Load mathjax" not in html, f"{name}: nbconvert's MathJax 2 loader was not removed"
