"""Test-process hygiene: torch in its own process, compiled programs released before the
kernel's limit on memory mappings.

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


#: A test process whose memory mappings pass this many drops JAX's compiled programs (the
#: kernel's ``vm.max_map_count`` is 65 530 here); looked at every :data:`CHECK_EVERY`
#: compilations.
MAX_MAPPINGS = 30_000
CHECK_EVERY = 20
_compilations = [0]


def _count_compilation(event, duration, **_):
    if event == "/jax/core/compile/backend_compile_duration":
        _compilations[0] += 1


def _mappings() -> int:
    """This process's memory mappings (0 where ``/proc`` does not tell)."""
    try:
        with open("/proc/self/maps", "rb") as f:
            return f.read().count(b"\n")
    except OSError:
        return 0


def pytest_configure(config):
    import jax

    jax.monitoring.register_event_duration_secs_listener(_count_compilation)


@pytest.fixture(autouse=True)
def _release_compiled_programs():
    """Drop JAX's compiled executables when this process holds more than
    :data:`MAX_MAPPINGS` memory mappings (checked after a test, every :data:`CHECK_EVERY`
    compilations).

    XLA's CPU backend maps every executable it compiles into memory and keeps it while
    JAX's caches hold it. One pytest-xdist worker compiles tens of thousands of programs over
    this suite — a large decoder program takes a hundred mappings or more (the shared decoder
    suite: 400–1 000 per test, 3–5 compilations) — and at the kernel's ``vm.max_map_count``
    LLVM's next allocation fails and the worker dies with a segmentation fault inside
    ``backend_compile_and_load`` (seen in three full runs, in tests as small as an eager
    ``>=``, each after ~45 minutes of a worker's life); pytest-xdist's ``loadfile`` scheduler
    then hung until CI's time limit. Clearing the caches returns the mappings (measured:
    1 423 → 518 after 300 small compilations). A test that counts traces or compilations
    counts its own (see ``traces`` in ``tests/test_decoder_suite.py``), never a cache an
    earlier test filled. ``SD_REPORT_RELEASES=1`` (with ``-s``) prints each release.
    """
    yield
    if _compilations[0] >= CHECK_EVERY:
        _compilations[0] = 0
        n = _mappings()
        if n > MAX_MAPPINGS:
            import jax

            jax.clear_caches()
            gc.collect()
            if os.environ.get("SD_REPORT_RELEASES"):
                print(f"\n[conftest] {n} mappings: caches cleared, now {_mappings()}", flush=True)
