"""The trainer's fast paths: the fixed-shape update (flat parameters, fused Adam,
agents side by side) and, on a CUDA GPU, everything captured as CUDA graphs.

Each computes what the plain trainer computes (tested against it);
:func:`~.paths.execution_paths` is the one place that chooses them for a run.
"""
