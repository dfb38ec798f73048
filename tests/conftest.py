"""Suite-wide options: ``MLOPS_TEST_SHUFFLE=<seed>`` runs the tests in a random order.

The modules are shuffled, and so are the tests inside each module (a module's tests stay
together, so its module fixtures are set up once); the seed is in the run's header, so an
order dependence between tests or modules shows up and can be replayed:
``MLOPS_TEST_SHUFFLE=1234 make test``.
"""

from __future__ import annotations

import os
import random
import time

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


_MODULE_SECONDS: dict[str, float] = {}


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_protocol(item: pytest.Item, nextitem: pytest.Item | None):
    """Time each module (setup, calls and teardown of its tests) for the run's summary."""
    start = time.monotonic()
    yield
    module = item.nodeid.split("::")[0]
    _MODULE_SECONDS[module] = _MODULE_SECONDS.get(module, 0.0) + time.monotonic() - start


def pytest_terminal_summary(terminalreporter) -> None:
    """Where the suite's time goes: seconds per module, slowest first."""
    if not _MODULE_SECONDS:
        return
    terminalreporter.section("seconds per module")
    for module, seconds in sorted(_MODULE_SECONDS.items(), key=lambda kv: -kv[1]):
        terminalreporter.write_line(f"{seconds:8.1f}s  {module}")
