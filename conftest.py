"""Process isolation for torch.

torch and jaxlib each bring their own native runtimes (threads, allocators, LLVM). With both
loaded in one pytest worker, XLA's CPU compiler segfaulted twice in one run of this suite
(in eager `lax.cond` compilations of tests that never touch torch), and `--doctest-modules`
imports `simplex_decode.integrations.transformers` — hence torch — in every worker at
collection. So the default run collects neither that module nor the adapter's tests, and
deselects everything marked ``torch``; the README's test command then runs those alone in a
second process: ``SD_TORCH_TESTS=1 python -m pytest -q -m "torch and not slow"``.
"""

import os

TORCH_MODULES = ["simplex_decode/integrations/transformers.py", "tests/test_transformers_adapter.py"]

collect_ignore = [] if os.environ.get("SD_TORCH_TESTS") else TORCH_MODULES


def pytest_collection_modifyitems(config, items):
    import pytest

    for item in items:  # the doctests of the torch module are torch tests too
        if str(item.fspath).endswith(TORCH_MODULES[0]):
            item.add_marker(pytest.mark.torch)
