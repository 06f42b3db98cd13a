"""Each role's typed reply and its prompt, rendered from a Jinja template under ``prompts/``."""

from __future__ import annotations

from functools import cache
from typing import Any, Literal

import jinja2
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vibeserve.types import Role


class Reply(BaseModel):
    model_config = ConfigDict(extra="forbid")


class OrchestratorReply(Reply):
    """The pick itself goes through the ``pick_next`` MCP tool; the reply says why."""

    summary: str = Field(min_length=1)


class ImplementerReply(Reply):
    summary: str = Field(min_length=1, description="what was changed and why")
    notes: str = Field(default="", description="anything the judge or the next round should know")


class JudgeReply(Reply):
    verdict: Literal["pass", "fail"]
    reasons: str = Field(min_length=1, description="why; on fail, what the implementer must fix")
    reward_hacking: bool = Field(description="true if the change games the checks instead of serving the model")
    criteria_met: bool = Field(description="true if every acceptance criterion of the task is met")


class EvaluatorReply(Reply):
    analysis: str = Field(min_length=1, description="where the time goes, from the numbers and profiles")
    hints: list[str] = Field(default_factory=list, description="concrete next optimizations, best first")


REPLIES: dict[Role, type[Reply]] = {
    Role.ORCHESTRATOR: OrchestratorReply,
    Role.IMPLEMENTER: ImplementerReply,
    Role.JUDGE: JudgeReply,
    Role.EVALUATOR: EvaluatorReply,
}


def reply_schema(role: Role) -> dict[str, Any]:
    """The JSON schema a harness passes to its agent (strict: every property required, no extras)."""
    schema = REPLIES[role].model_json_schema()
    schema["required"] = sorted(schema["properties"])
    schema["additionalProperties"] = False
    return schema


def parse_reply(role: Role, reply: dict[str, Any] | None) -> Reply:
    """Validate an agent's reply; raises ``ReplyInvalid`` with a message to send back to the agent."""
    if reply is None:
        raise ReplyInvalid("no structured reply was returned; end with a reply that matches the schema")
    try:
        return REPLIES[role].model_validate(reply)
    except ValidationError as e:
        problems = "; ".join(f"{'.'.join(map(str, x['loc'])) or '(root)'}: {x['msg']}" for x in e.errors())
        raise ReplyInvalid(f"the reply does not match the {role} schema: {problems}") from None


class ReplyInvalid(ValueError):
    """An agent reply that failed its schema; it is retried with this message, never guessed."""


@cache
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.PackageLoader("vibeserve", "prompts"),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
    )


def render_prompt(role: Role, **context: Any) -> str:
    """Render ``prompts/<role>.j2``; a missing variable is an error, never an empty string."""
    return _env().get_template(f"{role}.j2").render(**context)


def render_brief(name: str, **context: Any) -> str:
    """Render a policy's task brief, ``prompts/brief_<name>.j2``, as strictly as a role's prompt."""
    return _env().get_template(f"brief_{name}.j2").render(**context)
