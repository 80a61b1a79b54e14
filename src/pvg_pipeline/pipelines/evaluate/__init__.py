"""The ``evaluate`` pipeline: trained agents on the test split."""

from pvg_pipeline.pipelines.evaluate.pipeline import create_pipeline

__all__ = ["create_pipeline"]
