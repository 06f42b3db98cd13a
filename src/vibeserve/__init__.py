"""vibeserve: a loop of coding agents that builds a bespoke LLM serving system for one target."""

__version__ = "0.1.0"
