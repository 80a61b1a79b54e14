"""Building a protocol's agents from architecture settings."""

from __future__ import annotations

from dataclasses import asdict, dataclass
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
    classifiers: bool = False,
) -> dict[str, nn.Module]:
    """One network per protocol agent (every prover uses the ``prover`` spec).

    With ``shared_body`` all neural agents share one body (GIN + transformer) and
    keep their own input projection and heads. ``classifiers`` gives every agent a
    decider head (solo-agent baselines classify the pair themselves).
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
            spec.architecture,
            shape,
            is_verifier=classifiers or name == VERIFIER,
            body=body,
        )
        if shared_body:
            body = agent.body
        agents[name] = agent
    return agents


def export_agents(
    agents: dict[str, nn.Module], specs: dict[str, AgentSpec], metadata: dict
) -> dict:
    """Weights plus everything needed to rebuild the agents (``weights_only``-safe)."""
    exported = {}
    for name, agent in agents.items():
        entry = {
            "kind": specs[name].kind,
            "architecture": asdict(specs[name].architecture),
        }
        if isinstance(agent, GraphIsomorphismAgent):
            entry |= {
                "is_verifier": agent.is_verifier,
                "max_nodes": agent.shape.max_nodes,
                "max_rounds": agent.shape.max_rounds,
                "visible_channels": list(agent.shape.visible_channels),
                "state_dict": agent.state_dict(),
            }
        exported[name] = entry
    return {"format": 1, **metadata, "agents": exported}


def import_agents(exported: dict) -> dict[str, nn.Module]:
    """Rebuild agents saved by :func:`export_agents` (evaluation mode)."""
    agents: dict[str, nn.Module] = {}
    for name, entry in exported["agents"].items():
        if entry["kind"] == "random":
            agents[name] = RandomAgent(is_verifier=name == VERIFIER)
            continue
        shape = GameShape(
            entry["max_nodes"], entry["max_rounds"], tuple(entry["visible_channels"])
        )
        agent = GraphIsomorphismAgent(
            AgentArchitecture(**entry["architecture"]), shape, entry["is_verifier"]
        )
        agent.load_state_dict(entry["state_dict"])
        agents[name] = agent.eval()
    return agents
