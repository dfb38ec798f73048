"""Suite-wide options: ``MLOPS_TEST_SHUFFLE=<seed>`` runs the tests in a random order.

The modules are shuffled, and so are the tests inside each module (a module's tests stay
together, so its module fixtures are set up once); the seed is in the run's header, so an
order dependence between tests or modules shows up and can be replayed:
``MLOPS_TEST_SHUFFLE=1234 make test``.
"""

from __future__ import annotations

import os
import random

import pytest

SHUFFLE = "MLOPS_TEST_SHUFFLE"


def pytest_report_header(config: pytest.Config) -> str | None:
    seed = os.environ.get(SHUFFLE)
    return f"tests shuffled with seed {seed} ({SHUFFLE})" if seed else None


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    seed = os.environ.get(SHUFFLE)
    if not seed:
        return
    modules: dict[str, list[pytest.Item]] = {}
    for item in items:
        modules.setdefault(item.nodeid.split("::")[0], []).append(item)
    rng = random.Random(seed)
    order = list(modules)
    rng.shuffle(order)
    for module in order:
        rng.shuffle(modules[module])
    items[:] = [item for module in order for item in modules[module]]
