"""The target contract: ``target.toml`` parsed into a typed ``TargetSpec``, with errors that name file and key."""

from __future__ import annotations

import difflib
import json
import math
import re
import tomllib
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from vibeserve.errors import TargetError
from vibeserve.target.search_space import Baseline, space_problems

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
    # Parallel runs (--parallel): how many accuracy/probe gates may run at once (a benchmark always runs
    # alone), and what one gate needs from a Ray cluster (--ray), as Ray resources: {GPU = 1}, {CPU = 4}.
    concurrent_checks: int = Field(default=1, ge=1)
    gate_resources: dict[str, float] = Field(default_factory=dict)

    def resources(self) -> dict[str, float]:
        """What one gate asks a Ray cluster for: ``gate_resources``, else a GPU on cuda/rocm, else a CPU."""
        if self.gate_resources:
            return dict(self.gate_resources)
        return {"GPU": 1.0} if self.backend in ("cuda", "rocm") else {"CPU": 1.0}

    @field_validator("gate_resources")
    @classmethod
    def _positive(cls, v: dict[str, float]) -> dict[str, float]:
        bad = [k for k, n in v.items() if not (n > 0 and math.isfinite(n))]
        if bad:
            raise ValueError(f"each resource needs a positive amount; fix {', '.join(bad)}")
        return v


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
    # The endpoints the openai-completions probes call: /v1/completions and /v1/chat/completions.
    kinds: list[Literal["completion", "chat"]] = Field(default_factory=lambda: ["completion", "chat"], min_length=1)
    # A JSONL file of chat requests with extra body fields: the probes are drawn from it instead.
    requests: str | None = None


class Objective(Section):
    """A further number read from the same benchmark report, beside the primary ``metric``."""

    metric: str = Field(min_length=1)
    direction: Literal["max", "min"]
    band: float = Field(default=0.05, ge=0)  # relative noise band: differences inside it are no gain and no loss
    unit: str = ""

    @field_validator("band")
    @classmethod
    def _finite_band(cls, v: float) -> float:
        if not math.isfinite(v) or v >= 10:
            raise ValueError("must be a finite relative band below 10 (0.05 = 5%)")
        return v


class Benchmark(Section):
    command: list[str] = Field(min_length=1)
    timeout_s: float = Field(default=900, gt=0)
    metric: str = Field(min_length=1)
    direction: Literal["max", "min"]
    unit: str = ""
    repeats: int = Field(default=3, ge=1)
    # Untimed runs on the started server before the timed repeats: caches, lazy loading and JIT warm up.
    warmup: int = Field(default=1, ge=0)
    min_gain: float = Field(default=0.03, ge=0)
    # The output audit: after the repeats, one of them is chosen by the run's secret seed and its answers
    # (written to {responses}) are compared with the reference. Unset: every answer of that repeat; a
    # number: that many of them, sampled; 0: no audit.
    audit_samples: int | None = Field(default=None, ge=0)
    # Other work on the machine (in cores busy outside the gate) above which a measurement is flagged.
    max_background_load: float = Field(default=0.5, ge=0)
    # Further objectives ([[benchmark.objectives]]): with any, keeping is decided by dominance with noise
    # bands over all of them, the primary's band being min_gain (docs/targets.md, "The gain rule").
    objectives: list[Objective] = Field(default_factory=list)
    # Paired measurement: the candidate and the best benchmarked alternately, kept by the interval of their
    # ratio at this confidence (docs/targets.md, "Paired measurement").
    paired: bool = False
    confidence: float = Field(default=0.95, gt=0, lt=1)


class Limits(Section):
    """What a candidate server may use; a candidate that passes a limit fails its gate, naming the limit."""

    # Address space per process; unset: 3/4 of the machine's memory on cpu, no limit on accelerators
    # (their drivers reserve far more address space than they use).
    memory_mb: int | None = Field(default=None, gt=0)
    processes: int = Field(default=1024, gt=0)  # processes and threads of the candidate together
    log_mb: int = Field(default=64, gt=0)  # the largest file (its logs included) the candidate may write
    tmp_mb: int = Field(default=1024, gt=0)  # its private /tmp


class Model(Section):
    """What the model is, in words the skills library matches on."""

    family: str = ""  # e.g. "llama", "qwen3", "hybrid-linear-attention", "moonshine", "janus"
    summary: str = ""


class Workload(Section):
    """The workload's shape, in words the skills library matches on."""

    tags: list[str] = Field(default_factory=list)  # e.g. ["chat", "throughput", "shared-prefix", "streaming"]
    summary: str = ""


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
    limits: Limits = Field(default_factory=Limits)
    model: Model = Field(default_factory=Model)
    workload: Workload = Field(default_factory=Workload)
    baseline: Baseline | None = None  # the control arm's search space (vibeserve baseline)


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
        return "unknown key (check its spelling against the target contract, docs/targets.md)"
    if kind == "missing":
        return "required key is missing"
    if kind == "literal_error":
        return f"{err['msg'].lower()} (got {err.get('input')!r})"
    return f"{err['msg']} (got {err.get('input')!r})"


def _unknown(key: str, known: list[str], table: bool) -> str:
    close = difflib.get_close_matches(key.rsplit(".", 1)[-1], known, n=1, cutoff=0.6)
    what = f"unknown table [{key}]" if table else "unknown key"
    hint = f" (did you mean {f'[{close[0]}]' if table else repr(close[0])}?)" if close else ""
    return f"{what}{hint}; see docs/targets.md for every key"


def _schema_problems(data: dict[str, Any], error: ValidationError) -> list[tuple[str, str]]:
    """Every schema problem at once: unknown tables and keys first (with a likely spelling), then the rest."""
    problems: list[tuple[str, str]] = []
    for err in error.errors():
        loc = _loc(err)
        if err["type"] == "extra_forbidden":
            parent = TargetSpec
            for part in err["loc"][:-1]:
                if isinstance(part, int):
                    continue  # an index into a list of tables: the table's model is already in hand
                field = parent.model_fields.get(str(part))
                ann = getattr(field, "annotation", None) if field else None
                parent = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
                               and issubclass(a, BaseModel)), None)  # type: ignore[assignment]
                if parent is None:
                    break
            known = list(parent.model_fields) if parent is not None else []
            table = len(err["loc"]) == 1 and isinstance(data.get(str(err["loc"][0])), dict)
            problems.insert(sum(p[1].startswith("unknown") for p in problems), (loc, _unknown(loc, known, table)))
        elif err["type"] == "missing" and len(err["loc"]) == 1 and _is_section(str(err["loc"][0])):
            problems.append((loc, f"required table [{loc}] is missing"))
        else:
            problems.append((loc, _explain(err)))
    return problems


def _is_section(name: str) -> bool:
    ann = TargetSpec.model_fields[name].annotation if name in TargetSpec.model_fields else None
    return isinstance(ann, type) and issubclass(ann, BaseModel)


def _placeholder_problems(spec: TargetSpec) -> list[tuple[str, str]]:
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
    problems = []
    for key, argv in commands.items():
        allowed = ALLOWED[key.removesuffix(".command")]
        for arg in argv:
            for name in PLACEHOLDER.findall(arg):
                head, _, tail = name.partition(".")
                if head == "artifacts" and tail:
                    if tail not in spec.artifacts:
                        problems.append((key, f"placeholder {{{name}}} names no entry of [artifacts] "
                                              f"(entries: {', '.join(spec.artifacts) or 'none'})"))
                    continue
                if name not in allowed:
                    problems.append((key, f"unknown placeholder {{{name}}}; allowed here: {', '.join(sorted(allowed))}"))
    if spec.probes.kind == "command" and not spec.probes.command:
        problems.append(("probes.command", 'kind = "command" needs a command'))
    return problems


def load_target(root: Path | str) -> Target:
    """Parse and check ``root/target.toml``: schema, placeholders and that every named path exists.

    Every problem found is reported in one ``TargetError``, so a user fixes them all in one go.
    """
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
        problems = _schema_problems(data, e)
        raise TargetError(str(file), *problems[0], more=problems[1:]) from None
    target = Target(root, spec)
    problems = _placeholder_problems(spec) + _objective_problems(spec) + _path_problems(target)
    problems += space_problems(spec.baseline, spec.artifacts) if spec.baseline else []
    if problems:
        raise TargetError(str(file), *problems[0], more=problems[1:])
    return target


def _objective_problems(spec: TargetSpec) -> list[tuple[str, str]]:
    """Each objective names its own report field, once, and not the primary metric again."""
    problems, seen = [], {spec.benchmark.metric}
    for i, o in enumerate(spec.benchmark.objectives):
        if o.metric in seen:
            what = "the primary [benchmark].metric" if o.metric == spec.benchmark.metric else "an earlier objective"
            problems.append((f"benchmark.objectives.{i}.metric", f"{o.metric!r} is already {what}; each objective "
                             "needs its own report field"))
        seen.add(o.metric)
    if spec.benchmark.paired and spec.benchmark.objectives:
        problems.append(("benchmark.paired", "paired measurement judges the primary metric only; set it false or "
                         "remove [[benchmark.objectives]]"))
    if spec.benchmark.paired and spec.benchmark.repeats < 2:
        problems.append(("benchmark.repeats", "paired = true needs at least 2 repeats (pairs) for an interval"))
    return problems


def _requests_file_problem(path: Path, rel: str) -> str:
    """Why a ``[probes].requests`` file is unusable ("" when it is fine): JSONL of chat requests."""
    if not path.is_file():
        return f"file {rel!r} does not exist"
    n_rows = 0
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not isinstance(row.get("messages"), list) or not row["messages"]:
            return f'{rel}:{n}: expected a JSON object with a non-empty "messages" list'
        n_rows += 1
    return "" if n_rows else f"file {rel!r} holds no requests"


def _path_problems(target: Target) -> list[tuple[str, str]]:
    spec, problems = target.spec, []
    if not target.path(spec.instructions).is_file():
        problems.append(("instructions", f"file {spec.instructions!r} does not exist"))
    if spec.probes.requests:
        problem = _requests_file_problem(target.path(spec.probes.requests), spec.probes.requests)
        if problem:
            problems.append(("probes.requests", problem))
    if spec.reference.sample_input and not target.path(spec.reference.sample_input).is_file():
        problems.append(("reference.sample_input", f"file {spec.reference.sample_input!r} does not exist"))
    if spec.seed and not target.path(spec.seed).is_dir():
        problems.append(("seed", f"directory {spec.seed!r} does not exist"))
    if not spec.setup:
        for name, rel in spec.artifacts.items():
            if not target.path(rel).exists():
                problems.append((f"artifacts.{name}", f"path {rel!r} does not exist (and there is no [setup] to build it)"))
    for key, argv in (("reference.command", spec.reference.command), ("accuracy.command", spec.accuracy.command),
                      ("benchmark.command", spec.benchmark.command)):
        if (problem := _script_problem(target, argv)) is not None:
            problems.append((key, problem))
    return problems


def _script_problem(target: Target, argv: list[str]) -> str | None:
    """A command's program, or the script a ``python`` runs, must exist (and be executable if run directly)."""
    import os
    import shutil

    prog = argv[0]
    if prog in ("python", "python3", "{python}"):
        script = argv[1] if len(argv) > 1 and not argv[1].startswith("-") and "{" not in argv[1] else None
        if script is not None and not target.path(script).is_file():
            return f"script {script!r} does not exist in the target"
        return None
    if "/" in prog and "{" not in prog:
        path = target.path(prog)
        if not path.is_file():
            return f"program {prog!r} does not exist in the target"
        if not os.access(path, os.X_OK):
            return f"program {prog!r} is not executable (chmod +x {prog})"
    elif "{" not in prog and shutil.which(prog) is None:
        return f"program {prog!r} is not on PATH"
    return None


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
