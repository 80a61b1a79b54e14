"""The ``compare`` pipeline: every evaluated run side by side."""

from pvg_pipeline.pipelines.compare.pipeline import create_pipeline

__all__ = ["create_pipeline"]
