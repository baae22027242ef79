"""Test-process hygiene: torch in its own process, compiled programs released per module.

torch and jaxlib each bring their own native runtimes, and ``--doctest-modules`` imports
``simplex_decode.integrations.transformers`` — hence torch — in every worker at collection.
So the default run collects neither that module nor the adapter's tests, and deselects
everything marked ``torch``; the README's test command then runs those alone in a second
process: ``SD_TORCH_TESTS=1 python -m pytest -q -m "torch and not slow"``. (The segfaults in
XLA's compiler that first looked like a torch/jaxlib clash recurred with torch out of the
workers; their cause is the one :func:`_release_compiled_programs` removes.)
"""

import gc
import os

import pytest

TORCH_MODULES = ["simplex_decode/integrations/transformers.py", "tests/test_transformers_adapter.py"]

collect_ignore = [] if os.environ.get("SD_TORCH_TESTS") else TORCH_MODULES


def pytest_collection_modifyitems(config, items):
    for item in items:  # the doctests of the torch module are torch tests too
        if str(item.fspath).endswith(TORCH_MODULES[0]):
            item.add_marker(pytest.mark.torch)


@pytest.fixture(autouse=True, scope="module")
def _release_compiled_programs():
    """Drop JAX's compiled executables after each test module.

    XLA's CPU backend maps every executable it compiles into memory (about three mappings
    each) and keeps it while JAX's caches hold it. One pytest-xdist worker compiles tens of
    thousands of programs over this suite; at the kernel's ``vm.max_map_count`` (65 530 on
    these machines) LLVM's next allocation fails and the worker dies with a segmentation
    fault inside ``backend_compile_and_load`` — seen twice in one run, in tests as small as
    an eager ``>=``, each after ~45 minutes of a worker's life — and pytest-xdist's
    ``loadfile`` scheduler then hung until CI's time limit. Clearing the caches between
    modules returns the mappings (measured: 1 423 → 518 after 300 compilations).
    """
    yield
    import jax

    jax.clear_caches()
    gc.collect()
