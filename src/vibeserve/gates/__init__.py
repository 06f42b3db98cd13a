"""Gates the framework runs itself: the candidate server, the accuracy checker and the benchmark."""

from vibeserve.gates.checks import accuracy_gate, benchmark_gate
from vibeserve.gates.gain import improvement, improves, is_gain
from vibeserve.gates.server import CandidateServer, ServerNotReady

__all__ = [
    "CandidateServer", "ServerNotReady", "accuracy_gate", "benchmark_gate", "improvement", "improves", "is_gain",
]
