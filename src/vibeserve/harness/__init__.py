"""Harness adapters, imported lazily by name so an unused adapter costs nothing."""

from __future__ import annotations

import importlib
from typing import Any

from vibeserve.errors import HarnessError
from vibeserve.harness.base import Harness
from vibeserve.sandbox import Sandbox, SandboxMode

ADAPTERS = {
    "scripted": "vibeserve.harness.scripted:ScriptedHarness",
    "codex": "vibeserve.harness.codex:CodexHarness",
    "claude": "vibeserve.harness.claude:ClaudeHarness",
    "openai": "vibeserve.harness.openai_agent:OpenAIHarness",
}


def make_harness(name: str, sandbox: Sandbox | None = None, **options: Any) -> Harness:
    """Build the harness called ``name`` with its options; its agents run in ``sandbox`` (default: none)."""
    if name not in ADAPTERS:
        raise HarnessError(f"unknown harness {name!r}; choose one of: {', '.join(sorted(ADAPTERS))}")
    module, _, cls = ADAPTERS[name].partition(":")
    adapter = getattr(importlib.import_module(module), cls)
    try:
        return adapter(**options, sandbox=sandbox or Sandbox(SandboxMode.NONE))
    except TypeError as e:
        hint = " (give it with --trajectory DIR)" if name == "scripted" else ""
        raise HarnessError(f"the {name} harness cannot be built from options {sorted(options)}: {e}{hint}") from None


__all__ = ["ADAPTERS", "Harness", "make_harness"]
