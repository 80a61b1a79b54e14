"""TorchDataset, kedro-datasets style: plain and versioned."""

from __future__ import annotations

import json

import pytest
import torch
from kedro.io.core import DatasetError, Version

from pvg_pipeline.datasets import TorchDataset


@pytest.fixture
def payload() -> dict:
    return {
        "adjacency": torch.rand(4, 2, 3, 3) > 0.5,
        "sizes": torch.tensor([3, 3, 2, 3]),
        "generation_parameters": {"seed": 1, "proportions": {1: 0.5, 3: 0.5}},
    }


def _assert_same(loaded: dict, payload: dict) -> None:
    assert loaded.keys() == payload.keys()
    assert torch.equal(loaded["adjacency"], payload["adjacency"])
    assert torch.equal(loaded["sizes"], payload["sizes"])
    assert loaded["generation_parameters"] == payload["generation_parameters"]


class Arbitrary:
    """A class that ``weights_only`` loading must refuse to unpickle."""


class TestTorchDataset:
    def test_round_trip(self, tmp_path, payload):
        dataset = TorchDataset(filepath=str(tmp_path / "pairs.pt"))
        assert not dataset.exists()
        dataset.save(payload)
        assert dataset.exists()
        _assert_same(dataset.load(), payload)

    def test_missing_file_error(self, tmp_path):
        dataset = TorchDataset(filepath=str(tmp_path / "absent.pt"))
        with pytest.raises(DatasetError, match="absent.pt' does not exist"):
            dataset.load()

    def test_corrupt_file_error(self, tmp_path, payload):
        path = tmp_path / "pairs.pt"
        TorchDataset(filepath=str(path)).save(payload)
        path.write_bytes(path.read_bytes()[:100])
        with pytest.raises(
            DatasetError, match="failed reading zip archive.*truncated, corrupt"
        ):
            TorchDataset(filepath=str(path)).load()

    def test_loads_with_weights_only(self, tmp_path):
        path = tmp_path / "object.pt"
        torch.save({"x": Arbitrary()}, path)
        with pytest.raises(DatasetError, match="not a readable torch file") as error:
            TorchDataset(filepath=str(path)).load()
        message = str(error.value)
        assert "contains a Python object" in message and "Arbitrary" in message
        # Never the advice to load it unsafely.
        assert "False" not in message and "\n" not in message

    def test_preview_describes_tensors(self, tmp_path, payload):
        dataset = TorchDataset(filepath=str(tmp_path / "pairs.pt"))
        dataset.save(payload)
        summary = json.loads(dataset.preview())
        assert summary["adjacency"] == {"shape": [4, 2, 3, 3], "dtype": "bool"}
        assert summary["sizes"] == {"shape": [4], "dtype": "int64"}


class TestTorchDatasetVersioned:
    def test_versioned_round_trip_and_latest(self, tmp_path, payload):
        path = str(tmp_path / "pairs.pt")
        first = TorchDataset(
            filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")
        )
        first.save(payload)
        second = TorchDataset(
            filepath=path, version=Version(None, "2026-01-02T00.00.00.000Z")
        )
        second.save({**payload, "sizes": payload["sizes"] + 1})
        latest = TorchDataset(filepath=path, version=Version(None, None))
        assert torch.equal(latest.load()["sizes"], payload["sizes"] + 1)
        pinned = TorchDataset(
            filepath=path, version=Version("2026-01-01T00.00.00.000Z", None)
        )
        _assert_same(pinned.load(), payload)
        assert latest.available_versions() == [
            "2026-01-02T00.00.00.000Z",
            "2026-01-01T00.00.00.000Z",
        ]

    def test_no_overwrite_of_an_existing_version(self, tmp_path, payload):
        path = str(tmp_path / "pairs.pt")
        version = Version(None, "2026-01-01T00.00.00.000Z")
        TorchDataset(filepath=path, version=version).save(payload)
        with pytest.raises(DatasetError, match="must not exist"):
            TorchDataset(filepath=path, version=version).save({"other": 1})
        loaded = TorchDataset(filepath=path, version=Version(None, None)).load()
        _assert_same(loaded, payload)

    def test_missing_version_lists_available_ones(self, tmp_path, payload):
        path = str(tmp_path / "pairs.pt")
        TorchDataset(
            filepath=path, version=Version(None, "2026-01-01T00.00.00.000Z")
        ).save(payload)
        pinned = TorchDataset(
            filepath=path, version=Version("1999-01-01T00.00.00.000Z", None)
        )
        with pytest.raises(DatasetError, match="2026-01-01T00.00.00.000Z"):
            pinned.load()

    def test_no_versions_at_all(self, tmp_path):
        dataset = TorchDataset(
            filepath=str(tmp_path / "pairs.pt"), version=Version(None, None)
        )
        assert not dataset.exists()
        with pytest.raises(DatasetError):
            dataset.load()


def test_deduplicated_versions_share_one_file_only_when_identical(tmp_path, payload):
    path = str(tmp_path / "table.pt")

    def save(data, version):
        TorchDataset(
            filepath=path, version=Version(None, version), deduplicate=True
        ).save(data)
        return tmp_path / "table.pt" / version / "table.pt"

    first = save(payload, "2026-01-01T00.00.00.000Z")
    second = save(payload, "2026-01-02T00.00.00.000Z")
    assert first.stat().st_ino == second.stat().st_ino  # one file, two versions
    changed = {**payload, "sizes": torch.tensor([3, 3, 3, 3])}
    third = save(changed, "2026-01-03T00.00.00.000Z")
    assert third.stat().st_ino != second.stat().st_ino
    # Compared with the newest only: the payload again is written anew.
    fourth = save(payload, "2026-01-04T00.00.00.000Z")
    assert fourth.stat().st_ino not in (first.stat().st_ino, third.stat().st_ino)
    latest = TorchDataset(filepath=path, version=Version(None, None))
    _assert_same(latest.load(), payload)
    assert len(latest.available_versions()) == 4
    # Without the option every version is its own file.
    plain = TorchDataset(
        filepath=str(tmp_path / "plain.pt"), version=Version(None, "v1")
    )
    plain.save(payload)
    TorchDataset(filepath=str(tmp_path / "plain.pt"), version=Version(None, "v2")).save(
        payload
    )
    inodes = {p.stat().st_ino for p in (tmp_path / "plain.pt").glob("*/plain.pt")}
    assert len(inodes) == 2
