"""lakeFS users of the platform beyond its admin: one per project's deployments.

lakeFS's open-source build has one admin user unless it runs with its ACL server
(``contrib/auth/acl``). Its four ACL groups (Readers, Writers, Supers, Admins) grant their
rights on every repository, but the server also keeps policies whose statements name
resources, and lakeFS evaluates them like any policy. So the deployments of a project get a
user of their own, ``serving-<project>``, in a group of the same name whose one policy allows
reading, listing, writing objects and creating branches in that project's repository only:
it cannot read or write another project's data, create or delete repositories, nor see or
manage users and credentials.

The users, groups and policies are made through the ACL server's API (it listens on
127.0.0.1 only); the keys are kept in ``<stack>/lakefs/serving-keys.json`` (mode 0600).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TypedDict

import httpx

from mlops_lib.layout import repo_name
from mlops_lib.settings import Settings
from mlops_lib.stack.credentials import write_private
from mlops_lib.stack.procs import StackError, file_lock

USER_PREFIX = "serving-"
# What the prediction log does in its own repository: find it and its `monitoring` branch
# (made from main on first use) and upload objects.
SERVING_ACTIONS = ["fs:Read*", "fs:List*", "fs:WriteObject", "fs:CreateBranch"]


class LakeFSKey(TypedDict):
    access_key_id: str
    secret_access_key: str


def serving_user(project: str) -> str:
    return f"{USER_PREFIX}{project}"


def serving_policy(project: str) -> dict:
    """The policy of a project's deployments: their repository and what is in it, nothing
    else (no ``*`` resource, no repository or user management)."""
    arn = f"arn:lakefs:fs:::repository/{repo_name(project)}"
    return {
        "name": f"{USER_PREFIX}{repo_name(project)}",
        "statement": [
            {"effect": "allow", "action": SERVING_ACTIONS, "resource": arn},
            {"effect": "allow", "action": SERVING_ACTIONS, "resource": f"{arn}/*"},
        ],
    }


def keys_file(settings: Settings) -> Path:
    return settings.stack_dir / "lakefs" / "serving-keys.json"


def _stored(settings: Settings) -> dict[str, LakeFSKey]:
    path = keys_file(settings)
    return json.loads(path.read_text()) if path.exists() else {}


def _works(settings: Settings, key: LakeFSKey) -> bool:
    with httpx.Client(timeout=30, trust_env=False) as client:
        resp = client.get(
            f"{settings.lakefs_url}/api/v1/user",
            auth=(key["access_key_id"], key["secret_access_key"]),
        )
    return resp.is_success


def serving_key(settings: Settings, project: str) -> LakeFSKey:
    """The lakeFS key of a project's deployments; the user, its group and policy and the key
    are made on first use (and again, replacing the old key, when it stopped working).
    Deploys of several projects at once take turns on the keys file."""
    with file_lock(keys_file(settings).with_suffix(".lock")):
        stored = _stored(settings)
        key = stored.get(project)
        if key and _works(settings, key):
            return key
        new = _make_user(settings, project, stale=key)
        write_private(keys_file(settings), json.dumps(stored | {project: new}, indent=2) + "\n")
    return new


def _make_user(settings: Settings, project: str, stale: LakeFSKey | None) -> LakeFSKey:
    """User, group, its policy (brought up to date) and a new key, through the ACL server's
    API; a stale key of the user is deleted."""
    user = serving_user(project)
    policy = serving_policy(project)
    base = f"http://{settings.host}:{settings.lakefs_acl_port}/api/v1/auth"
    with httpx.Client(base_url=base, timeout=30, trust_env=False) as acl:
        _ok(acl.post("/users", json={"username": user}), f"create user {user!r}")
        _ok(acl.post("/groups", json={"id": user}), f"create group {user!r}")
        made = acl.post("/policies", json=policy)
        if made.status_code == 409:
            made = acl.put(f"/policies/{policy['name']}", json=policy)
        _ok(made, f"write policy {policy['name']!r}")
        _ok(acl.put(f"/groups/{user}/policies/{policy['name']}"), "attach the policy")
        _ok(acl.put(f"/groups/{user}/members/{user}"), f"add {user!r} to its group")
        if stale:
            acl.delete(f"/users/{user}/credentials/{stale['access_key_id']}")
        key = acl.post(f"/users/{user}/credentials")
        _ok(key, f"make a key for {user!r}", conflict_ok=False)
    body = key.json()
    return {"access_key_id": body["access_key_id"], "secret_access_key": body["secret_access_key"]}


def _ok(resp: httpx.Response, what: str, *, conflict_ok: bool = True) -> None:
    """Raise unless the ACL server did it (409: it was done before)."""
    if resp.is_success or (conflict_ok and resp.status_code == 409):
        return
    raise StackError(f"lakeFS ACL server refused to {what}: {resp.status_code} {resp.text}")
