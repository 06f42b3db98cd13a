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


class EngineLimits(BaseModel):
    """``[limits]`` keys that differ for one engine's trials (a stock engine is not a candidate: vLLM hands
    work to its workers through shared-memory files far larger than a candidate's logs may grow)."""

    model_config = ConfigDict(extra="forbid")
    memory_mb: int | None = Field(default=None, gt=0)
    processes: int | None = Field(default=None, gt=0)
    log_mb: int | None = Field(default=None, gt=0)
    tmp_mb: int | None = Field(default=None, gt=0)


class Engine(BaseModel):
    """One stock engine: how to start it and the settings to search."""

    model_config = ConfigDict(extra="forbid")
    start: list[str] = Field(min_length=1)
    ready_url: str | None = None  # unset: [deliverable].ready_url
    ready_timeout_s: float | None = Field(default=None, gt=0)  # unset: [deliverable].ready_timeout_s
    readable: list[str] = Field(default_factory=list)  # more paths the engine reads in the candidate sandbox
    check: list[str] | None = None  # run once before the run is made: non-zero = the engine is not usable here
    limits: EngineLimits | None = None  # unset: the target's [limits]
    params: dict[str, Param] = Field(default_factory=dict)


class Baseline(Engine):
    """The ``[baseline]`` table (docs/targets.md): the default engine, and others in ``[baseline.engines.NAME]``."""

    sampler: Literal["tpe", "random"] = "tpe"
    seed_runs: int = Field(default=3, ge=0)  # the seed deliverable measured this many times (best-of-N)
    engines: dict[str, Engine] = Field(default_factory=dict)

    def engine(self, name: str | None) -> Engine:
        """The engine ``vibeserve baseline --engine NAME`` searches; None: the table's own."""
        if name is None:
            return self
        if name not in self.engines:
            known = ", ".join(sorted(self.engines)) or "none besides the default"
            raise KeyError(f"no [baseline.engines.{name}] in the target (engines: {known})")
        return self.engines[name]


def space_problems(baseline: Baseline, artifacts: dict[str, str]) -> list[tuple[str, str]]:
    """For the default engine and each other one: parameter names that are usable placeholders, and
    placeholders that name something known."""
    problems = _engine_problems("baseline", baseline, artifacts)
    for name, engine in baseline.engines.items():
        if not NAME.match(name):
            problems.append((f"baseline.engines.{name}", "an engine's name must be lowercase letters, digits and "
                             "underscores"))
        problems += _engine_problems(f"baseline.engines.{name}", engine, artifacts)
    return problems


def _engine_problems(where: str, engine: Engine, artifacts: dict[str, str]) -> list[tuple[str, str]]:
    from vibeserve.target.spec import PLACEHOLDER

    problems = []
    for name in engine.params:
        if not NAME.match(name) or name in RESERVED:
            problems.append((f"{where}.params.{name}", "a parameter's name must be lowercase letters, digits and "
                             f"underscores, and none of {', '.join(sorted(RESERVED))}"))
    fields = {"start": (engine.start, RESERVED | set(engine.params)), "ready_url": ([engine.ready_url or ""], RESERVED),
              "readable": (engine.readable, {"target"}), "check": (engine.check or [], {"target", "python"})}
    for key, (args, known) in fields.items():
        for arg in args:
            for name in PLACEHOLDER.findall(arg):
                head, _, tail = name.partition(".")
                if head == "artifacts" and tail in artifacts or name in known:
                    continue
                allowed = ", ".join([*sorted(known), "artifacts.NAME"])
                problems.append((f"{where}.{key}", f"unknown placeholder {{{name}}}; allowed here: {allowed}"))
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
