"""The ``train`` pipeline: PPO or solo-agent training of a protocol's agents."""

from pvg_pipeline.pipelines.train.pipeline import create_pipeline

__all__ = ["create_pipeline"]
