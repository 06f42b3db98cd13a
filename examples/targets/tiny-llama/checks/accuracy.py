"""Accuracy gate for tiny-llama: the server's greedy outputs must equal the fp32 reference exactly.

    python checks/accuracy.py --url http://127.0.0.1:PORT --model artifacts/model --report report.json

Every case is sent non-streaming; some are sent streaming too (the concatenated deltas must equal the
reference text). Text and finish_reason are compared exactly.

Exit status (vibeserve's checker contract): 0 all cases match; 1 the server fails (some output differs
from the reference, or a request got no valid answer: unreachable, non-200 status, malformed response,
timeout); 2 the checker itself could not run (a broken reference or artifact). The JSON report, with a
boolean "passed", is written in every case.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
from pathlib import Path

import httpx

TARGET_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TARGET_DIR / "reference"))

import tiny_reference  # noqa: E402  (found through the path set just above)

EXIT_PASS, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2


def _long_prompt(words: list[str]) -> str:
    """A fixed 200-word prompt, so positions well past the short prompts are exercised too."""
    rng = random.Random(7)
    return " ".join(rng.choice(words) for _ in range(200))


def cases(words: list[str]) -> list[dict]:
    """The fixed prompt set. ``stream`` marks the cases that are also checked with stream=true."""
    completion = [
        ("c-fox", "the quick brown fox jump over the lazy dog", 16, True),
        ("c-one-word", "hello", 24, False),
        # "zebra" is not in the vocabulary: it must become <unk>, exactly as the tokenizer does.
        ("c-unknown-word", "the zebra and the fox walk to the river", 16, False),
        ("c-punctuation", "where is the river ? it is near the old farm , north of the city .", 20, True),
        # The reference stops on </s> after 7 tokens here: finish_reason must be "stop", not "length".
        ("c-eos", "look in all for cause our box rain", 16, True),
        ("c-single-token", "the first day of spring", 1, True),
        ("c-long", _long_prompt(words), 16, False),
    ]
    chat = [
        ("h-hello", [{"role": "user", "content": "hello , how are you ?"}], 16, True),
        (
            "h-system",
            [
                {"role": "system", "content": "you are a friendly captain"},
                {"role": "user", "content": "tell me a story about the sea ."},
            ],
            24,
            False,
        ),
        (
            "h-multi-turn",
            [
                {"role": "user", "content": "what is your name ?"},
                {"role": "assistant", "content": "my name is blue"},
                {"role": "user", "content": "where do you live ?"},
            ],
            16,
            True,
        ),
        ("h-question", [{"role": "user", "content": "what is the best food in winter ?"}], 20, False),
    ]
    out = [
        {"id": i, "kind": "completion", "prompt": p, "max_tokens": n, "stream": s}
        for i, p, n, s in completion
    ]
    out += [{"id": i, "kind": "chat", "messages": m, "max_tokens": n, "stream": s} for i, m, n, s in chat]
    return out


class ServerError(Exception):
    """The server did not give a well-formed answer (as opposed to a wrong one)."""


def _body(case: dict, stream: bool) -> tuple[str, dict]:
    body = {"model": "tiny-llama", "max_tokens": case["max_tokens"], "temperature": 0, "stream": stream}
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


def ask(client: httpx.Client, url: str, case: dict, stream: bool) -> tuple[str, str | None]:
    path, body = _body(case, stream)
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


def first_divergence(tokenizer, expected: str, got: str) -> int | None:
    """Index of the first differing token when both texts are re-encoded (None if they agree)."""
    a = tokenizer(expected, add_special_tokens=False)["input_ids"]
    b = tokenizer(got, add_special_tokens=False)["input_ids"]
    for i, (x, y) in enumerate(zip(a, b, strict=False)):
        if x != y:
            return i
    return None if len(a) == len(b) else min(len(a), len(b))


def run(url: str, model: Path, timeout: float) -> dict:
    ref = tiny_reference.load(model)
    vocab = ref.tokenizer.get_vocab()
    words = sorted((w for w in vocab if w.isalpha()), key=vocab.get)
    results = []
    with httpx.Client(timeout=timeout) as client:
        for case in cases(words):
            expected = tiny_reference.generate(ref, case)
            for stream in (False, True) if case["stream"] else (False,):
                row = {
                    "id": case["id"],
                    "kind": case["kind"],
                    "stream": stream,
                    "max_tokens": case["max_tokens"],
                    "expected": expected["text"],
                    "expected_finish_reason": expected["finish_reason"],
                }
                try:
                    got, finish = ask(client, url, case, stream)
                except ServerError as e:
                    results.append({**row, "status": "error", "error": str(e)})
                    continue
                row.update(got=got, finish_reason=finish)
                if got == expected["text"] and finish == expected["finish_reason"]:
                    row["status"] = "ok"
                else:
                    row["status"] = "mismatch"
                    row["first_divergent_token"] = first_divergence(ref.tokenizer, expected["text"], got)
                results.append(row)
    return {"cases": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=60, help="seconds for each HTTP request")
    args = parser.parse_args(argv)

    start = time.monotonic()
    try:
        report = run(args.url.rstrip("/"), args.model, args.timeout)
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
    args.report.write_text(json.dumps(report, indent=2) + "\n")

    for r in rows:
        if r["status"] != "ok":
            detail = r.get("error") or (
                f"first divergent token {r['first_divergent_token']}; "
                f"expected {r['expected']!r} ({r['expected_finish_reason']}), "
                f"got {r['got']!r} ({r['finish_reason']})"
            )
            print(f"{r['status'].upper()} {r['id']} stream={r['stream']}: {detail}")
    if "error" in report:
        print(f"ERROR {report['error']}")
    ok = sum(r["status"] == "ok" for r in rows)
    print(f"accuracy: {ok}/{len(rows)} ok, {failures} mismatched, {errors} errors")
    if "error" in report:
        return EXIT_ERROR  # the checker itself could not run (reference, artifacts): the target's problem
    # A server that errs, times out or answers malformed JSON fails like one that answers wrong.
    return EXIT_MISMATCH if failures or errors else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
