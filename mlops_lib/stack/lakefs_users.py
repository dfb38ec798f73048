"""lakeFS users of the platform beyond its admin: the deployments' user.

lakeFS's open-source build has one admin user unless it runs with its ACL server
(``contrib/auth/acl``); with it, users belong to the groups Readers, Writers, Supers and
Admins. Deployments (which only write the prediction log) get a user of their own in Writers:
it reads and writes objects and branches, but cannot create or delete repositories, nor see
or manage users and credentials. Its key is kept with the other generated credentials.
"""

from __future__ import annotations

import httpx

from mlops_lib.settings import ENV_PREFIX, Settings
from mlops_lib.stack.credentials import write_private
from mlops_lib.stack.procs import StackError

SERVING_USER = "serving"
SERVING_GROUP = "Writers"


def _api(settings: Settings, auth: tuple[str, str]) -> httpx.Client:
    return httpx.Client(
        base_url=f"{settings.lakefs_url}/api/v1", auth=auth, timeout=30, trust_env=False
    )


def _works(settings: Settings) -> bool:
    """True when the stored serving key is accepted by lakeFS."""
    if (
        not settings.lakefs_serving_access_key_id
        or settings.lakefs_serving_secret_access_key is None
    ):
        return False
    auth = (
        settings.lakefs_serving_access_key_id,
        settings.secret("lakefs_serving_secret_access_key"),
    )
    with _api(settings, auth) as api:
        return api.get("/user").is_success


def ensure_serving_user(settings: Settings) -> bool:
    """Create the deployments' user (in Writers) with a key, once; returns True when a key
    was made (and added to the credentials file)."""
    if _works(settings):
        return False
    admin = (settings.secret("lakefs_access_key_id"), settings.secret("lakefs_secret_access_key"))
    with _api(settings, admin) as api:
        created = api.post("/auth/users", json={"id": SERVING_USER})
        if created.status_code not in (201, 409):
            raise StackError(f"lakeFS refused to create user {SERVING_USER!r}: {created.text}")
        member = api.put(f"/auth/groups/{SERVING_GROUP}/members/{SERVING_USER}")
        if not member.is_success and member.status_code != 409:  # 409: a member already
            raise StackError(f"lakeFS refused {SERVING_USER!r} in {SERVING_GROUP}: {member.text}")
        key = api.post(f"/auth/users/{SERVING_USER}/credentials")
        if not key.is_success:
            raise StackError(f"lakeFS made no key for {SERVING_USER!r}: {key.text}")
    body = key.json()
    _store(
        settings,
        lakefs_serving_access_key_id=body["access_key_id"],
        lakefs_serving_secret_access_key=body["secret_access_key"],
    )
    return True


def _store(settings: Settings, **values: str) -> None:
    """Replace these settings in the credentials file (mode 0600)."""
    path = settings.credentials_file
    names = {f"{ENV_PREFIX}{k.upper()}" for k in values}
    kept = [
        line
        for line in (path.read_text().splitlines() if path.exists() else [])
        if line.split("=", 1)[0] not in names
    ]
    lines = kept + [f"{ENV_PREFIX}{k.upper()}={v}" for k, v in values.items()]
    write_private(path, "\n".join(lines) + "\n")
