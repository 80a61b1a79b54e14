"""Benchmark: generating the graph-isomorphism dataset (train split of an env).

Usage::

    .venv/bin/python benchmarks/data_generation.py [--env gi_ppo] [--device cpu]
        [--baseline benchmarks/results/baseline_data_generation.json]

Prints end-to-end seconds, pairs/s, pool graphs refined/s, candidate pairs
scored/s and peak memory, and writes a JSON result.
"""

from __future__ import annotations

import time

import torch
from _common import parser, peak_memory, report

from pvg_pipeline.config import load_parameters
from pvg_pipeline.params import ProjectParameters, parse_parameters
from pvg_pipeline.pvg.device import resolve_device
from pvg_pipeline.pvg.graphs.generation import (
    GenerationStats,
    generate_graph_pairs,
)
from pvg_pipeline.pvg.graphs.primes import first_primes


def main() -> None:
    """Run the benchmark."""
    args = parser(__doc__.splitlines()[0]).parse_args()
    params = parse_parameters(ProjectParameters, load_parameters(args.env))
    config = params.data_generation
    device = resolve_device(args.device)
    start = time.perf_counter()
    primes = first_primes(config.hash_size)
    prime_seconds = time.perf_counter() - start
    spec = config.generation_spec(config.train)
    stats = GenerationStats()
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    start = time.perf_counter()
    pairs = generate_graph_pairs(spec, primes, device, progress=False, stats=stats)
    if device.type == "cuda":
        torch.cuda.synchronize(device)
    seconds = time.perf_counter() - start
    assert len(pairs["sizes"]) == spec.num_pairs
    figures = {
        "env": args.env,
        "pairs": spec.num_pairs,
        "prime_table_seconds": prime_seconds,
        "generation_seconds": seconds,
        "pairs_per_second": spec.num_pairs / seconds,
        "pools_drawn": stats.pools,
        "graphs_refined_per_second": stats.graphs_refined / seconds,
        "candidate_pairs_scored_per_second": stats.candidate_pairs / seconds,
        **peak_memory(device),
    }
    report("data_generation", figures, args)


if __name__ == "__main__":
    main()
