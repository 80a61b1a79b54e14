"""``TorchDataset``: versioned tensors, state dicts and nested containers of them."""

from __future__ import annotations

import io
import json
import logging
import os
import re
from copy import deepcopy
from pathlib import Path, PurePosixPath
from typing import Any

import fsspec
import torch
from kedro.io.core import (
    AbstractVersionedDataset,
    DatasetError,
    Version,
    get_filepath_str,
    get_protocol_and_path,
)
from kedro_datasets._typing import JSONPreview

logger = logging.getLogger(__name__)


class TorchDataset(AbstractVersionedDataset[Any, Any]):
    """Save with ``torch.save`` and load with ``torch.load(weights_only=True)``.

    Holds a tensor, a state dict, or a (nested) dict/list of tensors and plain Python
    values. Loading never unpickles arbitrary objects (``weights_only=True``), so a
    file from elsewhere cannot run code.

    Examples
    --------
    ``conf/base/catalog_02_intermediate.yml``::

        graph_pairs_train:
          type: pvg_pipeline.datasets.TorchDataset
          filepath: data/02_intermediate/graph_pairs_train.pt
          versioned: true
    """

    DEFAULT_LOAD_ARGS: dict[str, Any] = {"map_location": "cpu"}
    DEFAULT_SAVE_ARGS: dict[str, Any] = {}

    def __init__(
        self,
        *,
        filepath: str,
        load_args: dict[str, Any] | None = None,
        save_args: dict[str, Any] | None = None,
        version: Version | None = None,
        credentials: dict[str, Any] | None = None,
        fs_args: dict[str, Any] | None = None,
        metadata: dict[str, Any] | None = None,
        deduplicate: bool = False,
    ) -> None:
        """Create a dataset for ``filepath`` (any fsspec URL).

        Parameters
        ----------
        filepath
            Where the file lives; versioned datasets put versions below it.
        load_args
            Extra ``torch.load`` arguments (``weights_only`` is always ``True``).
        save_args
            Extra ``torch.save`` arguments.
        version
            Kedro version to load/save; ``None`` means unversioned.
        credentials, fs_args
            Passed to the fsspec filesystem.
        metadata
            Free-form metadata (kedro-viz reads ``kedro-viz: layer``).
        deduplicate
            For a versioned dataset on the local disk: a save whose bytes equal
            the newest version's becomes a hard link to that file, so a table
            recomputed identically by every run (the prime table, 129 MB) is
            stored once while every run still has its version.
        """
        fs_args = deepcopy(fs_args) or {}
        protocol, path = get_protocol_and_path(filepath, version)
        if protocol == "file":
            fs_args.setdefault("auto_mkdir", True)
        self._protocol = protocol
        self._fs = fsspec.filesystem(protocol, **(credentials or {}), **fs_args)
        self.metadata = metadata
        super().__init__(
            filepath=PurePosixPath(path),
            version=version,
            exists_function=self._fs.exists,
            glob_function=self._fs.glob,
        )
        self._load_args = {**self.DEFAULT_LOAD_ARGS, **(load_args or {})}
        self._load_args.pop("weights_only", None)
        self._save_args = {**self.DEFAULT_SAVE_ARGS, **(save_args or {})}
        self._deduplicate = deduplicate

    def _describe(self) -> dict[str, Any]:
        return {
            "filepath": self._filepath,
            "protocol": self._protocol,
            "load_args": self._load_args,
            "save_args": self._save_args,
            "version": self._version,
            "deduplicate": self._deduplicate,
        }

    def load(self) -> Any:
        """Load the stored object with ``weights_only=True``."""
        load_path = get_filepath_str(self._get_load_path(), self._protocol)
        try:
            with self._fs.open(load_path, mode="rb") as file:
                return torch.load(file, weights_only=True, **self._load_args)
        except FileNotFoundError as error:
            raise DatasetError(
                f"'{load_path}' does not exist; available versions of "
                f"'{self._filepath.name}': {self.available_versions() or 'none'}"
            ) from error
        except Exception as error:  # torch raises several types for bad files
            raise DatasetError(
                f"'{load_path}' is not a readable torch file ({load_problem(error)}); "
                "it may be truncated, corrupt or not made by this project. Pin "
                "another version with --load-versions or regenerate it."
            ) from None

    def save(self, data: Any) -> None:
        """Save ``data``; a versioned save never replaces an existing file."""
        save_path = get_filepath_str(self._get_save_path(), self._protocol)
        if self._deduplicate and self._version and self._protocol == "file":
            buffer = io.BytesIO()
            torch.save(data, buffer, **self._save_args)
            payload = buffer.getvalue()
            same = self._identical_version(payload, save_path)
            if same is not None:
                Path(save_path).parent.mkdir(parents=True, exist_ok=True)
                os.link(same, save_path)
                logger.info(
                    "%s is identical to %s: saved as a link to it (no extra space)",
                    self._filepath.name,
                    same,
                )
                self._invalidate_cache()
                return
        # Write then move, so an interrupted save leaves no truncated file behind.
        partial = f"{save_path}.partial"
        with self._fs.open(partial, mode="wb") as file:
            if self._deduplicate and self._version and self._protocol == "file":
                file.write(payload)
            else:
                torch.save(data, file, **self._save_args)
        self._fs.mv(partial, save_path)
        self._invalidate_cache()

    def _identical_version(self, payload: bytes, save_path: str) -> str | None:
        """The newest saved version's file if its bytes are ``payload``."""
        for path in self._get_versions():
            candidate = get_filepath_str(PurePosixPath(path), self._protocol)
            if candidate == save_path:
                continue
            file = Path(candidate)
            if file.stat().st_size == len(payload) and file.read_bytes() == payload:
                return candidate
            return None  # only the newest: older ones are not worth reading
        return None

    def _exists(self) -> bool:
        try:
            load_path = get_filepath_str(self._get_load_path(), self._protocol)
        except DatasetError:
            return False
        return self._fs.exists(load_path)

    def available_versions(self) -> list[str]:
        """Saved version timestamps, newest first (empty when unversioned)."""
        if not self._version:
            return []
        return [PurePosixPath(path).parent.name for path in self._get_versions()]

    def _invalidate_cache(self) -> None:
        self._fs.invalidate_cache(get_filepath_str(self._filepath, self._protocol))

    def preview(self) -> JSONPreview:
        """Summarise the stored object for kedro-viz: keys, shapes, dtypes, counts."""
        return JSONPreview(json.dumps(describe_tensors(self.load()), default=str))


def load_problem(error: Exception) -> str:
    """One line on why ``torch.load(weights_only=True)`` refused a file.

    PyTorch's own message advises retrying with ``weights_only=False``: for a file
    of unknown origin that runs arbitrary code, so only the cause is kept.
    """
    text = str(error)
    match = re.search(r"Unsupported global: GLOBAL (\S+)", text)
    if match:
        return f"it contains a Python object ({match.group(1)}), not only tensors"
    lines = text.strip().splitlines()
    first = lines[0].split(". ")[0] if lines else type(error).__name__
    if "weights_only" in first or len(first) > 200:
        return type(error).__name__
    return first


def describe_tensors(value: Any, depth: int = 0) -> Any:
    """Replace every tensor in a nested container by its shape, dtype and count."""
    if isinstance(value, torch.Tensor):
        described = {
            "shape": list(value.shape),
            "dtype": str(value.dtype).split(".")[-1],
        }
        if value.dtype == torch.bool and value.dim() == 1:
            described["true"] = int(value.sum())
        return described
    if isinstance(value, dict) and depth < 4:
        return {str(k): describe_tensors(v, depth + 1) for k, v in value.items()}
    if isinstance(value, (list, tuple)) and depth < 4:
        return [describe_tensors(v, depth + 1) for v in value[:20]]
    return value
