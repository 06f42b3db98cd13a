"""The target contract: ``target.toml`` parsed into a typed ``TargetSpec``, with errors that name file and key."""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator

from vibeserve.target.search_space import Baseline

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
    "comparator": COMMON | {"requests", "expected", "answers", "verdicts"},
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
    kind: Literal["none", "openai-completions", "openai-images", "command"] = "none"
    count: int = Field(default=8, ge=0)
    command: list[str] = Field(default_factory=list)
    timeout_s: float = Field(default=600, gt=0)
    max_tokens: int = Field(default=16, gt=0)
    # The endpoints the openai-completions probes call: /v1/completions and /v1/chat/completions.
    kinds: list[Literal["completion", "chat"]] = Field(default_factory=lambda: ["completion", "chat"], min_length=1)
    # A JSONL file of chat requests with extra body fields: the probes are drawn from it instead.
    requests: str | None = None


class Comparator(Section):
    """How the probe gate and the output audit compare an answer with the reference (gates/comparators.py)."""

    kind: Literal["exact", "token-agreement", "psnr", "command"] = "exact"
    field: str | None = None  # the answer field compared; unset: text, tokens, b64_json by kind
    min_agreement: float | None = None  # token-agreement: the least fraction of positions that agree
    min_psnr_db: float | None = None  # psnr: the least PSNR against the reference's image, in dB
    command: list[str] = Field(default_factory=list)  # command: the target's own judge of a batch
    timeout_s: float = Field(default=600, gt=0)

    def problems(self) -> list[tuple[str, str]]:
        """Each key that does not fit ``kind``, as (key, what to fix); checked when the target loads."""
        out: list[tuple[str, str]] = []
        own = {"token-agreement": "min_agreement", "psnr": "min_psnr_db", "command": "command"}
        for kind, key in own.items():
            value = getattr(self, key)
            if self.kind == kind and not value and value != 0:
                out.append((f"comparator.{key}", f'required with kind = "{kind}"'))
            elif self.kind != kind and value:
                out.append((f"comparator.{key}", f'only used with kind = "{kind}" (this comparator is '
                                                 f'"{self.kind}"): remove it or set kind = "{kind}"'))
        if self.min_agreement is not None and not 0 < self.min_agreement <= 1:
            out.append(("comparator.min_agreement", f"must be a fraction above 0 and at most 1 (got {self.min_agreement})"))
        if self.min_psnr_db is not None and not (math.isfinite(self.min_psnr_db) and self.min_psnr_db > 0):
            out.append(("comparator.min_psnr_db", f"must be a finite number of dB above 0 (got {self.min_psnr_db})"))
        if self.kind == "command" and self.field:
            out.append(("comparator.field", 'not used with kind = "command" (the command reads whole answers)'))
        return out


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
    comparator: Comparator = Field(default_factory=Comparator)
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


def load_target(root: Path | str) -> Target:
    """Parse and check ``root/target.toml`` (``vibeserve.target.loading``): schema, placeholders, paths."""
    from vibeserve.target.loading import load

    return load(root)
