"""The local Goofish platform: IM WebSocket, MTOP gateway, passport, image upload, an OpenAI-compatible endpoint
and a control API, on one loopback port (PROTOCOL.md §19). It imports only the codec (`protocol`): it is the
other side of the wire and shares nothing else with the client.
"""

from .app import MessageSpec, Simulator
from .faults import FaultKind
from .runner import run_simulator
from .world import UnknownSeller, WorldError

__all__ = ["FaultKind", "MessageSpec", "Simulator", "UnknownSeller", "WorldError", "run_simulator"]
