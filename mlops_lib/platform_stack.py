"""The local platform: the stack's services and, around them, the served deployments.

:mod:`mlops_lib.stack` supervises processes and knows nothing of deployments; this room
adds them through the stack's hooks: deployments that were serving come back after
``up``, stop before ``down``, and each project's endpoint is a row of ``status``. The CLI,
the demo and the tests start and stop the platform here.
"""

from __future__ import annotations

from mlops_lib.feature_store import server as feature_server
from mlops_lib.serving import deploy
from mlops_lib.settings import Settings
from mlops_lib.stack import manager
from mlops_lib.stack.manager import Log, ServiceStatus, StackHooks


def _serving_status(settings: Settings) -> list[ServiceStatus]:
    """Each project's endpoint and served model version (nothing when none is deployed)."""
    try:
        return deploy.status(settings)
    except Exception as exc:  # the metadata store may be down with the stack
        return [
            {
                "service": "serving",
                "state": f"unknown ({type(exc).__name__})",
                "url": None,
                "pid": None,
                "log": "",
            }
        ]


def _after_up(settings: Settings, log: Log) -> None:
    feature_server.restore(settings, log)
    deploy.restore(settings, log_line=log)


def _before_down(settings: Settings, log: Log) -> None:
    deploy.stop_all(settings, log_line=log)
    feature_server.stop_all(settings, log)


SERVING = StackHooks(
    # Feature servers and the deployments that were serving before a stop or crash come
    # back (the deployments behind the gateway).
    after_up=_after_up,
    before_down=_before_down,
    status=lambda settings: feature_server.status(settings) + _serving_status(settings),
)


def up(settings: Settings, *, log: Log = print) -> list[ServiceStatus]:
    """Start the stack, then restore the deployments that were serving."""
    return manager.up(settings, log=log, hooks=SERVING)


def down(settings: Settings, *, log: Log = print) -> dict[str, str]:
    """Stop the deployments, then the stack, then any deployment a deploy task still
    running at the stop had started meanwhile."""
    stopped = manager.down(settings, log=log, hooks=SERVING)
    deploy.stop_all(settings, log_line=log)
    feature_server.stop_all(settings, log)
    return stopped


def status(settings: Settings) -> list[ServiceStatus]:
    """Every service's row, then every project's endpoint."""
    return manager.status(settings, SERVING)
