"""The platform's door to Feast: one command in, one JSON document out.

    feature_store/.venv/bin/python -m mlops_feature_store <command> '<json-args>'
    echo '<json-args>' | feature_store/.venv/bin/python -m mlops_feature_store <command>

Feast lives in its own environment (it needs numpy >= 2, the platform keeps numpy < 2),
so the platform runs this module as a subprocess and reads its stdout.

Every command takes ``repo``, a Feast repo folder (``feature_store.yaml`` and the Python
files defining entities, sources and feature views):

- ``apply``: register the repo's objects, as ``feast apply`` does.
  Returns ``log`` (Feast's text), ``entities`` and ``feature_views`` now registered.
- ``plan``: what ``apply`` would change, as ``feast plan`` prints it: ``plan`` (text).
- ``list``: ``entities`` and ``feature_views`` of the registry.
- ``materialize``: ``end_date`` (ISO 8601; naive means UTC), optional ``start_date``
  (without it: incremental, from the last materialization or ``now - ttl``), optional
  ``feature_views`` (names). Returns the views and the interval each one got.
- ``historical``: ``entity_df`` (a parquet file with the entity keys and
  ``event_timestamp``), ``features`` (``"view:feature"``), ``output`` (a parquet file to
  write), optional ``full_feature_names``. Point-in-time join, one output row per entity
  row in its order (nulls where no value lies within the TTL); returns ``rows``, ``columns``.
- ``online``: ``features`` and ``entity_rows`` (list of ``{join_key: value}``), optional
  ``full_feature_names``. Returns ``features``: Feast's ``OnlineResponse.to_dict()``.

Exit codes: 0 success; 2 a user error (unknown entity or feature view, missing file, bad
arguments), printed as ``{"error": "..."}``; 1 anything else (``{"error", "type"}``, the
traceback on stderr). Whatever Feast prints goes to stderr, so stdout holds only the JSON.
"""

from __future__ import annotations

import json
import math
import os
import sys
import traceback
from datetime import date, datetime, timedelta
from typing import Any, TextIO

from mlops_feature_store.errors import UserError

COMMANDS = ("apply", "plan", "list", "materialize", "historical", "online")
EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR = 0, 1, 2


def main(argv: list[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else argv
    # Feast and its libraries print to stdout (apply logs, materialization progress):
    # the process's stdout becomes stderr, and only the answer goes to the real stdout.
    sys.stdout.flush()
    saved = os.dup(1)
    os.dup2(2, 1)
    try:
        code, document = _run(argv)
        sys.stdout.flush()
    finally:
        os.dup2(saved, 1)
        os.close(saved)
    _emit(document, sys.stdout)
    return code


def _run(argv: list[str]) -> tuple[int, dict[str, Any]]:
    try:
        command, args = _parse(argv)
        _without_runtime_type_checks()
        # Imported here: Feast is heavy and prints while importing; stdout is stderr now.
        from mlops_feature_store import commands

        return EXIT_OK, commands.HANDLERS[command](args)
    except UserError as e:
        return EXIT_USER_ERROR, {"error": str(e)}
    except Exception as e:
        commands = sys.modules.get("mlops_feature_store.commands")  # None if Feast failed
        if commands is not None and commands.user_error(e):
            return EXIT_USER_ERROR, {"error": str(e) or type(e).__name__}
        traceback.print_exc()
        return EXIT_FAILED, {"error": str(e) or type(e).__name__, "type": type(e).__name__}


def _without_runtime_type_checks() -> None:
    """Import Feast without typeguard's instrumentation, as ``python -O`` would.

    Feast decorates its classes with typeguard's ``@typechecked``, which re-parses and
    recompiles each method at import: about 2.5 s of every run here, more than the command
    itself takes on a small repo. Under ``python -O`` the decorator returns its target
    unchanged (typeguard's design); this does the same and keeps ``assert`` statements.
    Feast never relies on the checks (nothing of it catches typeguard's errors).
    """
    try:
        import typeguard
    except ImportError:
        return

    def typechecked(target: Any = None, **_: Any) -> Any:
        return target if target is not None else (lambda t: t)

    typeguard.typechecked = typechecked


def _parse(argv: list[str]) -> tuple[str, dict[str, Any]]:
    if not argv or argv[0] in ("-h", "--help"):
        raise UserError(f"usage: python -m mlops_feature_store {{{','.join(COMMANDS)}}} [JSON]")
    command, rest = argv[0], argv[1:]
    if command not in COMMANDS:
        raise UserError(f"unknown command {command!r}; one of {', '.join(COMMANDS)}")
    if len(rest) > 1:
        raise UserError("give the arguments as one JSON document (or on stdin)")
    text = rest[0] if rest and rest[0] != "-" else sys.stdin.read()
    try:
        args = json.loads(text)
    except json.JSONDecodeError as e:
        raise UserError(f"arguments are not JSON: {e}") from None
    if not isinstance(args, dict):
        raise UserError("arguments must be a JSON object")
    return command, args


def _emit(document: dict[str, Any], stream: TextIO) -> None:
    stream.write(json.dumps(_plain(document), allow_nan=False) + "\n")
    stream.flush()


def _plain(value: Any) -> Any:
    """JSON-ready: numpy scalars as Python, NaN as null, times as ISO 8601 text."""
    if isinstance(value, dict):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, list | tuple | set):
        return [_plain(v) for v in value]
    if hasattr(value, "item") and callable(value.item) and getattr(value, "ndim", 1) == 0:
        value = value.item()  # numpy scalar
    elif hasattr(value, "tolist"):
        return _plain(value.tolist())  # numpy array
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, datetime | date):
        return value.isoformat() if value == value else None  # pandas' NaT != NaT
    if isinstance(value, timedelta):
        return value.total_seconds()
    if isinstance(value, bytes):
        return value.decode("utf-8", errors="replace")
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return str(value)
