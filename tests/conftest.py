import gc
import os

# The tests run in two worker processes; on a GPU each would otherwise reserve most of its memory.
os.environ.setdefault("XLA_PYTHON_CLIENT_PREALLOCATE", "false")

import jax  # noqa: E402
import pytest  # noqa: E402

jax.config.update("jax_enable_x64", True)
jax.config.update("jax_numpy_dtype_promotion", "strict")


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
