"""Accuracy checker: the server's greedy outputs must equal the fp32 reference exactly, alone and concurrently.

    python checks/accuracy.py --url http://127.0.0.1:PORT --model artifacts/model \
        --cases checks/cases.jsonl --report report.json

Each case of the cases file (a reference request plus ``"stream": true|false``) is sent twice: first one
request at a time, non-streaming; then all at once, the streaming cases with ``stream: true`` (their deltas
concatenated). Every text and finish_reason must equal ``reference/hf_greedy.py``'s exactly: a server that
batches must keep greedy outputs identical.

The report contract vibeserve reads (docs/targets.md): a JSON object with a boolean ``passed``, written in
every case. Exit status: 0 with ``passed: true``; 1 with ``passed: false`` when the server is wrong (an
answer differs, an HTTP error, a malformed or cut-short response: the candidate's fault); 2 when this
checker cannot do its job (bad arguments, unreadable cases, a model it cannot load: the target's fault).

The cases (checks/cases.jsonl) include prompts sharing a 600-word prefix with suffixes of 1 to 90 words, one
that is the prefix alone, one sharing only its first half, and chats with the prefix as the system prompt:
a server that reuses state at the prefix boundary must restore it exactly.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

TARGET_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TARGET_DIR / "reference"))

EXIT_PASS, EXIT_FAIL, EXIT_CHECKER_ERROR = 0, 1, 2


class ServerError(Exception):
    """The server did not give a well-formed answer (as opposed to a wrong one)."""


def read_cases(path: Path) -> list[dict]:
    cases = []
    for n, line in enumerate(path.read_text().splitlines(), 1):
        if line.strip():
            try:
                case = json.loads(line)
            except json.JSONDecodeError as e:
                raise ValueError(f"{path}:{n}: not JSON: {e}") from None
            if not isinstance(case, dict) or "id" not in case or case.get("kind") not in ("completion", "chat"):
                raise ValueError(f"{path}:{n}: needs an 'id' and a 'kind' of 'completion' or 'chat'")
            cases.append(case)
    if not cases:
        raise ValueError(f"{path}: no cases in it")
    return cases


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


def ask(client, url: str, model: str, case: dict, stream: bool) -> tuple[str, str | None]:
    """The server's (text, finish_reason) for one case."""
    import httpx

    chat = case["kind"] == "chat"
    path = "/v1/chat/completions" if chat else "/v1/completions"
    body = {"model": model, "max_tokens": case["max_tokens"], "temperature": 0, "stream": stream}
    body.update({"messages": case["messages"]} if chat else {"prompt": case["prompt"]})
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
                    continue
                data = line[len("data:"):].strip()
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


def served_model(client, url: str) -> str:
    try:
        return str(client.get(url + "/v1/models").json()["data"][0]["id"])
    except Exception:  # a server without /v1/models is still checked, under a neutral name
        return "default"


def compare(case: dict, expected: dict, mode: str, stream: bool, answer: tuple) -> dict:
    row = {"id": case["id"], "mode": mode, "stream": stream, "expected": expected["text"],
           "expected_finish_reason": expected["finish_reason"]}
    got, finish, error = answer
    if error is not None:
        return {**row, "status": "error", "error": error}
    row.update(got=got, finish_reason=finish)
    ok = got == expected["text"] and finish == expected["finish_reason"]
    if not ok:
        at = next((i for i, (a, b) in enumerate(zip(expected["text"], got, strict=False)) if a != b),
                  min(len(expected["text"]), len(got)))
        row["first_difference_at_char"] = at
    return {**row, "status": "ok" if ok else "mismatch"}


def check(url: str, cases: list[dict], expected: list[dict], timeout: float) -> list[dict]:
    import httpx

    def one(client, model, case, stream) -> tuple:
        try:
            return (*ask(client, url, model, case, stream), None)
        except ServerError as e:
            return None, None, str(e)
        except Exception as e:  # anything else that goes wrong while talking to the server is its answer
            return None, None, f"{type(e).__name__}: {e}"

    rows = []
    with httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=len(cases) + 1)) as client:
        model = served_model(client, url)
        for case, exp in zip(cases, expected, strict=True):  # alone, one at a time
            rows.append(compare(case, exp, "alone", False, one(client, model, case, False)))
        with ThreadPoolExecutor(max_workers=len(cases)) as pool:  # all at once
            answers = list(pool.map(lambda c: one(client, model, c, bool(c.get("stream"))), cases))
        for case, exp, answer in zip(cases, expected, answers, strict=True):
            rows.append(compare(case, exp, "concurrent", bool(case.get("stream")), answer))
    return rows


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, type=Path, help="the checkpoint directory")
    parser.add_argument("--cases", required=True, type=Path, help="JSONL: reference requests with a 'stream' flag")
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=120, help="seconds for each HTTP request")
    args = parser.parse_args(argv)

    start = time.monotonic()
    report: dict = {"url": args.url}
    try:
        import hf_greedy

        cases = read_cases(args.cases)
        ref = hf_greedy.load(args.model)
        expected = [hf_greedy.generate(ref, case) for case in cases]
    except Exception as e:  # the checker's own failure, never the candidate's
        report.update(passed=False, error=f"the checker could not prepare its cases: {type(e).__name__}: {e}")
        write(args.report, report, start)
        print(f"ERROR {report['error']}", file=sys.stderr)
        return EXIT_CHECKER_ERROR
    rows = check(args.url.rstrip("/"), cases, expected, args.timeout)
    bad = [r for r in rows if r["status"] != "ok"]
    report.update(passed=not bad, total=len(rows), failures=len(bad), cases=rows)
    write(args.report, report, start)
    for r in bad:
        detail = r.get("error") or (f"expected {r['expected']!r} ({r['expected_finish_reason']}), "
                                    f"got {r['got']!r} ({r['finish_reason']})")
        print(f"{r['status'].upper()} {r['id']} {r['mode']} stream={r['stream']}: {detail}")
    print(f"accuracy: {len(rows) - len(bad)}/{len(rows)} ok")
    return EXIT_FAIL if bad else EXIT_PASS


def write(path: Path, report: dict, start: float) -> None:
    report["duration_s"] = round(time.monotonic() - start, 3)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=2) + "\n")


if __name__ == "__main__":
    sys.exit(main())
