"""Write a Kedro environment's resolved settings and data to one file.

Usage::

    .venv/bin/python benchmarks/make_bundle.py --env gi_ppo --output bundle.pt

The benchmarks accept ``--bundle bundle.pt`` instead of ``--env``: a machine that
has only torch, tensordict and torchrl (such as a bare GPU machine) can then run them
without Kedro, pydantic or primesieve.
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from _common import bundle_settings


def main() -> None:
    """Write the bundle."""
    options = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    options.add_argument("--env", default="gi_ppo")
    options.add_argument("--train-pairs", type=int, default=10_000)
    options.add_argument("--test-pairs", type=int, default=1_000)
    options.add_argument("--output", type=Path, required=True)
    args = options.parse_args()
    settings = bundle_settings(args.env, args.train_pairs, args.test_pairs)
    args.output.parent.mkdir(parents=True, exist_ok=True)
    torch.save(settings, args.output)
    print(f"bundle of {args.env} written to {args.output}")


if __name__ == "__main__":
    main()
