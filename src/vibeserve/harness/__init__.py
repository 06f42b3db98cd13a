"""Harness adapters, imported lazily by name so an unused adapter costs nothing."""

from __future__ import annotations

import importlib
from typing import Any

from vibeserve.errors import HarnessError
from vibeserve.harness.base import Harness

ADAPTERS = {
    "scripted": "vibeserve.harness.scripted:ScriptedHarness",
}


def make_harness(name: str, **options: Any) -> Harness:
    """Build the harness called ``name`` with its options."""
    if name not in ADAPTERS:
        raise HarnessError(f"unknown harness {name!r}; choose one of: {', '.join(sorted(ADAPTERS))}")
    module, _, cls = ADAPTERS[name].partition(":")
    return getattr(importlib.import_module(module), cls)(**options)


__all__ = ["ADAPTERS", "Harness", "make_harness"]
