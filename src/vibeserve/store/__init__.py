"""The run store."""

from vibeserve.store.db import SCHEMA_VERSION, RunStore

__all__ = ["SCHEMA_VERSION", "RunStore"]
