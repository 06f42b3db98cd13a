"""The probe gate and the output audit: the candidate's answers to inputs it could not have prepared for,
compared with the target's own reference.

Probes are generated each round from a seed that only the framework knows (the run's secret seed and the
round number), so neither an agent nor a candidate has seen them: a server that memorised the checker's
prompts, or answers some prompts without the model, fails here. The audit takes a sample of the answers
the benchmark itself received under load, so a server that is right when checked alone but wrong (or
truncated) while it is being measured fails too; its requests are the benchmark's own, so a server cannot
tell them apart.

Ground truth always comes from the target's ``[reference]`` command, cached by request hash under the
run directory so a request is never generated twice.
"""

from __future__ import annotations

import hashlib
import json
import random
import tempfile
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

from vibeserve.errors import VibeserveError
from vibeserve.gates.comparators import exact, judge
from vibeserve.process import CommandNotRunnable, clean_env, run
from vibeserve.target.spec import Comparator, Target

# Plain English words: every tokenizer encodes them, and they make prompts of any length.
WORDS = """
time person year way day thing man world life hand part child eye woman place work week case point number
group problem fact water river mountain city garden kitchen window music story letter question answer
market station bridge forest winter summer morning evening light stone paper glass bread coffee apple
orange horse bird fish dog cat tree flower cloud rain snow wind fire road ship train engine computer
language history science doctor teacher student family friend village island ocean desert castle king
queen robot planet star moon sun color green blue red yellow small large quick slow happy quiet bright
dark cold warm old new first last early late simple strange careful gentle brave clever ancient modern
build write read open close carry find give keep bring follow learn change move play turn start show
""".split()  # noqa: SIM905 (a word list reads better as text)

COMPLETION_TEMPLATES = [
    "{words}",
    "Once upon a time, {words}",
    "The {a} and the {b}: {words}",
    "Q: What is a {a}?\nA:",
    "List of things about the {a}:\n1.",
    "{words}. In summary,",
]
CHAT_TEMPLATES = [
    "{words}",
    "Tell me about the {a}. {words}",
    "Write a short poem about a {a} and a {b}.",
    "Explain in one sentence: {words}",
    "What is the difference between a {a} and a {b}?",
    "Continue this list: {a}, {b},",
]


class ReferenceFailed(VibeserveError):
    """The target's reference command failed: a target problem, never the candidate's."""


def make_probes(seed: int, count: int, max_tokens: int,
                kinds: Sequence[str] = ("completion", "chat")) -> list[dict[str, Any]]:
    """``count`` requests in the reference's request format, taking turns over ``kinds`` (completion, chat),
    with prompts of varied length and varied ``max_tokens`` (1, half, full), the last repeating the first
    prompt with another ``max_tokens``; all determined by ``seed``."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 3, 8, 20, 48])))
        fill = {"words": words, "a": rng.choice(WORDS), "b": rng.choice(WORDS)}
        n = rng.choice([1, max(1, max_tokens // 2), max_tokens, max_tokens])
        if kinds[i % len(kinds)] == "completion":
            text = rng.choice(COMPLETION_TEMPLATES).format(**fill)
            out.append({"id": f"probe-{i}", "kind": "completion", "prompt": text, "max_tokens": n})
        else:
            text = rng.choice(CHAT_TEMPLATES).format(**fill)
            messages = [{"role": "user", "content": text}]
            if rng.random() < 0.3:
                messages.insert(0, {"role": "system", "content": f"You answer like a {rng.choice(WORDS)} expert."})
            out.append({"id": f"probe-{i}", "kind": "chat", "messages": messages, "max_tokens": n})
    if count >= 3 and max_tokens > 1:
        # The first prompt again with another length: a response cache keyed on the prompt alone answers
        # it with the first answer.
        again = dict(out[0], id=f"probe-{count - 1}")
        again["max_tokens"] = 1 if out[0]["max_tokens"] != 1 else max_tokens
        out[-1] = again
    return out


IMAGE_TEMPLATES = [
    "{words}",
    "a {a} and a {b}",
    "a painting of a {a} near a {b}, {words}",
    "a photo of the {a} at night",
    "watercolor {a} in a {b}",
    "{words}, pixel art",
]


def make_image_probes(seed: int, count: int) -> list[dict[str, Any]]:
    """``count`` image requests (``{"id", "kind": "image", "prompt"}``) with prompts of varied length, all
    determined by ``seed``; the last repeats the first prompt, asked alone after the others."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        words = " ".join(rng.choice(WORDS) for _ in range(rng.choice([1, 3, 8, 20])))
        text = rng.choice(IMAGE_TEMPLATES).format(words=words, a=rng.choice(WORDS), b=rng.choice(WORDS))
        out.append({"id": f"probe-{i}", "kind": "image", "prompt": text})
    if count >= 3:
        out[-1] = dict(out[0], id=f"probe-{count - 1}")
    return out


# The fields of a reference-format request; any other field is sent to the candidate in the request body.
REQUEST_FIELDS = ("id", "kind", "prompt", "messages", "max_tokens")


def read_probe_requests(path: Path) -> list[dict[str, Any]]:
    """The chat requests of a ``[probes].requests`` file (the benchmark's ``--requests`` format); a line
    that is no such request is a ``VibeserveError`` naming it."""
    rows = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except ValueError:
            row = None
        if not isinstance(row, dict) or not (isinstance(row.get("messages"), list) and row["messages"]):
            raise VibeserveError(f"[probes].requests: {path.name}:{n} is not a JSON object with \"messages\"")
        rows.append(row)
    if not rows:
        raise VibeserveError(f"[probes].requests: {path.name} holds no requests")
    return rows


def probes_from_requests(rows: Sequence[dict[str, Any]], seed: int, count: int,
                         max_tokens: int) -> list[dict[str, Any]]:
    """``count`` chat probes drawn (by ``seed``) from a workload file's ``rows``, each with its other fields
    (``response_format``, ``prediction``, ...) and a fresh random word after its last user message, so
    no answer could be prepared; ``max_tokens`` of 1, half or all of ``min(row, max_tokens)``; the last
    repeats the first with another ``max_tokens``."""
    rng = random.Random(seed)
    out = []
    for i in range(count):
        row = rng.choice(rows)
        extra = {k: v for k, v in row.items() if k not in (*REQUEST_FIELDS, "model", "stream", "temperature")}
        messages = [dict(m) for m in row["messages"]]
        users = [m for m in messages if m.get("role") == "user"] or messages
        users[-1]["content"] = f"{users[-1].get('content') or ''} ({rng.choice(WORDS)} {rng.randrange(10**6)})"
        full = min(int(row.get("max_tokens") or max_tokens), max_tokens)
        n = rng.choice([1, max(1, full // 2), full, full])
        out.append({"id": f"probe-{i}", "kind": "chat", "messages": messages, "max_tokens": n, **extra})
    if count >= 3 and max_tokens > 1:
        again = dict(out[0], id=f"probe-{count - 1}")
        again["max_tokens"] = 1 if out[0]["max_tokens"] != 1 else max(2, out[0]["max_tokens"])
        out[-1] = again
    return out


def round_seed(run_seed: int, round_no: int, purpose: str) -> int:
    """A seed for one round and one purpose, derived from the run's secret seed."""
    digest = hashlib.sha256(f"{run_seed}:{round_no}:{purpose}".encode()).digest()
    return int.from_bytes(digest[:8], "big")


def request_key(request: dict[str, Any]) -> str:
    body = {k: v for k, v in request.items() if k != "id"}
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def reference_outputs(
    target: Target, requests: list[dict[str, Any]], cache_dir: Path, log_dir: Path
) -> list[dict[str, Any]]:
    """The reference's output for each request (same order); only requests not in the cache are generated."""
    cache_dir.mkdir(parents=True, exist_ok=True)
    keys = [request_key(r) for r in requests]
    missing = {k: r for k, r in zip(keys, requests, strict=True) if not (cache_dir / f"{k}.json").exists()}
    if missing:
        log_dir.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=log_dir) as tmp:
            inp, outp = Path(tmp) / "in.jsonl", Path(tmp) / "out.jsonl"
            todo = [{**r, "id": k} for k, r in missing.items()]
            inp.write_text("".join(json.dumps(r) + "\n" for r in todo))
            argv = target.render(target.spec.reference.command, input=inp, output=outp)
            try:
                done = run(argv, target.root, log_dir, "reference", target.spec.reference.timeout_s, env=clean_env())
            except CommandNotRunnable as e:
                raise ReferenceFailed(f"[reference].command cannot run: {e}") from None
            if done.returncode != 0 or done.timed_out:
                why = "timed out" if done.timed_out else f"exit {done.returncode}"
                raise ReferenceFailed(f"[reference].command failed ({why}); see {log_dir}/reference.stderr:\n"
                                      f"{done.tail(1500)}")
            lines = [json.loads(x) for x in outp.read_text().splitlines() if x.strip()] if outp.exists() else []
            if len(lines) != len(todo):
                raise ReferenceFailed(f"[reference].command wrote {len(lines)} outputs for {len(todo)} requests")
            for request, output in zip(todo, lines, strict=True):
                (cache_dir / f"{request['id']}.json").write_text(json.dumps(output))
    return [json.loads((cache_dir / f"{k}.json").read_text()) for k in keys]


def compare(expected: dict[str, Any], got_text: str | None, error: str | None = None) -> dict[str, Any]:
    """One text answer's outcome under exact comparison: ``ok``, ``mismatch`` (with where the texts part,
    in context) or ``error``. The gates use the target's declared comparator (``comparators.judge``)."""
    want = expected.get("text", "")
    if error is not None:
        return {"status": "error", "error": error[:300], "expected": want[:200]}
    return exact(Comparator(), expected, {"text": got_text})


def summarize(results: Iterable[dict[str, Any]]) -> tuple[bool, str]:
    results = list(results)
    bad = [r for r in results if r["status"] != "ok"]
    if not bad:
        return True, ""
    first = bad[0]
    if first.get("error"):
        detail = first["error"]
    elif "first_difference_at_char" not in first:
        detail = first.get("detail") or "it differs"
    else:
        detail = (f"they part at character {first['first_difference_at_char']}: expected {first['expected']!r}, "
                  f"got {first['got']!r}")
    return False, f"{len(bad)} of {len(results)} differ from the reference (first, {first['id']}: {detail})"


# -- asking the candidate -----------------------------------------------------------------------------------
def _served_model(client: Any, url: str) -> str:
    try:
        data = client.get(url + "/v1/models", timeout=10).json()
        return str(data["data"][0]["id"])
    except Exception:  # a server without /v1/models still gets probed, under a neutral name
        return "default"


def _text_of(obj: dict[str, Any], chat: bool, stream: bool) -> str:
    choice = obj["choices"][0]
    if not chat:
        text = choice.get("text")
    else:
        part = choice.get("delta") if stream else choice.get("message")
        text = (part or {}).get("content")
    if text is not None and not isinstance(text, str):
        raise ValueError(f"the answer's text is {text!r}")
    return text or ""


def ask(client: Any, url: str, model: str, request: dict[str, Any], stream: bool, timeout: float) -> str:
    """The candidate's greedy answer to one reference-format request, as text (streamed or not)."""
    chat = request["kind"] == "chat"
    body: dict[str, Any] = {"model": model, "max_tokens": request["max_tokens"], "temperature": 0, "stream": stream}
    body.update({"messages": request["messages"]} if chat else {"prompt": request["prompt"]})
    body.update({k: v for k, v in request.items() if k not in (*REQUEST_FIELDS, *body)})
    path = "/v1/chat/completions" if chat else "/v1/completions"
    if not stream:
        r = client.post(url + path, json=body, timeout=timeout)
        if r.status_code != 200:
            raise ValueError(f"HTTP {r.status_code}: {r.text[:200]}")
        return _text_of(r.json(), chat, stream=False)
    # A stream is complete at data: [DONE], or when it closes cleanly after a chunk that carried a
    # finish_reason (`transformers serve` ends that way; the load generator accepts it too). One that
    # stops before either was cut short.
    parts, done, finished = [], False, False
    with client.stream("POST", url + path, json=body, timeout=timeout) as r:
        if r.status_code != 200:
            raise ValueError(f"HTTP {r.status_code}: {r.read()[:200]!r}")
        for line in r.iter_lines():
            if not line.startswith("data:"):
                continue
            data = line[len("data:"):].strip()
            if data == "[DONE]":
                done = True
                break
            obj = json.loads(data)
            parts.append(_text_of(obj, chat, stream=True))
            finished = finished or obj["choices"][0].get("finish_reason") is not None
    if not (done or finished):
        raise ValueError("the stream ended without data: [DONE] or a finish_reason")
    return "".join(parts)


def ask_image(client: Any, url: str, model: str, request: dict[str, Any], timeout: float) -> dict[str, Any]:
    """The candidate's answer to one image request: the first entry of ``data`` of
    ``POST /v1/images/generations`` (``b64_json`` and whatever else the target's images carry)."""
    body = {"model": model, "prompt": request["prompt"], "n": 1, "response_format": "b64_json"}
    body.update({k: v for k, v in request.items() if k not in (*REQUEST_FIELDS, *body)})
    r = client.post(url + "/v1/images/generations", json=body, timeout=timeout)
    if r.status_code != 200:
        raise ValueError(f"HTTP {r.status_code}: {r.text[:200]}")
    data = r.json()["data"]
    if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
        raise ValueError(f"data holds {len(data) if isinstance(data, list) else type(data).__name__}, not one image")
    return data[0]


def ask_all(url: str, requests: list[dict[str, Any]], timeout: float) -> list[tuple[dict | None, str | None]]:
    """All requests but the last at once (half of the text ones streamed), then the last alone, after the
    others finished (it repeats the first prompt: a response cache has seen it by then); for each request,
    (answer fields, None) or (None, error). A text answer's fields are ``{"text"}``."""
    from concurrent.futures import ThreadPoolExecutor

    import httpx

    with httpx.Client(limits=httpx.Limits(max_connections=len(requests) + 1)) as client:
        model = _served_model(client, url)

        def one(i: int) -> tuple[dict | None, str | None]:
            try:
                if requests[i]["kind"] == "image":
                    return ask_image(client, url, model, requests[i], timeout), None
                return {"text": ask(client, url, model, requests[i], stream=i % 4 in (1, 2), timeout=timeout)}, None
            except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError) as e:
                return None, f"{type(e).__name__}: {e}"

        together = range(len(requests) - 1) if len(requests) > 1 else range(len(requests))
        with ThreadPoolExecutor(max_workers=max(1, len(together))) as pool:
            answers = list(pool.map(one, together))
        return answers + [one(i) for i in range(len(answers), len(requests))]


# -- the output audit ---------------------------------------------------------------------------------------
def audits(target: Target) -> bool:
    """Whether benchmark answers are audited: the benchmark writes them ({responses}) and the audit is on."""
    spec = target.spec.benchmark
    return spec.audit_samples != 0 and any("{responses}" in a for a in spec.command)


def _as_request(row: dict[str, Any], i: int) -> dict[str, Any] | None:
    if row.get("ignore_eos"):
        return None  # the reference stops at end-of-sequence; such answers cannot be compared
    if isinstance(row.get("reference_request"), dict):
        # a benchmark of another protocol (a speech stream, ...) says what the reference is to be asked in
        # the reference's own input format; the benchmark command is the target's, never the candidate's
        return {**row["reference_request"], "id": f"audit-{i}"}
    extra = row.get("extra") if isinstance(row.get("extra"), dict) else {}
    extra = {k: v for k, v in extra.items() if k not in REQUEST_FIELDS}
    if row.get("kind") == "image" and isinstance(row.get("prompt"), str):
        return {"id": f"audit-{i}", "kind": "image", "prompt": row["prompt"], **extra}
    if isinstance(row.get("messages"), list):
        return {"id": f"audit-{i}", "kind": "chat", "messages": row["messages"], "max_tokens": row["max_tokens"],
                **extra}
    if isinstance(row.get("prompt"), str):
        return {"id": f"audit-{i}", "kind": "completion", "prompt": row["prompt"], "max_tokens": row["max_tokens"],
                **extra}
    return None


def _read_rows(path: Path) -> tuple[list[dict[str, Any]], str]:
    rows = []
    for n, line in enumerate(path.read_text(errors="replace").splitlines(), 1):
        if line.strip():
            try:
                rows.append(json.loads(line))
            except json.JSONDecodeError:
                return [], f"output audit: {path.name}:{n} is not JSON"
    return rows, ""


def audit_responses(target: Target, log_dir: Path, cache_dir: Path, seed: int, count: int | None) -> dict[str, Any]:
    """Compares the answers of one timed benchmark repeat with the reference: every answer (``count`` None)
    or ``count`` of them. The repeat and the sample are drawn from ``seed`` only now, after every repeat
    has finished, so a candidate cannot know which to serve honestly. Fails when the benchmark wrote no
    answers, when any answer of any repeat was recorded as a failure, when no answer could be compared,
    or when one differs."""
    files = sorted(log_dir.glob("bench[0-9]*.responses.jsonl"))
    if not files:
        return {"passed": False, "checked": 0,
                "reason": "output audit: the benchmark wrote no answers to {responses}, so none could be checked"}
    every: list[list[dict[str, Any]]] = []
    for f in files:
        rows, problem = _read_rows(f)
        if problem:
            return {"passed": False, "checked": 0, "reason": problem}
        every.append(rows)
    failed = [r for rows in every for r in rows if r.get("ok") is False]
    if failed:
        return {"passed": False, "checked": 0, "reason": f"output audit: {len(failed)} benchmark request(s) "
                f"recorded as failed (first: {failed[0].get('error')})"}
    rng = random.Random(seed)
    pick = rng.randrange(len(files))
    rows = every[pick]
    usable = [(i, req) for i, row in enumerate(rows) if (req := _as_request(row, i)) is not None]
    if not usable:
        return {"passed": False, "checked": 0, "repeat": files[pick].name,
                "reason": f"output audit: none of the {len(rows)} answers of {files[pick].name} could be compared "
                          "with the reference (no prompt, messages or reference_request recorded, or ignore_eos)"}
    picked = usable if count is None else rng.sample(usable, min(count, len(usable)))
    requests = [req for _, req in picked]
    expected = reference_outputs(target, requests, cache_dir, log_dir)
    results = judge(target, requests, expected, [(rows[i], None) for i, _ in picked], log_dir)
    passed, why = summarize(results)
    return {"passed": passed, "checked": len(results), "of": len(rows), "repeat": files[pick].name,
            "results": results, "reason": f"output audit: {why} under load" if why else ""}
