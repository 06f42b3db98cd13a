"""Accuracy gate for smollm2-code-edit-cpu: the server's greedy answer must equal the reference (Hugging
Face ``generate``, fp32, greedy; it never sees the prediction) whatever the request's ``prediction``.

    python checks/accuracy.py --url URL --model artifacts/model --reference ../smollm2-chat-cpu/reference \\
        --report report.json

Each case (``CASES``, requests of ``checks/requests.jsonl``) is sent five times, one at a time, without
streaming and then streamed: with its prediction (the original code), a wrong one (another function),
a partial one (its first half), an empty one, and none. Every answer's text and finish_reason must equal
the reference's for that request.

Exit status: 0 all pass; 1 the server fails (a difference, an HTTP error, a malformed response); 2 the
checker itself could not run. The JSON report, with a boolean "passed", is written in every case.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

import httpx

TARGET_DIR = Path(__file__).resolve().parent.parent
EXIT_PASS, EXIT_MISMATCH, EXIT_ERROR = 0, 1, 2
CASES = ["glob._ishidden.docstring", "calendar.isleap.argument", "glob.has_magic.argument"]


class ServerError(Exception):
    """The server did not give a valid answer."""


def variants(rows: dict[str, dict], only: list[str] | None, cap: int | None = None) -> list[dict]:
    """Each case with its right, wrong, partial, empty and absent prediction."""
    names = only or CASES
    unknown = sorted(set(names) - set(rows))
    if unknown:
        raise ValueError(f"unknown cases {unknown}")
    others = list(rows.values())
    out = []
    for name in names:
        row = {**rows[name], "kind": "chat"}
        if cap:
            row["max_tokens"] = min(row["max_tokens"], cap)
        code = row["prediction"]["content"]
        wrong = others[(others.index(rows[name]) + 7) % len(others)]["prediction"]["content"]
        for label, content in (("right", code), ("wrong", wrong), ("partial", code[: len(code) // 2]), ("empty", "")):
            out.append({**row, "id": f"{name}.{label}", "prediction": {"type": "content", "content": content}})
        out.append({k: v for k, v in row.items() if k != "prediction"} | {"id": f"{name}.none"})
    return out


MODEL_NAME = "smollm2-135m-instruct"  # asked for when the server does not list its model


def served_model(client: httpx.Client, url: str) -> str:
    """The model id the server lists first at /v1/models (a stock engine accepts only its own name)."""
    try:
        return str(client.get(url + "/v1/models").json()["data"][0]["id"])
    except (httpx.HTTPError, ValueError, KeyError, IndexError, TypeError):
        return MODEL_NAME


def ask(client: httpx.Client, url: str, case: dict, stream: bool, model: str = MODEL_NAME) -> tuple[str, str | None]:
    body = {"model": model, "messages": case["messages"], "max_tokens": case["max_tokens"],
            "temperature": 0, "stream": stream, **({"prediction": case["prediction"]} if "prediction" in case else {})}
    try:
        if not stream:
            r = client.post(url + "/v1/chat/completions", json=body)
            if r.status_code != 200:
                raise ServerError(f"answered {r.status_code}: {r.text[:300]}")
            choice = r.json()["choices"][0]
            return choice["message"]["content"], choice.get("finish_reason")
        parts, finish, done = [], None, False
        with client.stream("POST", url + "/v1/chat/completions", json=body) as r:
            if r.status_code != 200:
                raise ServerError(f"answered {r.status_code} (stream): {r.read()[:300]!r}")
            for line in r.iter_lines():
                if line.startswith("data:"):
                    data = line[5:].strip()
                    if data == "[DONE]":
                        done = True
                        break
                    choice = json.loads(data)["choices"][0]
                    parts.append(choice["delta"].get("content") or "")
                    finish = choice.get("finish_reason") or finish
        # A stream is complete at data: [DONE], or when it closes cleanly after a chunk that carried a
        # finish_reason (`transformers serve` ends that way); one that stops before either is cut short.
        if not done and finish is None:
            raise ServerError("the stream ended without a finish_reason or data: [DONE]")
        return "".join(parts), finish
    except httpx.HTTPError as e:
        raise ServerError(f"{type(e).__name__}: {e}") from None
    except (ValueError, KeyError, IndexError, TypeError, AttributeError) as e:
        raise ServerError(f"malformed response ({type(e).__name__}: {e})") from None


def run(url: str, model: Path, reference: Path, timeout: float, only: list[str] | None, cap: int | None) -> dict:
    sys.path.insert(0, str(reference))
    import smollm2_reference  # the chat kit's reference: HF generate, fp32, greedy

    rows = {r["id"]: r for r in map(json.loads, (TARGET_DIR / "checks" / "requests.jsonl").read_text().splitlines())}
    todo = variants(rows, only, cap)
    ref = smollm2_reference.load(model)
    expected: dict[str, dict] = {}  # the reference ignores the prediction: one answer per request
    results = []
    with httpx.Client(timeout=timeout) as client:
        served = served_model(client, url)
        for stream in (False, True):
            for case in todo:
                base = case["id"].rsplit(".", 1)[0]
                if base not in expected:
                    expected[base] = smollm2_reference.generate(ref, {**case, "id": base})
                want = expected[base]
                row = {"id": case["id"], "stream": stream, "expected": want["text"]}
                try:
                    got, finish = ask(client, url, case, stream, served)
                except ServerError as e:
                    results.append({**row, "status": "error", "error": str(e)})
                    continue
                same = got == want["text"] and finish == want["finish_reason"]
                results.append({**row, "got": got, "finish_reason": finish, "status": "ok" if same else "mismatch"})
    return {"cases": results}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True, type=Path)
    parser.add_argument("--reference", required=True, type=Path, help="the smollm2-chat-cpu kit's reference/ folder")
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=600)
    parser.add_argument("--only", action="append", metavar="ID", help="check only this request (repeatable)")
    parser.add_argument("--max-tokens", type=int, help="cap every case's max_tokens (shorter answers, for tests)")
    args = parser.parse_args(argv)
    start = time.monotonic()
    try:
        report = run(args.url.rstrip("/"), args.model, args.reference, args.timeout, args.only, args.max_tokens)
    except Exception as e:  # a broken reference, artifact or workload is the gate's error
        report = {"cases": [], "error": f"{type(e).__name__}: {e}"}
    bad = [r for r in report["cases"] if r["status"] != "ok"]
    report = {"passed": not bad and "error" not in report, "failures": len(bad), "total": len(report["cases"]),
              "duration_s": round(time.monotonic() - start, 3), **report}
    args.report.parent.mkdir(parents=True, exist_ok=True)
    args.report.write_text(json.dumps(report, indent=2) + "\n")
    for r in bad:
        print(f"{r['status'].upper()} {r['id']} stream={r['stream']}: {r.get('error') or repr(r.get('got'))[:200]}")
    if "error" in report:
        print(f"ERROR {report['error']}")
        return EXIT_ERROR
    print(f"accuracy: {report['total'] - len(bad)}/{report['total']} ok")
    return EXIT_MISMATCH if bad else EXIT_PASS


if __name__ == "__main__":
    sys.exit(main())
