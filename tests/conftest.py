import gc
import os

# The tests run in two worker processes; on a GPU each would otherwise reserve most of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


@pytest.hookimpl(optionalhook=True)
def pytest_xdist_make_scheduler(config, log):
    """With `-n`, hand out whole test files, in collection order, instead of xdist's default runs of tests.

    Most of a test's time is compiling its programs, and tests of one file are written to share them (and their
    module-scoped fixtures): split over two workers, a file compiles them twice. The notebooks, which share nothing,
    go out one by one. An explicit `--dist` other than "load" is left as it is."""
    if config.getvalue("dist") != "load":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ByFile(LoadFileScheduling):
        def _split_scope(self, nodeid):
            return nodeid if nodeid.split("::")[0].endswith("test_notebooks.py") else super()._split_scope(nodeid)

    config.option.loadscopereorder = False  # collection order: the last files are short, the tail stays short
    return ByFile(config, log)


@pytest.fixture(autouse=True)
def _agg_backend():
    import matplotlib

    matplotlib.use("Agg")
    yield
    import matplotlib.pyplot as plt

    plt.close("all")


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Every compiled XLA:CPU program keeps memory mappings. Run in one process, the whole suite would otherwise
    reach the kernel's limit on mappings (vm.max_map_count, 65530 by default) and crash inside the compiler."""
    yield
    jax.clear_caches()
    gc.collect()


@pytest.fixture
def no_integration(monkeypatch):
    """Fail a test that reaches an integration: for checks that must refuse their input before anything compiles."""
    import solvers._batches
    import solvers._driver

    def fail(*args, **kwargs):
        raise AssertionError("the integration was reached")

    monkeypatch.setattr(solvers._driver, "run_point", fail)
    monkeypatch.setattr(solvers._batches, "run_batch", fail)
    monkeypatch.setattr(solvers._batches, "run_shared", fail)
