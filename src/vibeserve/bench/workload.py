"""What to send and when: the benchmark config, prompts (dataset or synthetic), nonces, arrival times."""

from __future__ import annotations

import json
import math
import random
import secrets
from dataclasses import dataclass, field
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_serializer, field_validator

SLO_KEYS = ("ttft", "tpot", "e2el")
DEFAULT_NUM_REQUESTS = 100

# Common English words: most are one token in BPE vocabularies, so --input-len words is about that many
# tokens even without a tokenizer (with one, prompts are cut to exactly --input-len tokens).
_WORD_TEXT = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health
person art war history party result change morning reason research girl guy moment air teacher force
education foot boy age policy process music market sense nation plan college interest death experience
effect use class control care field development role effort rate heart drug show leader light voice
wife police mind price report decision son view relationship town road arm difference value building
action model season society tax director position player record paper space ground form event official
matter center couple site project activity star table need court oil situation cost industry figure
street image phone data picture practice piece land product doctor wall patient worker news test movie
north love support technology step baby computer type attention film tree source organization hair
window evidence population site garden river summer winter spring autumn bread milk coffee forest
village captain ocean island mountain valley bridge castle engine signal letter theory method answer
"""
WORDS = tuple(dict.fromkeys(_WORD_TEXT.split()))


class BenchError(Exception):
    """A usage error or an unreachable server: the message says what to fix; the CLI exits 2."""


class BenchConfig(BaseModel):
    """Everything that defines one benchmark run; stored in the report as `config`."""

    model_config = ConfigDict(extra="forbid")

    url: str = Field(description="base URL of the server, e.g. http://127.0.0.1:8000")
    endpoint: Literal["completions", "chat"] = "completions"
    model: str | None = Field(None, description="model name sent; default: the first of GET /v1/models")
    rate: float = Field(math.inf, gt=0, description="offered request rate in req/s; inf = all at once")
    arrival: Literal["poisson", "fixed", "burst"] = "poisson"
    num_requests: int | None = Field(None, ge=1, description="default: the dataset's lines, or 100")
    max_concurrency: int | None = Field(None, ge=1)
    seed: int = 0
    dataset: Path | None = None
    send_extra_fields: bool = Field(False, description="send each dataset line's other fields in the request body")
    input_len: int = Field(128, ge=1)
    output_len: int = Field(64, ge=1)
    prefix_len: int = Field(0, ge=0)
    nonce: bool = True
    stream: bool = True
    ignore_eos: bool = False
    request_timeout: float = Field(60.0, gt=0, description="seconds for a whole request, stream included")
    tokenizer: Path | None = None
    goodput: dict[str, float] = Field(default_factory=dict, description="SLOs in ms: ttft, tpot, e2el")
    save_responses: Path | None = None

    @field_validator("goodput")
    @classmethod
    def _known_slos(cls, value: dict[str, float]) -> dict[str, float]:
        unknown = sorted(set(value) - set(SLO_KEYS))
        if unknown:
            raise ValueError(f"unknown goodput metric {unknown}; use {', '.join(SLO_KEYS)}")
        return value

    @field_serializer("rate")
    def _rate_json(self, rate: float) -> float | str:
        return "inf" if math.isinf(rate) else rate


def parse_goodput(specs: list[str]) -> dict[str, float]:
    """vLLM's `--goodput ttft:500 tpot:50` (ms) as a dict; also accepts commas and one quoted string."""
    slos: dict[str, float] = {}
    for item in (part for spec in specs for part in spec.replace(",", " ").split()):
        key, sep, value = item.partition(":")
        try:
            slos[key] = float(value)
        except ValueError:
            raise BenchError(f"--goodput {item!r}: expected METRIC:MS such as ttft:500") from None
        if not sep or key not in SLO_KEYS or slos[key] <= 0:
            raise BenchError(f"--goodput {item!r}: metric must be one of {', '.join(SLO_KEYS)} with ms > 0")
    return slos


@dataclass
class RequestSpec:
    """One request: a prompt (completions) or messages (chat), its max_tokens, its measured input length."""

    index: int
    prompt: str | None
    messages: list[dict] | None
    max_tokens: int
    input_tokens: int = 0
    extra: dict = field(default_factory=dict)  # further body fields (e.g. response_format, prediction)


class TokenCounter:
    """Counts tokens with the target's tokenizer, or (without one) by whitespace-separated words."""

    def __init__(self, tokenizer=None):
        self._tok = tokenizer
        self.name = "tokenizer" if tokenizer is not None else "whitespace"

    def count(self, text: str) -> int:
        if self._tok is None:
            return len(text.split())
        return len(self._tok.encode(text, add_special_tokens=False))

    def count_messages(self, messages: list[dict]) -> int:
        if self._tok is not None and getattr(self._tok, "chat_template", None):
            ids = self._tok.apply_chat_template(messages, tokenize=True, add_generation_prompt=True)
            ids = ids["input_ids"] if hasattr(ids, "keys") else ids
            return len(ids)
        return sum(self.count(str(m.get("content") or "")) for m in messages)

    def truncate(self, text: str, n: int) -> str:
        """The first `n` tokens of `text` (words without a tokenizer)."""
        if self._tok is None:
            return " ".join(text.split()[:n])
        return self._tok.decode(self._tok.encode(text, add_special_tokens=False)[:n])


def load_token_counter(path: Path | None) -> TokenCounter:
    """The target's tokenizer from local files only, or the whitespace fallback when `path` is None."""
    if path is None:
        return TokenCounter()
    if not Path(path).is_dir():
        raise BenchError(f"--tokenizer {path}: not a directory with tokenizer files")
    from transformers import AutoTokenizer  # slow import, only when asked for

    try:
        return TokenCounter(AutoTokenizer.from_pretrained(str(path), local_files_only=True))
    except Exception as e:  # transformers raises many kinds for a bad folder
        raise BenchError(f"--tokenizer {path}: cannot load a tokenizer: {e}") from None


# Body fields the load generator sets itself (a dataset line cannot send its own), and a line's own "id".
RESERVED_FIELDS = frozenset({"id", "prompt", "messages", "max_tokens", "model", "stream", "temperature", "ignore_eos"})

Row = tuple[str | None, list[dict] | None, int | None, dict]


def read_dataset(path: Path, endpoint: str, extra_fields: bool = False) -> list[Row]:
    """(prompt, messages, max_tokens, extra) per JSONL line; a plain prompt becomes one user message for
    chat. With ``extra_fields``, every other field of a line is a body field to send (``extra``)."""
    rows = []
    try:
        lines = Path(path).read_text().splitlines()
    except OSError as e:
        raise BenchError(f"--dataset {path}: {e}") from None
    for n, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            raise BenchError(f"--dataset {path}:{n}: not a JSON object") from None
        prompt, messages, max_tokens = row.get("prompt"), row.get("messages"), row.get("max_tokens")
        if isinstance(prompt, str) and endpoint == "chat":
            prompt, messages = None, [{"role": "user", "content": prompt}]
        ok_prompt = isinstance(prompt, str) and endpoint == "completions"
        ok_messages = isinstance(messages, list) and endpoint == "chat" and bool(messages)
        if not (ok_prompt or ok_messages):
            need = '"prompt"' if endpoint == "completions" else '"prompt" or "messages"'
            raise BenchError(f"--dataset {path}:{n}: needs {need} for --endpoint {endpoint}")
        if max_tokens is not None and (not isinstance(max_tokens, int) or max_tokens < 1):
            raise BenchError(f"--dataset {path}:{n}: max_tokens must be a positive integer")
        extra = {k: v for k, v in row.items() if k not in RESERVED_FIELDS} if extra_fields else {}
        rows.append((prompt if ok_prompt else None, messages if ok_messages else None, max_tokens, extra))
    if not rows:
        raise BenchError(f"--dataset {path}: no requests in it")
    return rows


def synthetic_prompts(n: int, input_len: int, prefix_len: int, seed: int, counter: TokenCounter) -> list[str]:
    """Random vocabulary words from `seed`: a shared prefix of `prefix_len` plus `input_len` per request."""
    rng = random.Random(f"{seed}:prompts")

    def words(count: int) -> str:
        return counter.truncate(" ".join(rng.choice(WORDS) for _ in range(count)), count) if count else ""

    prefix = words(prefix_len)
    return [" ".join(p for p in (prefix, words(input_len)) if p) for _ in range(n)]


def nonce_suffix(seed: int, index: int) -> str:
    """A per-request tail that differs on every run, so a response cache never hits."""
    return f" [req-{seed}-{index}-{secrets.token_hex(4)}]"


def build_requests(config: BenchConfig, counter: TokenCounter) -> list[RequestSpec]:
    """The requests of one run, nonce applied and input tokens counted."""
    if config.dataset is not None:
        rows = read_dataset(config.dataset, config.endpoint, config.send_extra_fields)
        n = config.num_requests or len(rows)
        rows = [rows[i % len(rows)] for i in range(n)]
    else:
        n = config.num_requests or DEFAULT_NUM_REQUESTS
        prompts = synthetic_prompts(n, config.input_len, config.prefix_len, config.seed, counter)
        if config.endpoint == "chat":
            rows = [(None, [{"role": "user", "content": p}], None, {}) for p in prompts]
        else:
            rows = [(p, None, None, {}) for p in prompts]
    specs = []
    for i, (prompt, messages, max_tokens, extra) in enumerate(rows):
        messages = [dict(m) for m in messages] if messages is not None else None
        if config.nonce:
            suffix = nonce_suffix(config.seed, i)
            if prompt is not None:
                prompt += suffix
            else:
                users = [m for m in messages if m.get("role") == "user"] or messages
                users[-1]["content"] = str(users[-1].get("content") or "") + suffix
        spec = RequestSpec(i, prompt, messages, max_tokens or config.output_len, extra=extra)
        spec.input_tokens = counter.count(prompt) if prompt is not None else counter.count_messages(messages)
        specs.append(spec)
    return specs


def arrival_times(n: int, rate: float, arrival: str, seed: int) -> list[float]:
    """Seconds from the start at which each request is due: Poisson (seeded), fixed-rate, or a burst."""
    if arrival == "burst" or math.isinf(rate):
        return [0.0] * n
    if arrival == "fixed":
        return [i / rate for i in range(n)]
    rng = random.Random(f"{seed}:arrivals")
    times, t = [], 0.0
    for _ in range(n):
        times.append(t)
        t += rng.expovariate(rate)
    return times
