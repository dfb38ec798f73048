"""Online features: the client of a project's Feast feature server (``feast serve``, HTTP).

Owns the conversation with the feature server at serving time: where it listens (the address
file :func:`~mlops_lib.feature_store.paths.server_file`, written when the server starts and
read again when a connection fails, since a restarted server may sit on another port), the
lookup request, reading the answer into model-input columns (``<view>__<feature>``, Feast's
full feature names, as :attr:`ProjectSpec.store_features` lists them) and the two failures
serving maps to status codes: :class:`FeatureStoreUnavailable` (the server cannot answer:
503) and :class:`UnknownEntities` (a key without online values when the spec says
``unknown_entity: reject``: 422). Starting the server and writing its address belong to
others; this module only reads the address. Feast itself is never imported here (it lives
in its own environment): the protocol is plain JSON over HTTP.

The protocol, as Feast 0.67's feature server speaks it (checked against a running
``feast serve``)::

    POST /get-online-features
    {"features": ["view:feature", ...], "entities": {"<join_key>": [key, ...]},
     "full_feature_names": true}
    ->
    {"metadata": {"feature_names": ["<join_key>", "view__feature", ...]},
     "results": [{"values": [...], "statuses": [...], "event_timestamps": [...]}, ...]}

``results[i]`` belongs to ``feature_names[i]``, whose order is the server's (join keys first,
then the features, not in the requested order), one value per requested key in request
order. A key the store has no row for has status ``NOT_FOUND`` and a null value; a stored
null is ``PRESENT`` with a null value. Errors come as 404 (unknown feature view) or 500 (a
missing or empty join key list) with a JSON-encoded string body.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

from mlops_lib.feature_store.paths import server_file
from mlops_lib.feature_store.views import join_key
from mlops_lib.settings import Settings
from mlops_lib.spec import STORE_FEATURE_SEPARATOR, ProjectSpec

if TYPE_CHECKING:
    import httpx

LOOKUP_PATH = "/get-online-features"
PRESENT = "PRESENT"
# Unknown key values named in an error message at most (the exception carries them all).
SHOWN_KEYS = 10


@dataclass(frozen=True)
class OnlineFeatures:
    """Store features of a request's rows.

    ``columns``: model-input name (``<view>__<feature>``) -> values in row order, None where
    the store has no value; ``found``: per row, whether every view the model takes had the
    row's entity (a stored null counts as found: the entity is known)."""

    columns: dict[str, list[Any]]
    found: list[bool]


class FeatureStoreUnavailable(RuntimeError):
    """The project's feature server cannot answer: not running (no address file), refusing
    connections, too slow, failing (5xx) or refusing the lookup itself (a view it does not
    know). The message names the project's feature server and its URL."""

    def __init__(self, project: str, url: str | None, reason: str) -> None:
        self.project = project
        self.url = url
        self.reason = reason
        where = f" at {url}" if url else ""
        super().__init__(f"feature store of project {project!r} (feature server{where}): {reason}")


class UnknownEntities(ValueError):
    """Keys the online store has no values for (``unknown_entity: reject``): ``key`` the
    join key's name, ``values`` the unknown keys (each once, in request order), ``rows`` the
    request rows that carry them (row index -> key)."""

    def __init__(self, project: str, key: str, rows: dict[int, Any]) -> None:
        self.project = project
        self.key = key
        self.rows = rows
        self.values = list(dict.fromkeys(rows.values()))
        values = self.values
        shown = ", ".join(repr(v) for v in values[:SHOWN_KEYS])
        more = f" and {len(values) - SHOWN_KEYS} more" if len(values) > SHOWN_KEYS else ""
        super().__init__(
            f"no online features for {key} {shown}{more} in the feature store of project "
            f"{project!r}"
        )


def model_join_keys(spec: ProjectSpec) -> list[str]:
    """The join keys of the entities whose views the model takes, in the views' order: what
    a request must send for its store features to be looked up (empty without a store)."""
    store = spec.feature_store
    if store is None or not spec.store_features:
        return []
    return list(dict.fromkeys(join_key(spec, view) for view in store.model))


@dataclass(frozen=True)
class _View:
    name: str
    join_key: str
    features: list[str]  # model-input names, view__feature


@dataclass(frozen=True)
class _Lookup:
    """One fetch: the request body and where each request row's key went in it."""

    body: dict[str, Any]
    rows: int
    slots: list[int | None]  # per request row: its position among the sent keys (None: not sent)
    keys: dict[str, list[Any]]  # join key -> the request's values, in row order


class OnlineFeatureClient:
    """Looks up the store features of request rows on the project's feature server.

    One keep-alive ``httpx.AsyncClient`` serves :meth:`fetch` (made on first use, in the
    event loop that uses it); :meth:`fetch_sync` uses a blocking client of its own. Every
    lookup, a retry after a failed connection included, is bounded by
    ``settings.feature_lookup_timeout``."""

    def __init__(
        self, spec: ProjectSpec, settings: Settings, *, reject_unknown: bool | None = None
    ) -> None:
        """``reject_unknown``: raise UnknownEntities for keys without values (default: as
        the spec's ``unknown_entity`` says)."""
        store = spec.feature_store
        if store is None or not spec.store_features:
            raise ValueError(f"project {spec.name!r} takes no features from a feature store")
        self.project = spec.name
        self.address_file: Path = server_file(settings, spec.name)
        self.fixed_url = (settings.feature_server_url or "").rstrip("/") or None
        self.timeout = float(settings.feature_lookup_timeout)
        self.reject_unknown = (
            store.unknown_entity == "reject" if reject_unknown is None else reject_unknown
        )
        self.views = [
            _View(
                name,
                join_key(spec, name),
                [f"{name}{STORE_FEATURE_SEPARATOR}{f}" for f in store.views[name].features],
            )
            for name in store.model
        ]
        self.join_keys = model_join_keys(spec)
        self.columns = [c for view in self.views for c in view.features]
        # A value older than its view's TTL is missing, as in training sets (Feast's online
        # reads return it whatever its age).
        self.ttl = {
            c: store.views[view.name].ttl_days * 86400.0
            for view in self.views
            for c in view.features
        }
        self.references = [c.replace(STORE_FEATURE_SEPARATOR, ":", 1) for c in self.columns]
        self._url: str | None = None
        self._client: httpx.AsyncClient | None = None
        self._client_loop: asyncio.AbstractEventLoop | None = None
        self._sync_client: httpx.Client | None = None

    # where the server listens -----------------------------------------------------------
    def url(self, reread: bool = False) -> str:
        """The feature server's base URL: ``settings.feature_server_url`` when set, else its
        address file (cached; ``reread`` reads the file again)."""
        if self._url is None or reread:
            self._url = self._read_address()
        return self._url

    def _read_address(self) -> str:
        if self.fixed_url:  # a server of its own (settings.feature_server_url)
            return self.fixed_url
        path = self.address_file
        try:
            address = json.loads(path.read_text())
            url = str(address["url"]).rstrip("/")
        except FileNotFoundError:
            raise self._unavailable(
                None, f"not running: {path} does not exist (written when `feast serve` starts)"
            ) from None
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise self._unavailable(None, f"unreadable address file {path}: {exc}") from None
        if not url.startswith(("http://", "https://")):
            raise self._unavailable(None, f"address file {path} holds no http URL: {url!r}")
        return url

    def _unavailable(self, url: str | None, reason: str) -> FeatureStoreUnavailable:
        return FeatureStoreUnavailable(self.project, url, reason)

    # the lookup ------------------------------------------------------------------------
    async def fetch(self, keys: Sequence[Any] | Mapping[str, Sequence[Any]]) -> OnlineFeatures:
        """The store features of the rows whose keys are given: a list of the join key's
        values (one per row), or ``{join_key: values}`` when the model's views are of more
        than one entity. Raises :class:`FeatureStoreUnavailable`, and
        :class:`UnknownEntities` for keys without values under ``unknown_entity: reject``."""
        import httpx

        lookup = self._lookup(keys)
        if not lookup.body:
            return self._answer(lookup, None)
        client = self._async_client()
        url = None
        try:
            async with asyncio.timeout(self.timeout):
                deadline = time.monotonic() + self.timeout
                for attempt in (0, 1):
                    url = self.url(reread=attempt > 0)
                    remaining = max(deadline - time.monotonic(), 0.001)
                    try:
                        response = await client.post(
                            url + LOOKUP_PATH, json=lookup.body, timeout=remaining
                        )
                        break
                    except httpx.TimeoutException:
                        raise
                    except httpx.TransportError as exc:
                        if attempt or self._same_address(url):
                            raise self._unreachable(url, exc) from None
        except (TimeoutError, httpx.TimeoutException):
            raise self._unavailable(
                url, f"no answer within {self.timeout:g} s (feature_lookup_timeout)"
            ) from None
        return self._answer(lookup, self._payload(url, response))

    def fetch_sync(self, keys: Sequence[Any] | Mapping[str, Sequence[Any]]) -> OnlineFeatures:
        """:meth:`fetch` for callers without an event loop (a blocking client of its own)."""
        import httpx

        lookup = self._lookup(keys)
        if not lookup.body:
            return self._answer(lookup, None)
        if self._sync_client is None:
            self._sync_client = httpx.Client(trust_env=False, timeout=self.timeout)
        deadline = time.monotonic() + self.timeout
        url = None
        for attempt in (0, 1):
            url = self.url(reread=attempt > 0)
            remaining = deadline - time.monotonic()
            try:
                if remaining <= 0:
                    raise httpx.TimeoutException("deadline passed")
                response = self._sync_client.post(
                    url + LOOKUP_PATH, json=lookup.body, timeout=remaining
                )
                break
            except httpx.TimeoutException:
                raise self._unavailable(
                    url, f"no answer within {self.timeout:g} s (feature_lookup_timeout)"
                ) from None
            except httpx.TransportError as exc:
                if attempt or self._same_address(url):
                    raise self._unreachable(url, exc) from None
        return self._answer(lookup, self._payload(url, response))

    def _same_address(self, url: str) -> bool:
        """After a failed connection: whether the address file still names ``url`` (then a
        retry would fail the same way; a new address is tried once). A missing file
        raises: not running."""
        return self._read_address() == url

    def _unreachable(self, url: str, exc: Exception) -> FeatureStoreUnavailable:
        cause = str(exc) or type(exc).__name__
        return self._unavailable(url, f"not reachable ({cause})")

    def _async_client(self) -> httpx.AsyncClient:
        """The keep-alive client, bound to the running event loop (a client's connections
        belong to the loop that opened them: another loop gets a new client)."""
        import httpx

        loop = asyncio.get_running_loop()
        if self._client is None or self._client_loop is not loop:
            self._client = httpx.AsyncClient(trust_env=False, timeout=self.timeout)
            self._client_loop = loop
        return self._client

    async def aclose(self) -> None:
        """Close the keep-alive connections (the service's shutdown)."""
        client, self._client = self._client, None
        if client is not None and self._client_loop is asyncio.get_running_loop():
            await client.aclose()
        self.close()

    def close(self) -> None:
        client, self._sync_client = self._sync_client, None
        if client is not None:
            client.close()

    # request and answer ------------------------------------------------------------------
    def _lookup(self, keys: Sequence[Any] | Mapping[str, Sequence[Any]]) -> _Lookup:
        """The request body: each distinct key (tuple) once; a row with a null key is not
        sent (it has no values)."""
        if isinstance(keys, Mapping):
            missing = [k for k in self.join_keys if k not in keys]
            if missing:
                raise ValueError(f"no values for the join keys {missing}")
            by_key = {k: list(keys[k]) for k in self.join_keys}
        else:
            if len(self.join_keys) != 1:
                raise ValueError(f"give the keys as {{join_key: values}} for {self.join_keys}")
            by_key = {self.join_keys[0]: list(keys)}
        lengths = {len(v) for v in by_key.values()}
        if len(lengths) > 1:
            raise ValueError(f"join keys of different lengths: {sorted(lengths)}")
        rows = lengths.pop() if lengths else 0
        tuples = list(zip(*by_key.values(), strict=True))
        position: dict[tuple, int] = {}
        slots: list[int | None] = []
        for key in tuples:
            if any(v is None for v in key):
                slots.append(None)
                continue
            slots.append(position.setdefault(key, len(position)))
        if not position:
            return _Lookup({}, rows, slots, by_key)
        sent = list(position)
        body = {
            "features": self.references,
            "entities": {k: [key[i] for key in sent] for i, k in enumerate(by_key)},
            "full_feature_names": True,
        }
        return _Lookup(body, rows, slots, by_key)

    def _payload(self, url: str, response: httpx.Response) -> dict[str, Any]:
        if response.status_code >= 400:
            what = "failed" if response.status_code >= 500 else "refused the lookup"
            raise self._unavailable(
                url, f"{what} (HTTP {response.status_code}): {_error_text(response)}"
            )
        try:
            payload = response.json()
            names = payload["metadata"]["feature_names"]
            results = payload["results"]
            if len(names) != len(results):
                raise ValueError(f"{len(names)} feature names for {len(results)} results")
        except (ValueError, KeyError, TypeError) as exc:
            raise self._unavailable(url, f"answered an unreadable lookup: {exc}") from None
        return {"url": url, "by_name": dict(zip(names, results, strict=True))}

    def _answer(self, lookup: _Lookup, payload: dict[str, Any] | None) -> OnlineFeatures:
        """Columns in request row order; unknown keys raised (reject) or left as None."""
        sent = max((s for s in lookup.slots if s is not None), default=-1) + 1
        values: dict[str, list[Any]] = {}
        present: dict[str, list[bool]] = {}
        for column in self.columns:
            if payload is None:
                values[column], present[column] = [None] * sent, [False] * sent
                continue
            try:
                result = payload["by_name"][column]
                statuses = [s == PRESENT for s in result.get("statuses") or [PRESENT] * sent]
                got = [v if ok else None for v, ok in zip(result["values"], statuses, strict=True)]
                if len(got) != sent:
                    raise ValueError(f"{len(got)} values for {sent} keys")
                got = _unexpired(got, result.get("event_timestamps"), self.ttl[column])
            except (KeyError, TypeError, ValueError, AttributeError) as exc:
                raise self._unavailable(
                    payload["url"], f"answered no readable values of {column!r}: {exc}"
                ) from None
            values[column], present[column] = got, statuses
        found = [True] * lookup.rows
        for view in self.views:
            # The view has the entity when any of its features is PRESENT (a stored null is
            # PRESENT too; a key without a row is NOT_FOUND throughout).
            lists = [present[c] for c in view.features]
            seen = [any(flags) for flags in zip(*lists, strict=True)]
            missing = [i for i, slot in enumerate(lookup.slots) if slot is None or not seen[slot]]
            for i in missing:
                found[i] = False
            if missing and self.reject_unknown:
                keys = lookup.keys[view.join_key]
                raise UnknownEntities(self.project, view.join_key, {i: keys[i] for i in missing})
        columns = {
            c: [None if slot is None else values[c][slot] for slot in lookup.slots]
            for c in self.columns
        }
        return OnlineFeatures(columns, found)


def _unexpired(values: list[Any], stamps: list[str] | None, ttl_seconds: float) -> list[Any]:
    """The values, None where the value's time is more than the TTL ago."""
    if not stamps:
        return values
    oldest = datetime.now(UTC).timestamp() - ttl_seconds
    return [
        None if v is not None and _seconds(t) < oldest else v
        for v, t in zip(values, stamps, strict=True)
    ]


def _seconds(stamp: str) -> float:
    try:
        return datetime.fromisoformat(stamp).timestamp()
    except (TypeError, ValueError):
        return float("inf")  # no readable time: kept, as Feast gave it


def _error_text(response: httpx.Response) -> str:
    """Feast's error: a JSON string, often holding JSON with a ``message``."""
    text = response.text
    for _ in range(2):
        try:
            decoded = json.loads(text)
        except ValueError:
            break
        if isinstance(decoded, dict):
            text = str(decoded.get("message") or decoded.get("detail") or decoded)
            break
        text = str(decoded)
    return text.strip()[:300] or "(no body)"
