"""``PolicyCtx``: what the engine lends a policy for one round (the ``PolicyContext`` protocol)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from vibeserve.types import Role

if TYPE_CHECKING:
    from vibeserve.loop.engine import Engine


class PolicyCtx:
    """The ``PolicyContext`` a policy gets for one round."""

    def __init__(self, engine: Engine, n: int):
        self.engine, self.round = engine, n

    def ask(self, role: Role, key: str, prompt: str, workdir: Path, validate: Any = None) -> tuple[Any, str]:
        return self.engine.agents.ask(role, key, prompt, workdir, self.round, 0, validate=validate)

    def prompt_context(self) -> dict[str, Any]:
        return self.engine.prompt_context(self.round)

    def revert(self, commit: str, reason: str) -> None:
        rounds = {r.candidate: r.metric for r in self.engine.store.round_records() if r.candidate}
        self.engine.workspace.set_best(commit)
        self.engine.store.update_run(best_commit=commit, best_metric=rounds.get(commit))
        self.engine.progress(f"reverted the run branch to {commit[:10]}: {reason}")

    @property
    def scratch(self) -> Path:
        path = self.engine.dir / "scratch"
        path.mkdir(exist_ok=True)
        return path
