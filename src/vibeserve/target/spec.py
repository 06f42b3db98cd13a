"""The target contract: ``target.toml`` parsed into a typed ``TargetSpec``, with errors that name file and key."""

from __future__ import annotations

import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vibeserve.errors import TargetError

TARGET_FILE = "target.toml"
PLACEHOLDER = re.compile(r"\{([A-Za-z_][A-Za-z0-9_]*(?:\.[A-Za-z0-9_-]+)?)\}")

# Which placeholders each command may use. ``artifacts.<name>`` is allowed everywhere a command runs.
COMMON = {"python", "target", "artifacts"}
ALLOWED = {
    "setup": COMMON,
    "reference": COMMON | {"input", "output"},
    "deliverable.start": COMMON | {"port"},
    "deliverable.ready_url": {"port"},
    "accuracy": COMMON | {"url", "report", "port"},
    "probes": COMMON | {"url", "report", "port", "seed"},
    "benchmark": COMMON | {"url", "report", "port", "responses"},
}


class Section(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Hardware(Section):
    backend: Literal["cpu", "cuda", "rocm", "metal"]
    summary: str = ""


class Reference(Section):
    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=600, gt=0)
    # An input file (relative to the target) that `vibeserve validate` runs the reference on.
    sample_input: str | None = None


class Setup(Section):
    """Run once before validate or run when an artifact is missing (build or convert the weights)."""

    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=1800, gt=0)


class Deliverable(Section):
    start: list[str] = Field(min_length=1)
    ready_url: str
    ready_timeout_s: float = Field(default=180, gt=0)
    # Paths (relative to the deliverable) that agents may edit; empty means the whole deliverable.
    editable: list[str] = Field(default_factory=list)


class Accuracy(Section):
    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=600, gt=0)


class Probes(Section):
    kind: Literal["none", "openai-completions", "command"] = "none"
    count: int = Field(default=8, ge=0)
    command: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=600, gt=0)
    max_tokens: int = Field(default=16, gt=0)


class Benchmark(Section):
    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=900, gt=0)
    metric: str = Field(min_length=1)
    direction: Literal["max", "min"]
    unit: str = ""
    repeats: int = Field(default=3, ge=1)
    warmup: int = Field(default=0, ge=0)
    min_gain: float = Field(default=0.03, ge=0)
    # Answers the benchmark received (written to {responses}) that are compared with the reference after
    # each benchmark gate; 0 turns the output audit off.
    audit_samples: int = Field(default=4, ge=0)


class Budget(Section):
    rounds: int = Field(default=24, ge=0)
    retries_per_round: int = Field(default=3, ge=1)
    agent_timeout_s: float = Field(default=3600, gt=0)
    max_cost_usd: float = Field(default=50, ge=0)
    max_wall_h: float = Field(default=12, gt=0)
    plateau_rounds: int = Field(default=0, ge=0)  # 0: never stop on a plateau

    @field_validator("max_cost_usd", "max_wall_h")
    @classmethod
    def _finite(cls, v: float) -> float:
        if not math.isfinite(v):
            raise ValueError("must be a finite number")
        return v


class TargetSpec(Section):
    version: Literal[1]
    name: str = Field(pattern=r"^[a-z0-9][a-z0-9._-]*$")
    instructions: str = "INSTRUCTIONS.md"
    seed: str | None = None
    hardware: Hardware
    artifacts: dict[str, str] = Field(default_factory=dict)
    setup: Setup | None = None
    reference: Reference
    deliverable: Deliverable
    accuracy: Accuracy
    probes: Probes = Field(default_factory=Probes)
    benchmark: Benchmark
    budget: Budget = Field(default_factory=Budget)


class Target:
    """A loaded target: its spec plus the directory it lives in."""

    def __init__(self, root: Path, spec: TargetSpec):
        self.root, self.spec = root.resolve(), spec

    @property
    def file(self) -> Path:
        return self.root / TARGET_FILE

    def path(self, rel: str) -> Path:
        return (self.root / rel).resolve()

    @property
    def seed_dir(self) -> Path | None:
        return self.path(self.spec.seed) if self.spec.seed else None

    @property
    def instructions_text(self) -> str:
        return self.path(self.spec.instructions).read_text()

    def artifact_paths(self) -> dict[str, Path]:
        return {name: self.path(rel) for name, rel in self.spec.artifacts.items()}

    def missing_artifacts(self) -> list[str]:
        return [name for name, p in self.artifact_paths().items() if not p.exists()]

    def render(self, argv: list[str], **values: Any) -> list[str]:
        """Fill placeholders; ``python``, ``target`` and ``artifacts.*`` come from the target itself."""
        import sys

        known: dict[str, str] = {"python": sys.executable, "target": str(self.root)}
        known.update({f"artifacts.{n}": str(p) for n, p in self.artifact_paths().items()})
        known.update({k: str(v) for k, v in values.items()})

        def sub(m: re.Match) -> str:
            name = m.group(1)
            if name not in known:
                raise KeyError(name)
            return known[name]

        return [PLACEHOLDER.sub(sub, a) for a in argv]


def _loc(err: dict) -> str:
    return ".".join(str(p) for p in err["loc"])


def _explain(err: dict) -> str:
    kind = err["type"]
    if kind == "extra_forbidden":
        return "unknown key (check its spelling against the target contract)"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{err['msg'].lower()} (got {err.get('input')!r})"
    return f"{err['msg']} (got {err.get('input')!r})"


def _check_placeholders(spec: TargetSpec, file: str) -> None:
    commands: dict[str, list[str]] = {
        "reference.command": spec.reference.command,
        "deliverable.start": spec.deliverable.start,
        "deliverable.ready_url": [spec.deliverable.ready_url],
        "accuracy.command": spec.accuracy.command,
        "benchmark.command": spec.benchmark.command,
    }
    if spec.setup:
        commands["setup.command"] = spec.setup.command
    if spec.probes.command:
        commands["probes.command"] = spec.probes.command
    for key, argv in commands.items():
        allowed = ALLOWED[key.removesuffix(".command")]
        for arg in argv:
            for name in PLACEHOLDER.findall(arg):
                head, _, tail = name.partition(".")
                if head == "artifacts" and tail:
                    if tail not in spec.artifacts:
                        raise TargetError(file, key, f"placeholder {{{name}}} names no entry of [artifacts]")
                    continue
                if name not in allowed:
                    raise TargetError(
                        file, key, f"unknown placeholder {{{name}}}; allowed here: {', '.join(sorted(allowed))}"
                    )
    if spec.probes.kind == "command" and not spec.probes.command:
        raise TargetError(file, "probes.command", 'kind = "command" needs a command')


def load_target(root: Path | str) -> Target:
    """Parse and check ``root/target.toml``: schema, placeholders and that every named path exists."""
    root = Path(root)
    file = root / TARGET_FILE
    if not root.is_dir():
        raise TargetError(str(root), "", "is not a directory holding a target (expected target.toml inside)")
    if not file.is_file():
        raise TargetError(str(file), "", "not found; create one with `vibeserve init DIR`")
    try:
        data = tomllib.loads(file.read_text())
    except tomllib.TOMLDecodeError as e:
        raise TargetError(str(file), "", f"malformed TOML: {e}") from e
    try:
        spec = TargetSpec.model_validate(data)
    except ValidationError as e:
        err = e.errors()[0]
        raise TargetError(str(file), _loc(err), _explain(err)) from None
    _check_placeholders(spec, str(file))
    target = Target(root, spec)
    if not target.path(spec.instructions).is_file():
        raise TargetError(str(file), "instructions", f"file {spec.instructions!r} does not exist")
    if spec.reference.sample_input and not target.path(spec.reference.sample_input).is_file():
        raise TargetError(str(file), "reference.sample_input", f"file {spec.reference.sample_input!r} does not exist")
    if spec.seed and not target.path(spec.seed).is_dir():
        raise TargetError(str(file), "seed", f"directory {spec.seed!r} does not exist")
    if not spec.setup:
        for name, rel in spec.artifacts.items():
            if not target.path(rel).exists():
                raise TargetError(str(file), f"artifacts.{name}", f"path {rel!r} does not exist")
    for key, argv in (("reference.command", spec.reference.command), ("accuracy.command", spec.accuracy.command),
                      ("benchmark.command", spec.benchmark.command)):
        _check_script(target, key, argv)
    return target


def _check_script(target: Target, key: str, argv: list[str]) -> None:
    """A command's program, or the script a ``python`` runs, must exist (and be executable if run directly)."""
    import os
    import shutil

    prog = argv[0]
    if prog in ("python", "python3", "{python}"):
        if len(argv) > 1 and not argv[1].startswith("-") and "{" not in argv[1]:
            script = target.path(argv[1])
            if not script.is_file():
                raise TargetError(str(target.file), key, f"script {argv[1]!r} does not exist in the target")
        return
    if "/" in prog and "{" not in prog:
        path = target.path(prog)
        if not path.is_file():
            raise TargetError(str(target.file), key, f"program {prog!r} does not exist in the target")
        if not os.access(path, os.X_OK):
            raise TargetError(str(target.file), key, f"program {prog!r} is not executable (chmod +x {prog})")
    elif "{" not in prog and shutil.which(prog) is None:
        raise TargetError(str(target.file), key, f"program {prog!r} is not on PATH")


def finite_metric(report: Any, name: str) -> float:
    """The declared metric from a benchmark report; dotted names reach into nested objects."""
    node = report
    for part in name.split("."):
        if not isinstance(node, dict) or part not in node:
            raise KeyError(name)
        node = node[part]
    if isinstance(node, bool) or not isinstance(node, int | float):
        raise ValueError(f"{name} is {node!r}, not a number")
    value = float(node)
    if not math.isfinite(value):
        raise ValueError(f"{name} is {value}, not a finite number")
    return value
