"""Data versioning on lakeFS: the SDK calls (repositories, branches, objects, commits, merges).

Where things live (repository names, branches, paths) is :mod:`mlops_lib.layout`'s rule.
"""

from __future__ import annotations

import io
from functools import lru_cache
from typing import TYPE_CHECKING, Any

from mlops_lib.layout import MAIN, repo_name
from mlops_lib.settings import Settings, get_settings

if TYPE_CHECKING:
    import lakefs
    import pandas as pd


class VersioningError(RuntimeError):
    """A lakeFS operation failed; the message names the repository, ref and path."""


def client(settings: Settings | None = None) -> lakefs.Client:
    """lakeFS SDK client for the configured server (one per server and credentials)."""
    settings = settings or get_settings()
    return _client(
        settings.lakefs_url,
        settings.secret("lakefs_access_key_id"),
        settings.secret("lakefs_secret_access_key"),
        settings.lakefs_request_timeout,
    )


@lru_cache(maxsize=8)
def _client(host: str, key_id: str, secret: str, timeout: float) -> lakefs.Client:
    import lakefs  # heavy SDK: kept out of DAG parsing

    lakefs_client = lakefs.Client(host=host, username=key_id, password=secret)
    # The SDK waits forever on a server that accepts but never answers (it passes no timeout
    # to urllib3): bound every call, so a hanging lakeFS fails the call (and the caller
    # retries) instead of blocking it.
    rest = lakefs_client.sdk_client._api.rest_client
    unbounded = rest.request
    bounded = (5.0, timeout)  # connect, read

    def request(*args: Any, _request_timeout: Any = None, **kwargs: Any) -> Any:
        return unbounded(*args, _request_timeout=_request_timeout or bounded, **kwargs)

    rest.request = request
    return lakefs_client


def repository(project: str, settings: Settings | None = None) -> lakefs.Repository:
    """The project's repository, created on first use with a local storage namespace.

    The create call is made once per process and repository, not on every operation.
    """
    return _repository(client(settings), repo_name(project))


@lru_cache(maxsize=64)
def _repository(lakefs_client: lakefs.Client, name: str) -> lakefs.Repository:
    import lakefs  # heavy SDK: kept out of DAG parsing

    repo = lakefs.Repository(name, client=lakefs_client)
    try:
        repo.properties  # noqa: B018  (exists? a user without create rights only reads)
        return repo
    except lakefs.exceptions.NotFoundException:
        pass
    except Exception as exc:  # lakeFS SDK raises several exception types
        raise VersioningError(f"cannot open lakeFS repository {name!r}: {exc}") from exc
    try:
        return repo.create(storage_namespace=f"local://{name}", default_branch=MAIN, exist_ok=True)
    except Exception as exc:  # lakeFS SDK raises several exception types
        raise VersioningError(f"cannot open lakeFS repository {name!r}: {exc}") from exc


def head(project: str, branch: str = MAIN, settings: Settings | None = None) -> str:
    """Commit id at the head of a branch."""
    return repository(project, settings).branch(branch).get_commit().id


def fresh_branch(
    project: str, branch: str, source: str = MAIN, settings: Settings | None = None
) -> str:
    """Create ``branch`` from ``source``; an existing one (from a failed try) is recreated."""
    br = repository(project, settings).branch(branch)
    if branch_exists(project, branch, settings):
        br.delete()
    br.create(source_reference=source)
    return br.get_commit().id


def ensure_branch(
    project: str, branch: str, source: str = MAIN, settings: Settings | None = None
) -> None:
    """Create a branch from ``source`` unless it exists."""
    repository(project, settings).branch(branch).create(source_reference=source, exist_ok=True)


def upload(
    project: str,
    branch: str,
    path: str,
    data: bytes,
    content_type: str | None = None,
    settings: Settings | None = None,
) -> None:
    """Write one object on a branch (uncommitted until commit)."""
    obj = repository(project, settings).branch(branch).object(path)
    obj.upload(data=data, mode="wb", content_type=content_type)


def read(project: str, ref: str, path: str, settings: Settings | None = None) -> bytes:
    """Bytes of one object at a ref."""
    with repository(project, settings).ref(ref).object(path).reader(mode="rb") as fh:
        return fh.read()


def read_parquet(
    project: str,
    ref: str,
    paths: list[str],
    settings: Settings | None = None,
    columns: list[str] | None = None,
) -> pd.DataFrame:
    """Parquet objects at a ref as one frame, in path order (empty frame for no paths)."""
    import pandas as pd  # heavy: kept out of DAG parsing

    frames = [
        pd.read_parquet(io.BytesIO(read(project, ref, p, settings)), columns=columns)
        for p in sorted(paths)
    ]
    if not frames:
        return pd.DataFrame(columns=columns)
    return pd.concat(frames, ignore_index=True)


def exists(project: str, ref: str, path: str, settings: Settings | None = None) -> bool:
    return repository(project, settings).ref(ref).object(path).exists()


def list_paths(project: str, ref: str, prefix: str, settings: Settings | None = None) -> list[str]:
    """Object paths under a prefix at a ref."""
    return [o.path for o in repository(project, settings).ref(ref).objects(prefix=prefix)]


def delete_prefix(project: str, branch: str, prefix: str, settings: Settings | None = None) -> int:
    """Delete every object under a prefix on a branch; returns how many."""
    paths = list_paths(project, branch, prefix, settings)
    if paths:
        repository(project, settings).branch(branch).delete_objects(paths)
    return len(paths)


def reset_uncommitted(project: str, branch: str, settings: Settings | None = None) -> None:
    """Drop uncommitted changes of a branch (left by a failed try)."""
    repository(project, settings).branch(branch).reset_changes(path_type="reset")


def commit(
    project: str,
    branch: str,
    message: str,
    metadata: dict[str, object],
    settings: Settings | None = None,
) -> str:
    """Commit a branch; metadata values are stringified (lakeFS requires strings)."""
    meta = {k: str(v) for k, v in metadata.items()}
    ref = repository(project, settings).branch(branch).commit(message=message, metadata=meta)
    return ref.get_commit().id


def merge(project: str, branch: str, into: str = MAIN, settings: Settings | None = None) -> str:
    """Merge a branch into another; returns the destination's new head commit id."""
    repo = repository(project, settings)
    repo.branch(branch).merge_into(repo.branch(into))
    return repo.branch(into).get_commit().id


def merged_into(
    project: str,
    commit_id: str,
    into: str = MAIN,
    settings: Settings | None = None,
    depth: int = 100,
) -> str | None:
    """The merge commit on ``into`` that took ``commit_id`` in (searched among its last
    ``depth`` commits), or None: how a retried publish finds the merge its first try made."""
    for commit in repository(project, settings).branch(into).log(max_amount=depth):
        if commit_id in (commit.parents or []):
            return commit.id
    return None


def delete_branch(project: str, branch: str, settings: Settings | None = None) -> None:
    repository(project, settings).branch(branch).delete()


def branch_exists(project: str, branch: str, settings: Settings | None = None) -> bool:
    try:
        repository(project, settings).branch(branch).get_commit()
    except Exception:
        return False
    return True


def on_branch(
    project: str, commit_id: str, branch: str = MAIN, settings: Settings | None = None
) -> bool:
    """True when a commit is in a branch's history (the merge base of the two is the commit)."""
    import lakefs  # heavy SDK: kept out of DAG parsing

    repo = repository(project, settings)
    try:
        full = repo.ref(commit_id).get_commit().id
    except (lakefs.exceptions.NotFoundException, lakefs.exceptions.BadRequestException):
        # An unknown or malformed ref; anything else (lakeFS down) is raised.
        return False
    refs = client(settings).sdk_client.refs_api
    base = refs.find_merge_base(repo_name(project), full, branch).base_commit_id
    return base == full


def commit_metadata(project: str, ref: str, settings: Settings | None = None) -> dict[str, str]:
    """Metadata of the commit a ref points at."""
    return dict(repository(project, settings).ref(ref).get_commit().metadata or {})
