"""Building a protocol's agents from architecture settings."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

from torch import nn

from pvg_pipeline.pvg.protocols import VERIFIER, Protocol
from pvg_pipeline.pvg.scenarios.graph_isomorphism.agents import (
    AgentArchitecture,
    AgentBody,
    GameShape,
    GraphIsomorphismAgent,
)
from pvg_pipeline.pvg.scenarios.graph_isomorphism.policy import RandomAgent


@dataclass(frozen=True)
class AgentSpec:
    """Kind and architecture of an agent."""

    kind: Literal["neural", "random"] = "neural"
    architecture: AgentArchitecture = AgentArchitecture()


def build_agents(
    protocol: Protocol,
    prover: AgentSpec,
    verifier: AgentSpec,
    max_nodes: int,
    shared_body: bool = False,
) -> dict[str, nn.Module]:
    """One network per protocol agent (every prover uses the ``prover`` spec).

    With ``shared_body`` all neural agents share one body (GIN + transformer) and
    keep their own input projection and heads.
    """
    body: AgentBody | None = None
    agents: dict[str, nn.Module] = {}
    for index, name in enumerate(protocol.agents):
        spec = verifier if name == VERIFIER else prover
        if spec.kind == "random":
            agents[name] = RandomAgent(is_verifier=name == VERIFIER)
            continue
        visible = tuple(c for c, sees in enumerate(protocol.visibility[index]) if sees)
        shape = GameShape(max_nodes, protocol.max_rounds, visible)
        agent = GraphIsomorphismAgent(
            spec.architecture, shape, is_verifier=name == VERIFIER, body=body
        )
        if shared_body:
            body = agent.body
        agents[name] = agent
    return agents
