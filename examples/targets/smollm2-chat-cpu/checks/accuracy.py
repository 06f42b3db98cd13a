"""Accuracy gate for smollm2-chat-cpu: the server's greedy outputs must equal the fp32 reference exactly.

    python checks/accuracy.py --url http://127.0.0.1:PORT --model artifacts/model --report report.json

The fixed prompt set (chat and completion; short, multi-turn, long and non-ASCII prompts; answers that
stop on <|im_end|> and answers cut at max_tokens) is sent twice: first one request at a time,
non-streaming; then all requests at once, the streaming cases with ``stream: true`` (their deltas
concatenated) and the rest without. Each text and finish_reason must equal the reference exactly; on a
mismatch both texts are re-tokenized and the report names the first divergent token and character.

One allowance, for answers cut at max_tokens: when the last tokens hold only the first bytes of a
character (an emoji or CJK character spans several byte-level tokens), the reference's text ends in
U+FFFD, the decoder's stand-in for those bytes. A server may send them as that U+FFFD or withhold them as
not yet text (as `transformers serve` and vLLM do when streaming): both are accepted (status
``ok-withheld``), every whole character must still match. Nothing else is relaxed.

Batch invariance. The tolerance is zero: greedy ids must be identical, as their text shows. The
reference is HF Transformers in fp32, one request at a time. A server that batches concurrent requests
(or pads, or uses other kernels) changes the order of fp32 reductions in its matmuls, which moves logits
by ~1e-6 to 1e-5 and can flip the argmax where the best two logits are nearly tied. So a candidate that
batches must still give identical greedy outputs on this prompt set, alone and under concurrency (the
second pass). The report's ``min_logit_margin`` is the smallest gap between the best and second-best
logit of the reference over every generated token of the set: how close the nearest tie is. bf16, fp16
or quantized weights move logits by ~1e-2 and flip greedy tokens; they cannot pass.

Exit status (vibeserve's checker contract): 0 all cases match; 1 the server fails (some output differs
from the reference, or a request got no valid answer: unreachable, non-200 status, malformed response,
timeout); 2 the checker itself could not run (a broken reference or artifact). The JSON report, with a
boolean "passed", is written in every case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

TARGET_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TARGET_DIR / "reference"))

import smollm2_reference  # noqa: E402  (found through the path set just above)

EXIT_PASS, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
MODEL_NAME = "smollm2-135m-instruct"  # asked for when the server does not list its model

LONG_DOCUMENT = " ".join(
    f"Day {day}: the lighthouse keeper wrote that the wind came from the {wind}, that {ships} ships "
    f"passed the point before noon, and that the lamp burned {oil} litres of oil through the night."
    for day, wind, ships, oil in zip(
        range(1, 15),
        ["north", "east", "south", "west", "north-east", "south-west", "north-west"] * 2,
        [3, 7, 2, 9, 4, 1, 6, 8, 5, 2, 7, 3, 0, 4],
        [12, 14, 11, 15, 13, 12, 16, 14, 12, 11, 13, 15, 12, 14],
        strict=True,
    )
)

REPLACEMENT = "\ufffd"  # what a decoder shows for the bytes of an unfinished character


def cases() -> list[dict]:
    """The fixed prompt set. ``stream`` marks the cases sent with stream=true in the concurrent pass."""
    chat = [
        ("h-capital", [{"role": "user", "content": "What is the capital of France?"}], 32, True),
        (
            "h-system",
            [
                {"role": "system", "content": "You are a pirate. Answer in one short sentence."},
                {"role": "user", "content": "Describe the sea at night."},
            ],
            32,
            False,
        ),
        (
            "h-multi-turn",
            [
                {"role": "user", "content": "My name is Ada and I like tea."},
                {"role": "assistant", "content": "Nice to meet you, Ada! Tea is lovely."},
                {"role": "user", "content": "What is my name, and what do I like?"},
            ],
            32,
            True,
        ),
        (
            "h-code",
            [{"role": "user", "content": "Write a Python function that reverses a string."}],
            32,
            False,
        ),
        (
            "h-unicode",
            [
                {
                    "role": "user",
                    "content": "Say 'good morning' in Japanese, Greek and Russian, with an emoji.",
                }
            ],
            32,
            True,
        ),
        (
            "h-long",
            [{"role": "user", "content": LONG_DOCUMENT + "\n\nOn which day did the most ships pass?"}],
            24,
            False,
        ),
    ]
    completion = [
        ("c-story", "Once upon a time, in a small village by the sea,", 32, True),
        ("c-list", "The three primary colors are", 24, False),
        ("c-code", "def fibonacci(n):\n", 32, True),
        ("c-unicode", "Tokyo (東京) is the capital of Japan. In Japanese, 'thank you' is", 24, False),
        ("c-one-token", "The opposite of hot is", 1, True),
    ]
    out = [{"id": i, "kind": "chat", "messages": m, "max_tokens": n, "stream": s} for i, m, n, s in chat]
    out += [
        {"id": i, "kind": "completion", "prompt": p, "max_tokens": n, "stream": s}
        for i, p, n, s in completion
    ]
    return out


class ServerError(Exception):
    """The server did not give a well-formed answer (as opposed to a wrong one)."""


def served_model(client: httpx.Client, url: str) -> str:
    """The model id the server lists first at /v1/models (a server may accept only its own name)."""
    try:
        return str(client.get(url + "/v1/models").json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return MODEL_NAME


def _body(case: dict, stream: bool, model: str = MODEL_NAME) -> tuple[str, dict]:
    body = {"model": model, "max_tokens": case["max_tokens"], "temperature": 0, "stream": stream}
    if case["kind"] == "chat":
        return "/v1/chat/completions", {**body, "messages": case["messages"]}
    return "/v1/completions", {**body, "prompt": case["prompt"]}


def _choice_text(payload: dict, chat: bool, stream: bool) -> tuple[str, str | None]:
    """(text, finish_reason) of choices[0], in the shape OpenAI uses for this endpoint and mode."""
    try:
        choice = payload["choices"][0]
        if not chat:
            text = choice["text"]
        elif stream:
            text = choice["delta"].get("content") or ""  # role-only and final chunks carry no content
        else:
            text = choice["message"]["content"]
        finish = choice.get("finish_reason")
    except (KeyError, IndexError, TypeError, AttributeError) as e:
        raise ServerError(f"malformed response {json.dumps(payload)[:300]}: missing {e!r}") from None
    if not isinstance(text, str):
        raise ServerError(f"malformed response: text is {text!r}, not a string")
    return text, finish


def ask(client: httpx.Client, url: str, case: dict, stream: bool, model: str = MODEL_NAME) -> tuple[str, str | None]:
    path, body = _body(case, stream, model)
    chat = case["kind"] == "chat"
    try:
        if not stream:
            r = client.post(url + path, json=body)
            if r.status_code != 200:
                raise ServerError(f"POST {path} answered {r.status_code}: {r.text[:300]}")
            try:
                return _choice_text(r.json(), chat, stream=False)
            except ValueError:
                raise ServerError(f"POST {path} answered non-JSON: {r.text[:300]}") from None
        parts, finish, done = [], None, False
        with client.stream("POST", url + path, json=body) as r:
            if r.status_code != 200:
                raise ServerError(f"POST {path} (stream) answered {r.status_code}: {r.read()[:300]!r}")
            for line in r.iter_lines():
                if not line.startswith("data:"):
                    continue  # blank separators, comments, other SSE fields
                data = line[len("data:") :].strip()
                if data == "[DONE]":
                    done = True
                    break
                try:
                    payload = json.loads(data)
                except ValueError:
                    raise ServerError(f"stream chunk is not JSON: {data[:300]}") from None
                text, chunk_finish = _choice_text(payload, chat, stream=True)
                parts.append(text)
                finish = chunk_finish or finish
        # A stream is complete at data: [DONE], or when it closes cleanly after a chunk that carried a
        # finish_reason (`transformers serve` ends that way); one that stops before either is cut short.
        if not done and finish is None:
            raise ServerError(f"POST {path} (stream) ended without a finish_reason or data: [DONE]")
        return "".join(parts), finish
    except httpx.HTTPError as e:
        raise ServerError(f"POST {path}{' (stream)' if stream else ''}: {type(e).__name__}: {e}") from None


def first_divergence(tokenizer, expected: str, got: str) -> dict:
    """Where two texts part: the first differing character, and the first differing token when both are
    re-tokenized (the tokens are what a wrong greedy step changed)."""
    char = next((i for i, (x, y) in enumerate(zip(expected, got, strict=False)) if x != y), None)
    if char is None:
        char = min(len(expected), len(got))
    a = tokenizer(expected, add_special_tokens=False)["input_ids"]
    b = tokenizer(got, add_special_tokens=False)["input_ids"]
    token = next((i for i, (x, y) in enumerate(zip(a, b, strict=False)) if x != y), min(len(a), len(b)))
    return {
        "first_divergent_char": char,
        "first_divergent_token": token,
        "expected_token": tokenizer.decode(a[token : token + 1]) if token < len(a) else None,
        "got_token": tokenizer.decode(b[token : token + 1]) if token < len(b) else None,
    }


def compare(ref, case: dict, expected: dict, phase: str, stream: bool, answer) -> dict:
    row = {
        "id": case["id"],
        "kind": case["kind"],
        "phase": phase,
        "stream": stream,
        "max_tokens": case["max_tokens"],
        "expected": expected["text"],
        "expected_finish_reason": expected["finish_reason"],
        "expected_token_ids": expected["token_ids"],
        "min_logit_margin": expected["min_logit_margin"],
    }
    if isinstance(answer, ServerError):
        return {**row, "status": "error", "error": str(answer)}
    got, finish = answer
    row.update(got=got, finish_reason=finish)
    if got == expected["text"] and finish == expected["finish_reason"]:
        return {**row, "status": "ok"}
    if finish == expected["finish_reason"] == "length" and _withheld_tail(expected["text"], got):
        return {**row, "status": "ok-withheld"}
    return {**row, "status": "mismatch", **first_divergence(ref.tokenizer, expected["text"], got)}


def _withheld_tail(expected: str, got: str) -> bool:
    """Whether ``got`` is ``expected`` without the U+FFFD that stands for an unfinished last character."""
    whole = expected.rstrip(REPLACEMENT)
    return whole != expected and got == whole


def _ask_or_error(client, url, case, stream, model=MODEL_NAME):
    try:
        return ask(client, url, case, stream, model)
    except ServerError as e:
        return e


def run(url: str, model: Path, timeout: float, only: list[str] | None = None) -> dict:
    todo = [c for c in cases() if not only or c["id"] in only]
    if only and len(todo) != len(set(only)):
        raise ValueError(f"--only names unknown cases; known: {', '.join(c['id'] for c in cases())}")
    ref = smollm2_reference.load(model)
    expected = [smollm2_reference.generate(ref, case, margins=True) for case in todo]
    results = []
    with httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=len(todo) + 1)) as client:
        name = served_model(client, url)
        # Pass 1: one request at a time, the reference's own setting.
        for case, exp in zip(todo, expected, strict=True):
            results.append(compare(ref, case, exp, "alone", False, _ask_or_error(client, url, case, False, name)))
        # Pass 2: everything in flight at once, so a batching server is checked batched.
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            answers = list(pool.map(lambda c: _ask_or_error(client, url, c, c["stream"], name), todo))
        for case, exp, answer in zip(todo, expected, answers, strict=True):
            results.append(compare(ref, case, exp, "concurrent", case["stream"], answer))
    return {"min_logit_margin": min(e["min_logit_margin"] for e in expected), "cases": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=120, help="seconds for each HTTP request")
    parser.add_argument(
        "--only", action="append", metavar="ID", help="check only this case (repeatable; for tests)"
    )
    args = parser.parse_args(argv)

    start = time.monotonic()
    try:
        report = run(args.url.rstrip("/"), args.model, args.timeout, args.only)
    except Exception as e:  # a broken reference or artifact is an error of the gate, not a mismatch
        report = {"cases": [], "error": f"{type(e).__name__}: {e}"}
    rows = report["cases"]
    errors = sum(r["status"] == "error" for r in rows) + ("error" in report)
    failures = sum(r["status"] == "mismatch" for r in rows)
    report = {
        "passed": not errors and not failures,
        "summary": f"{failures} of {len(rows)} cases differ from the reference, {errors} failed with an error",
        "failures": failures,
        "errors": errors,
        "total": len(rows),
        "url": args.url,
        "duration_s": round(time.monotonic() - start, 3),
        **report,
    }
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")

    for r in rows:
        if r["status"] in ("mismatch", "error"):
            detail = r.get("error") or (
                f"first divergent token {r['first_divergent_token']} "
                f"(expected {r['expected_token']!r}, got {r['got_token']!r}); "
                f"expected {r['expected']!r} ({r['expected_finish_reason']}), "
                f"got {r['got']!r} ({r['finish_reason']})"
            )
            print(f"{r['status'].upper()} {r['id']} {r['phase']} stream={r['stream']}: {detail}")
    if "error" in report:
        print(f"ERROR {report['error']}")
    ok = sum(r["status"] in ("ok", "ok-withheld") for r in rows)
    withheld = sum(r["status"] == "ok-withheld" for r in rows)
    margin = report.get("min_logit_margin")
    print(
        f"accuracy: {ok}/{len(rows)} ok"
        + (f" ({withheld} withholding an unfinished last character)" if withheld else "")
        + f", {failures} mismatched, {errors} errors"
        + (f"; smallest top-1/top-2 logit margin {margin:.4g}" if margin is not None else "")
    )
    if "error" in report:
        return EXIT_ERROR  # the checker itself could not run (reference, artifacts): the target's problem
    # A server that errs, times out or answers malformed JSON fails like one that answers wrong.
    return EXIT_MISMATCH if failures or errors else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
