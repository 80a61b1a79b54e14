"""Custom Kedro datasets of the project."""

from pvg_pipeline.datasets.torch_dataset import TorchDataset
from pvg_pipeline.datasets.versions_dataset import VersionsDataset

__all__ = ["TorchDataset", "VersionsDataset"]
