"""Suite-wide options: ``MLOPS_TEST_SHUFFLE=<seed>`` runs the test modules in a random order.

Each module keeps its own tests in order (they share module fixtures); the modules are
shuffled with the seed, which the run's header reports, so an order dependence between
modules shows up and can be replayed: ``MLOPS_TEST_SHUFFLE=1234 make test``.
"""

from __future__ import annotations

import os
import random

import pytest

SHUFFLE = "MLOPS_TEST_SHUFFLE"


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = os.environ.get(SHUFFLE)
    return f"test modules shuffled with seed {seed} ({SHUFFLE})" if seed else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = os.environ.get(SHUFFLE)
    if not seed:
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    order = list(modules)
    random.Random(seed).shuffle(order)
    items[:] = [item for module in order for item in modules[module]]
