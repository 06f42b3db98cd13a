"""Accuracy gate for smollm2-json-cpu: each answer must equal the reference (HF ``generate`` under the
XGrammar mask, fp32, greedy) exactly, parse as JSON, and validate against its schema.

    python checks/accuracy.py --url http://127.0.0.1:PORT --model artifacts/model --report report.json

The cases are requests of ``checks/requests.jsonl`` (``CASES``: nested objects, arrays, enums, bounded
numbers, string formats and patterns, an optional field), one ``json_object`` request and one plain
chat without ``response_format``. They are sent twice: one at a time without streaming, then all at
once, every other one streamed. Text and finish_reason must equal the reference's; a ``json_schema``
answer must also parse and validate (``jsonschema``, formats checked).

Exit status (vibeserve's checker contract): 0 all cases pass; 1 the server fails (a difference, an
invalid document, an HTTP error or a malformed response); 2 the checker itself could not run (a broken
reference or artifact, or a reference answer that does not validate). The JSON report, with a boolean
"passed", is written in every case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import jsonschema

TARGET_DIR = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(TARGET_DIR / "reference"))

import json_reference  # noqa: E402  (found through the path set just above)

EXIT_PASS, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
REQUESTS = TARGET_DIR / "checks" / "requests.jsonl"
CASES = ["person", "weather", "user-email", "shopping", "server", "optional-phone", "nested-company",
         "matrix", "invoice", "uuid-record"]
EXTRA = [
    {"id": "any-json", "messages": [{"role": "user", "content": "Describe a cat as a JSON object with two keys: name and age."}],
     "max_tokens": 48, "response_format": {"type": "json_object"}},
    {"id": "plain-chat", "messages": [{"role": "user", "content": "What is JSON? One sentence."}], "max_tokens": 24},
]


class ServerError(Exception):
    """The server did not give a valid answer (HTTP error, malformed body, timeout)."""


def cases(only: list[str] | None = None) -> list[dict]:
    rows = {r["id"]: r for r in map(json.loads, REQUESTS.read_text().splitlines())}
    chosen = [{**rows[i], "kind": "chat"} for i in CASES] + [{**r, "kind": "chat"} for r in EXTRA]
    if only:
        known = {**rows, **{r["id"]: r for r in EXTRA}}
        unknown = sorted(set(only) - set(known))
        if unknown:
            raise ValueError(f"--only names unknown cases {unknown}")
        chosen = [{**known[i], "kind": "chat"} for i in only]
    return chosen


def schema_problem(case: dict, text: str) -> str | None:
    """Why ``text`` is not a valid answer to a ``json_schema`` case (None when it is, or no schema)."""
    fmt = case.get("response_format") or {}
    if fmt.get("type") not in ("json_schema", "json_object"):
        return None
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as e:
        return f"not JSON: {e}"
    if fmt["type"] == "json_object":
        return None
    schema = fmt["json_schema"]["schema"]
    validator = jsonschema.Draft202012Validator(schema, format_checker=jsonschema.Draft202012Validator.FORMAT_CHECKER)
    error = jsonschema.exceptions.best_match(validator.iter_errors(doc))
    return None if error is None else f"does not validate: {error.message}"


MODEL_NAME = "smollm2-135m-instruct"  # asked for when the server does not list its model


def served_model(client: httpx.Client, url: str) -> str:
    """The model id the server lists first at /v1/models (a stock engine accepts only its own name)."""
    try:
        return str(client.get(url + "/v1/models").json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return MODEL_NAME


def ask(client: httpx.Client, url: str, case: dict, stream: bool, model: str = MODEL_NAME) -> tuple[str, str | None]:
    body = {"model": model, "messages": case["messages"], "max_tokens": case["max_tokens"],
            "temperature": 0, "stream": stream}
    if "response_format" in case:
        body["response_format"] = case["response_format"]
    path = "/v1/chat/completions"
    try:
        if not stream:
            r = client.post(url + path, json=body)
            if r.status_code != 200:
                raise ServerError(f"POST {path} answered {r.status_code}: {r.text[:300]}")
            choice = r.json()["choices"][0]
            return choice["message"]["content"], choice.get("finish_reason")
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
                choice = json.loads(data)["choices"][0]
                parts.append(choice["delta"].get("content") or "")
                finish = choice.get("finish_reason") or finish
        if not done and finish is None:
            raise ServerError(f"POST {path} (stream) ended without a finish_reason or data: [DONE]")
        return "".join(parts), finish
    except httpx.HTTPError as e:
        raise ServerError(f"POST {path}: {type(e).__name__}: {e}") from None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ServerError(f"POST {path}: malformed response ({type(e).__name__}: {e})") from None


def compare(case: dict, expected: dict, phase: str, stream: bool, answer) -> dict:
    row = {"id": case["id"], "phase": phase, "stream": stream, "expected": expected["text"],
           "expected_finish_reason": expected["finish_reason"]}
    if isinstance(answer, ServerError):
        return {**row, "status": "error", "error": str(answer)}
    got, finish = answer
    row.update(got=got, finish_reason=finish)
    if got != expected["text"] or finish != expected["finish_reason"]:
        at = next((i for i, (a, b) in enumerate(zip(expected["text"], got, strict=False)) if a != b),
                  min(len(expected["text"]), len(got)))
        return {**row, "status": "mismatch", "first_divergent_char": at}
    problem = schema_problem(case, got)
    return {**row, "status": "invalid", "error": problem} if problem else {**row, "status": "ok"}


def run(url: str, model: Path, timeout: float, only: list[str] | None = None) -> dict:
    todo = cases(only)
    ref = json_reference.load(model)
    expected = [json_reference.generate(ref, case) for case in todo]
    for case, exp in zip(todo, expected, strict=True):
        problem = schema_problem(case, exp["text"])
        if problem:  # the workload asks for more than max_tokens allows, or the grammar is wrong
            raise ValueError(f"the reference's own answer to {case['id']!r} {problem}: {exp['text']!r}")

    def one(case: dict, stream: bool):
        try:
            return ask(client, url, case, stream, served)
        except ServerError as e:
            return e

    results = []
    with httpx.Client(timeout=timeout, limits=httpx.Limits(max_connections=len(todo) + 1)) as client:
        served = served_model(client, url)
        for case, exp in zip(todo, expected, strict=True):
            results.append(compare(case, exp, "alone", False, one(case, False)))
        with ThreadPoolExecutor(max_workers=len(todo)) as pool:
            answers = list(pool.map(lambda ic: one(ic[1], ic[0] % 2 == 0), enumerate(todo)))
        for i, (case, exp, answer) in enumerate(zip(todo, expected, answers, strict=True)):
            results.append(compare(case, exp, "concurrent", i % 2 == 0, answer))
    return {"cases": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True, help="base URL of the server, e.g. http://127.0.0.1:8000")
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=300, help="seconds for each HTTP request")
    parser.add_argument("--only", action="append", metavar="ID", help="check only this request (repeatable)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        report = run(args.url.rstrip("/"), args.model, args.timeout, args.only)
    except Exception as e:  # a broken reference, artifact or workload is the gate's error, not the server's
        report = {"cases": [], "error": f"{type(e).__name__}: {e}"}
    rows = report["cases"]
    bad = [r for r in rows if r["status"] != "ok"]
    report = {"passed": not bad and "error" not in report, "failures": len(bad), "total": len(rows),
              "summary": f"{len(bad)} of {len(rows)} answers differ, fail to validate or failed",
              "duration_s": round(time.monotonic() - start, 3), **report}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2, ensure_ascii=False) + "\n")
    for r in bad:
        detail = r.get("error") or f"expected {r['expected']!r}, got {r['got']!r}"
        print(f"{r['status'].upper()} {r['id']} {r['phase']} stream={r['stream']}: {detail}")
    if "error" in report:
        print(f"ERROR {report['error']}")
        return EXIT_ERROR
    print(f"accuracy: {len(rows) - len(bad)}/{len(rows)} ok")
    return EXIT_MISMATCH if bad else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
