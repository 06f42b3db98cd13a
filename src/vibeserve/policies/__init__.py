"""Outer-loop policies, built by name."""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from vibeserve.errors import VibeserveError
from vibeserve.policies.base import Admits, Policy, PolicyContext
from vibeserve.store import RunStore

POLICIES = ("issue-tracker", "ralph", "evolutionary")


def check_policy_options(name: str, options: dict[str, Any]) -> Any:
    """The policy's options validated (None for a policy without any); errors name the option to fix."""
    if name not in POLICIES:
        raise VibeserveError(f"unknown policy {name!r}; choose one of: {', '.join(POLICIES)}")
    if name != "evolutionary":
        if options:
            raise VibeserveError(f"policy {name} takes no options, but got {', '.join(sorted(options))}; "
                                 "drop --policy-option (or [policy_options] in the run config)")
        return None
    from vibeserve.policies.evolutionary import EvolutionaryOptions

    try:
        return EvolutionaryOptions.model_validate(options)
    except ValidationError as e:
        known = ", ".join(EvolutionaryOptions.model_fields)
        problems = "; ".join(f"{'.'.join(str(p) for p in err['loc']) or 'options'}: {err['msg']}"
                             for err in e.errors())
        raise VibeserveError(f"policy option for {name}: {problems} (options: {known})") from None


def make_policy(name: str, store: RunStore, options: dict[str, Any] | None = None) -> Policy:
    checked = check_policy_options(name, options or {})
    if name == "issue-tracker":
        from vibeserve.policies.issue_tracker import IssueTrackerPolicy

        return IssueTrackerPolicy(store)
    if name == "ralph":
        from vibeserve.policies.ralph import RalphPolicy

        return RalphPolicy(store)
    from vibeserve.policies.evolutionary import EvolutionaryPolicy

    return EvolutionaryPolicy(store, checked)


__all__ = ["POLICIES", "Admits", "Policy", "PolicyContext", "check_policy_options", "make_policy"]
