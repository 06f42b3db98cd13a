"""Harness adapters, imported lazily by name so an unused adapter costs nothing."""

from __future__ import annotations

import importlib
import inspect
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


def options_of(name: str) -> dict[str, inspect.Parameter]:
    """The options a harness takes (its constructor's keyword parameters, less the sandbox)."""
    module, _, cls = ADAPTERS[name].partition(":")
    adapter = getattr(importlib.import_module(module), cls)
    return {k: p for k, p in inspect.signature(adapter).parameters.items()
            if k != "sandbox" and p.kind in (p.KEYWORD_ONLY, p.POSITIONAL_OR_KEYWORD)}


def make_harness(name: str, sandbox: Sandbox | None = None, **options: Any) -> Harness:
    """Build the harness called ``name`` with its options; its agents run in ``sandbox`` (default: none).

    An option the harness does not take is an error naming the harness and the options it knows."""
    if name not in ADAPTERS:
        raise HarnessError(f"unknown harness {name!r}; choose one of: {', '.join(sorted(ADAPTERS))}")
    known = options_of(name)
    unknown = sorted(set(options) - set(known))
    if unknown:
        raise HarnessError(f"the {name} harness has no option {', '.join(map(repr, unknown))}; its options are: "
                           f"{', '.join(sorted(known)) or 'none'} (-O KEY=VALUE, or [roles.ROLE.options] in --config)")
    missing = sorted(k for k, p in known.items() if p.default is inspect.Parameter.empty and k not in options)
    if missing:
        hint = " (give it with --trajectory DIR)" if name == "scripted" else ""
        raise HarnessError(f"the {name} harness needs option {', '.join(missing)}{hint}")
    module, _, cls = ADAPTERS[name].partition(":")
    adapter = getattr(importlib.import_module(module), cls)
    try:
        return adapter(**options, sandbox=sandbox or Sandbox(SandboxMode.NONE))
    except (TypeError, ValueError) as e:
        raise HarnessError(f"the {name} harness cannot be built from options {sorted(options)}: {e}") from None


__all__ = ["ADAPTERS", "Harness", "make_harness"]
