"""Fused CPU kernels for the graph-isomorphism agents and the PPO loss.

The agents' layers are tiny, so on a CPU PyTorch spends most of their time on
per-operation overhead; each kernel here does one layer's work in one pass, in
cache (``docs/performance.md`` gives the figures). :mod:`.kernels` builds and loads
the C++ extension, :mod:`.layers` plugs the kernels into a plain agent
(:func:`~.layers.accelerate_agent`), :mod:`.loss` is the PPO loss for the
trainer's eager update.
"""
