"""pvg_pipeline: prover-verifier games (neural interactive proofs) with Kedro."""

__version__ = "0.1.0"
