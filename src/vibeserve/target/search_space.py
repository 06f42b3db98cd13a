"""``[baseline]``: the control arm's search space, a stock engine's start command and the settings to try.

``vibeserve baseline`` starts the stock engine with ``start``, each ``{name}`` of a parameter replaced by the
value a trial picked; an argument that comes out empty is dropped, so a choice of ``""`` leaves a flag out.
"""

from __future__ import annotations

import re
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

Value = str | int | float | bool
NAME = re.compile(r"^[a-z_][a-z0-9_]*$")
RESERVED = {"python", "target", "artifacts", "port"}


class Param(BaseModel):
    """One setting: a list of ``choices``, or a number between ``low`` and ``high`` (integers if both are)."""

    model_config = ConfigDict(extra="forbid")
    choices: list[Value] | None = None
    low: float | int | None = None
    high: float | int | None = None
    step: float | int | None = None  # a grid step for a numeric range
    log: bool = False  # draw a numeric range on a log scale

    @model_validator(mode="after")
    def _one_kind(self) -> Param:
        if self.choices is not None:
            if not self.choices:
                raise ValueError("choices must list at least one value")
            if self.low is not None or self.high is not None:
                raise ValueError("give either choices or low and high, not both")
            return self
        if self.low is None or self.high is None:
            raise ValueError("give choices, or both low and high")
        if self.low > self.high:
            raise ValueError(f"low ({self.low}) is above high ({self.high})")
        if self.log and self.low <= 0:
            raise ValueError("log = true needs low above 0")
        return self

    @property
    def integer(self) -> bool:
        return isinstance(self.low, int) and isinstance(self.high, int) and isinstance(self.step or 1, int)


class Baseline(BaseModel):
    """The ``[baseline]`` table (docs/targets.md)."""

    model_config = ConfigDict(extra="forbid")
    start: list[str] = Field(min_length=1)
    ready_url: str | None = None  # unset: [deliverable].ready_url
    ready_timeout_s: float | None = Field(default=None, gt=0)  # unset: [deliverable].ready_timeout_s
    sampler: Literal["tpe", "random"] = "tpe"
    seed_runs: int = Field(default=3, ge=0)  # the seed deliverable measured this many times (best-of-N)
    params: dict[str, Param] = Field(default_factory=dict)


def space_problems(baseline: Baseline, artifacts: dict[str, str]) -> list[tuple[str, str]]:
    """Parameter names that are usable placeholders, and placeholders in ``start`` that name something known."""
    from vibeserve.target.spec import PLACEHOLDER

    problems = []
    for name in baseline.params:
        if not NAME.match(name) or name in RESERVED:
            problems.append((f"baseline.params.{name}", "a parameter's name must be lowercase letters, digits and "
                             f"underscores, and none of {', '.join(sorted(RESERVED))}"))
    known = RESERVED | set(baseline.params)
    for arg in [*baseline.start, baseline.ready_url or ""]:
        for name in PLACEHOLDER.findall(arg):
            head, _, tail = name.partition(".")
            if head == "artifacts" and tail in artifacts:
                continue
            if name not in known:
                problems.append(("baseline.start", f"unknown placeholder {{{name}}}; allowed here: port, python, "
                                 f"target, artifacts.NAME and the parameters ({', '.join(baseline.params) or 'none'})"))
    return problems


def with_values(argv: list[str], values: dict[str, Value]) -> list[str]:
    """``argv`` with each parameter's ``{name}`` filled in and arguments left empty dropped; other placeholders
    (``{port}``, ``{target}`` ...) stay for the server to fill."""
    def text(v: Value) -> str:
        return ("true" if v else "false") if isinstance(v, bool) else str(v)

    out = []
    for arg in argv:
        for name, value in values.items():
            arg = arg.replace(f"{{{name}}}", text(value))
        if arg != "":
            out.append(arg)
    return out
