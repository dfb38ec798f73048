"""Failures of the projects' DAGs: the stage a DAG id names, a failure's one-line cause, and
recording a task's final failure in the lineage store.

The cause is made from the error alone (its class and the first line of its message, at most
``CAUSE_LIMIT`` characters), never from the environment or a connection; anything in it that
looks like a secret (a URL's password, ``password=...``, a bearer token, an access key id, the
value of one of the platform's secret settings) is replaced by ``***``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from datetime import UTC, datetime

from mlops_lib.lineage.rows import FailureRow
from mlops_lib.lineage.store import lineage_store
from mlops_lib.settings import Settings, get_settings, secret_names

CAUSE_LIMIT = 300
STAGE_SEPARATOR = "__"
MASK = "***"

_SECRET_PATTERNS = (
    # scheme://user:password@host
    (re.compile(r"(\b[a-z][\w+.-]*://[^\s:/@]*:)[^\s/@]+@", re.IGNORECASE), rf"\g<1>{MASK}@"),
    # password=..., api_key: ..., "token": "..."
    (
        re.compile(
            r"""((?:password|passwd|secret|token|api[_-]?key|access[_-]?key)"""
            r"""[\w-]*["']?\s*[=:]\s*["']?)[^\s"',;&}]+""",
            re.IGNORECASE,
        ),
        rf"\g<1>{MASK}",
    ),
    (re.compile(r"\b(bearer|basic)\s+[\w.~+/=-]+", re.IGNORECASE), rf"\g<1> {MASK}"),
    (re.compile(r"\b(?:AKIA|ASIA)[0-9A-Z]{12,}\b"), MASK),
    # presigned URLs: X-Amz-Signature=..., X-Amz-Credential=..., sig=...
    (re.compile(r"((?:signature|credential|sig)=)[^\s&\"']+", re.IGNORECASE), rf"\g<1>{MASK}"),
)


def stage_of(project: str, dag_id: str) -> str | None:
    """The stage a DAG of the project runs (``<project>__<stage>``); None for another DAG."""
    prefix = f"{project}{STAGE_SEPARATOR}"
    stage = dag_id.removeprefix(prefix) if dag_id.startswith(prefix) else ""
    return stage or None


def redact(text: str, secrets: Iterable[str] = ()) -> str:
    """The text with secret-looking values and the given secret values replaced by ``***``."""
    for value in sorted((s for s in secrets if len(s) >= 4), key=len, reverse=True):
        text = text.replace(value, MASK)
    for pattern, replacement in _SECRET_PATTERNS:
        text = pattern.sub(replacement, text)
    return text


def _named_error(error: BaseException) -> BaseException:
    """The error that names the failure: a wrapper that only repeats its cause's message
    (``raise TaskFailed(str(exc)) from exc``) gives way to that cause."""
    while error.__cause__ is not None and str(error) == str(error.__cause__):
        error = error.__cause__
    return error


def one_line_cause(error: BaseException | str | None, secrets: Iterable[str] = ()) -> str:
    """``<ErrorClass>: <first line of its message>``, redacted, at most ``CAUSE_LIMIT`` chars."""
    if error is None:
        return "unknown error"
    if isinstance(error, BaseException):
        error = _named_error(error)
        lines = str(error).strip().splitlines()
        name = type(error).__name__
        text = f"{name}: {lines[0].strip()}" if lines else name
    else:
        text = (str(error).strip().splitlines() or ["unknown error"])[0].strip()
    text = redact(text, secrets)
    return text if len(text) <= CAUSE_LIMIT else text[: CAUSE_LIMIT - 1] + "…"


def _secret_values(settings: Settings) -> list[str]:
    """The values of the platform's configured secret settings (to keep out of a cause)."""
    values = []
    for name in secret_names():
        value = getattr(settings, name, None)
        if value is not None:
            values.append(value.get_secret_value())
    return values


def record_stage_failure(
    project: str,
    *,
    dag_id: str,
    dag_run_id: str,
    task_id: str,
    error: BaseException | str | None,
    try_number: int | None = None,
    failed_at: datetime | None = None,
    settings: Settings | None = None,
) -> FailureRow | None:
    """Record the final failure of a task of one of the project's DAGs with its one-line
    cause; None (nothing recorded) when the DAG is not one of the project's."""
    stage = stage_of(project, dag_id)
    if stage is None:
        return None
    settings = settings or get_settings()
    when = failed_at.astimezone(UTC) if failed_at else datetime.now(UTC)
    return lineage_store(settings).record_failure(
        project=project,
        dag_id=dag_id,
        stage=stage,
        dag_run_id=dag_run_id,
        task_id=task_id,
        cause=one_line_cause(error, _secret_values(settings)),
        try_number=try_number,
        failed_at=when,
    )
