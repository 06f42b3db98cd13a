"""Outer-loop policies, built by name."""

from __future__ import annotations

from vibeserve.errors import VibeserveError
from vibeserve.policies.base import Policy, PolicyContext
from vibeserve.store import RunStore

POLICIES = ("issue-tracker", "ralph")


def make_policy(name: str, store: RunStore) -> Policy:
    if name == "issue-tracker":
        from vibeserve.policies.issue_tracker import IssueTrackerPolicy

        return IssueTrackerPolicy(store)
    if name == "ralph":
        from vibeserve.policies.ralph import RalphPolicy

        return RalphPolicy(store)
    raise VibeserveError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")


__all__ = ["POLICIES", "Policy", "PolicyContext", "make_policy"]
