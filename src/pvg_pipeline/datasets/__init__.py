"""Custom Kedro datasets of the project."""

from pvg_pipeline.datasets.torch_dataset import TorchDataset

__all__ = ["TorchDataset"]
