"""MLflow dataset source for lakeFS: training inputs point at ``lakefs://repo/commit/path``."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from mlflow.data.dataset_source import DatasetSource

from mlops_lib import layout
from mlops_lib.datasets import read_dataset

if TYPE_CHECKING:
    import pandas as pd


class LakeFSDatasetSource(DatasetSource):
    """A dataset at an immutable lakeFS commit."""

    def __init__(self, uri: str):
        self.uri = uri

    @staticmethod
    def _get_source_type() -> str:
        return "lakefs"

    def load(self) -> pd.DataFrame:
        """Read the dataset back from lakeFS (every partition at that commit)."""
        repo, ref, path = self.uri.removeprefix("lakefs://").split("/", 2)
        project = path.split("/")[1] if path.startswith("datasets/") else repo.replace("-", "_")
        return read_dataset(project, ref)

    @staticmethod
    def _can_resolve(raw_source: Any) -> bool:
        return isinstance(raw_source, str) and raw_source.startswith("lakefs://")

    @classmethod
    def _resolve(cls, raw_source: Any) -> LakeFSDatasetSource:
        return cls(str(raw_source))

    def to_dict(self) -> dict[str, Any]:
        return {"uri": self.uri}

    @classmethod
    def from_dict(cls, source_dict: dict[Any, Any]) -> LakeFSDatasetSource:
        return cls(source_dict["uri"])


def lakefs_dataset(df: pd.DataFrame, project: str, commit: str, *, target: str | None = None):
    """An MLflow dataset of a frame whose source is the lakeFS URI at the commit."""
    import mlflow.data

    uri = layout.lakefs_uri(project, commit, layout.dataset_prefix(project))
    return mlflow.data.from_pandas(
        df, source=LakeFSDatasetSource(uri), name=f"{project}@{commit[:12]}", targets=target
    )
