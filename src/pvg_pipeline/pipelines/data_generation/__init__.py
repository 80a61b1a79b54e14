"""The ``data_generation`` pipeline: prime table and graph-pair datasets."""

from pvg_pipeline.pipelines.data_generation.pipeline import create_pipeline

__all__ = ["create_pipeline"]
