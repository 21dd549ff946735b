import gc

import jax
import pytest

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
