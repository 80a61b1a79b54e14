"""Project pipelines."""

from __future__ import annotations

from kedro.pipeline import Pipeline

from pvg_pipeline.pipelines import compare, data_generation, evaluate, train


def register_pipelines() -> dict[str, Pipeline]:
    """Register the project's pipelines.

    Returns
    -------
    dict
        Pipeline name to ``Pipeline``; ``__default__`` runs data -> train.
    """
    pipelines = {
        "data_generation": data_generation.create_pipeline(),
        "train": train.create_pipeline(),
        "evaluate": evaluate.create_pipeline(),
        "compare": compare.create_pipeline(),
    }
    pipelines["__default__"] = (
        pipelines["data_generation"] + pipelines["train"] + pipelines["evaluate"]
    )
    return pipelines
