"""The Feast repo the platform generates for a project at one lakeFS commit.

A spec's ``features:`` section is configuration; this module turns it into Feast's own
files: ``feature_store.yaml`` (local provider, a registry file inside the repo, the
project's SQLite online store, the file offline store) and ``definitions.py`` (one Entity
per entity, one FileSource and FeatureView per view over ``data/<view>.parquet``, the view
table read from the commit). Every value written into the Python file is a literal made
with ``repr`` from validated names and strings: nothing of the spec runs as code.

The repo of a commit never changes, so the hash of its definitions (which name the commit)
is the registry hash recorded with every training set and materialization. Nothing here does I/O.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from mlops_lib.feature_store.views import EVENT_TIMESTAMP
from mlops_lib.spec import STORE_FEATURE_SEPARATOR, ProjectSpec

CONFIG_FILE = "feature_store.yaml"
DEFINITIONS_FILE = "definitions.py"
REGISTRY_FILE = "registry.db"
DATA_DIR = "data"
_FEAST_TYPES = {"int": "Int64", "float": "Float64"}
_KEY_TYPES = {"string": "STRING", "category": "STRING", "int": "INT64"}


def view_file(view: str) -> str:
    """A view's table inside the repo (relative: Feast resolves it against the repo)."""
    return f"{DATA_DIR}/{view}.parquet"


def config_text(spec: ProjectSpec, online_store: Path) -> str:
    """``feature_store.yaml``: the registry is a file of the repo, the online store shared
    (its path written as a quoted string)."""
    return (
        f"project: {spec.name}\n"
        "provider: local\n"
        "registry:\n"
        f"  path: {REGISTRY_FILE}\n"
        "  cache_ttl_seconds: 10\n"
        "offline_store:\n"
        "  type: file\n"
        "online_store:\n"
        "  type: sqlite\n"
        f"  path: {json.dumps(str(online_store))}\n"
        "entity_key_serialization_version: 3\n"
    )


def definitions_text(spec: ProjectSpec, commit: str) -> str:
    """``definitions.py``: entities, sources and feature views of the spec, as literals."""
    store = spec.feature_store
    assert store is not None, spec.name
    lines = [
        f"# Generated from the {spec.name!r} spec at lakeFS commit {commit!r}; do not edit.",
        "from datetime import timedelta",
        "",
        "from feast import Entity, FeatureView, Field, FileSource, ValueType",
        "from feast.types import Float64, Int64",
        "",
    ]
    for name, entity in store.entities.items():
        kind = _KEY_TYPES[spec.schema.columns[entity.join_key].type]
        lines.append(
            f"entity_{name} = Entity(name={name!r}, join_keys=[{entity.join_key!r}], "
            f"value_type=ValueType.{kind}, description={entity.description!r})"
        )
    for name, view in store.views.items():
        fields = ", ".join(
            f"Field(name={f!r}, dtype={_FEAST_TYPES[feature.dtype]})"
            for f, feature in view.features.items()
        )
        lines += [
            "",
            f"view_{name} = FeatureView(",
            f"    name={name!r},",
            f"    entities=[entity_{view.entity}],",
            f"    ttl=timedelta(seconds={round(view.ttl_days * 86400)}),",
            f"    schema=[{fields}],",
            f"    source=FileSource(name={name + '_source'!r}, path={view_file(name)!r}, "
            f"timestamp_field={EVENT_TIMESTAMP!r}),",
            f"    online={view.online!r},",
            f"    description={view.description!r},",
            f"    tags={{'lakefs_commit': {commit!r}, 'source': {view.source!r}, "
            f"'features_hash': {spec.features_hash()!r}}},",
            ")",
        ]
    return "\n".join(lines) + "\n"


def registry_hash(definitions: str) -> str:
    """What identifies the registry a repo applies: its definitions (they name the commit)."""
    return hashlib.sha256(definitions.encode()).hexdigest()[:16]


def feature_refs(spec: ProjectSpec) -> list[str]:
    """Feast references (``view:feature``) of the features the model takes."""
    return [name.replace(STORE_FEATURE_SEPARATOR, ":", 1) for name in spec.store_features]
