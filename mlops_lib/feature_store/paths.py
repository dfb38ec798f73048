"""Where a project's feature store lives on the machine running the stack.

``<stack_dir>/features/<project>/``:

* ``commits/<commit>-<registry hash>/``: the Feast repo generated for one lakeFS commit
  (``feature_store.yaml``, ``definitions.py``, ``data/<view>.parquet`` the view tables read
  from that commit, ``registry.db`` its registry);
* ``current``: the commit repo the online store was last materialized from (a symlink,
  swapped atomically) and ``current.json`` what it holds;
* ``online.db``: the online store (SQLite), shared by the commit repos;
* ``server.json``: the feature server's address (``feast serve``), ``server.log`` its log.

Nothing here does I/O.
"""

from __future__ import annotations

from pathlib import Path

from mlops_lib.settings import Settings

CURRENT = "current"


def store_dir(settings: Settings, project: str) -> Path:
    return settings.stack_dir / "features" / project


def commit_repo(settings: Settings, project: str, commit: str, registry_hash: str) -> Path:
    """The Feast repo of one lakeFS commit under one ``features:`` section (a repo never
    changes once made: another section of the spec makes another repo)."""
    return store_dir(settings, project) / "commits" / f"{commit}-{registry_hash}"


def current_repo(settings: Settings, project: str) -> Path:
    return store_dir(settings, project) / CURRENT


def current_file(settings: Settings, project: str) -> Path:
    return store_dir(settings, project) / f"{CURRENT}.json"


def online_store(settings: Settings, project: str) -> Path:
    return store_dir(settings, project) / "online.db"


def server_file(settings: Settings, project: str) -> Path:
    """The running feature server's address, written when it starts."""
    return store_dir(settings, project) / "server.json"


def server_log(settings: Settings, project: str) -> Path:
    return store_dir(settings, project) / "server.log"
