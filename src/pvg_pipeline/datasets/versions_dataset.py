"""``VersionsDataset``: every saved version of a versioned JSON file, read-only."""

from __future__ import annotations

import json
from pathlib import PurePosixPath
from typing import Any

import fsspec
from kedro.io.core import AbstractDataset, DatasetError, get_protocol_and_path
from kedro_datasets._typing import JSONPreview


class VersionsDataset(AbstractDataset[None, dict[str, Any]]):
    """Load ``{version: content}`` for all versions of a versioned JSON dataset.

    Point ``filepath`` at the same path as the versioned dataset (e.g.
    ``data/08_reporting/evaluation_metrics.json``); versions are the timestamp
    folders below it. Saving is not supported.
    """

    def __init__(
        self, *, filepath: str, metadata: dict[str, Any] | None = None
    ) -> None:
        """Create the dataset for the versioned file at ``filepath``."""
        protocol, path = get_protocol_and_path(filepath)
        self._protocol = protocol
        self._path = PurePosixPath(path)
        self._fs = fsspec.filesystem(protocol)
        self.metadata = metadata

    def _versions(self) -> dict[str, str]:
        pattern = str(self._path / "*" / self._path.name)
        return {PurePosixPath(p).parent.name: p for p in sorted(self._fs.glob(pattern))}

    def load(self) -> dict[str, Any]:
        """Every version's parsed JSON, keyed by version timestamp."""
        loaded = {}
        for version, path in self._versions().items():
            with self._fs.open(path, "r") as file:
                loaded[version] = json.load(file)
        return loaded

    def save(self, data: None) -> None:
        """Read-only."""
        raise DatasetError("VersionsDataset is read-only")

    def preview(self) -> JSONPreview:
        """The saved versions, newest last."""
        return JSONPreview(json.dumps({"versions": list(self._versions())}))

    def _exists(self) -> bool:
        return bool(self._versions())

    def _describe(self) -> dict[str, Any]:
        return {"filepath": str(self._path), "protocol": self._protocol}
