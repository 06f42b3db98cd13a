"""A local fake model server speaking OpenAI Responses, OpenAI Chat Completions and Anthropic Messages.

It replays scripted assistant turns so the real Codex CLI, the real Claude Code CLI and the built-in
OpenAI-SDK agent can run in tests without keys or network. See ``script`` for the turn format.
"""

from vibeserve.testing.fake_llm.script import MALFORMED_REPLY, Script, ToolCall, Turn, Usage
from vibeserve.testing.fake_llm.server import FakeLLM, FakeLLMApp, RecordedRequest

__all__ = [
    "MALFORMED_REPLY",
    "FakeLLM",
    "FakeLLMApp",
    "RecordedRequest",
    "Script",
    "ToolCall",
    "Turn",
    "Usage",
]
