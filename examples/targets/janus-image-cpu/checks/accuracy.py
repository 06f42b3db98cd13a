"""The accuracy checker: every case of ``checks/cases.jsonl`` asked alone, then all at once, each answer
scored as the output comparator scores it (``checks/compare.py``: guided agreement under teacher forcing
at least the tolerance declared in target.toml's ``[comparator].command``, and a PNG that is the decode of
its tokens).

    python checks/accuracy.py --url URL --model DIR --cases checks/cases.jsonl \
        --target-toml TARGET/target.toml --report report.json

Exit 0 with ``"passed": true`` when every answer passes, 1 with ``"passed": false`` when one does not (a
wrong image, an HTTP error, a malformed answer), 2 when the checker itself fails.
"""

from __future__ import annotations

import argparse
import json
import sys
import traceback
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parent))

import compare  # noqa: E402 (after the path it lives on)


def ask(client: httpx.Client, url: str, prompt: str, timeout: float) -> tuple[dict | None, str | None]:
    try:
        r = client.post(url + "/v1/images/generations", json={"prompt": prompt, "n": 1, "response_format": "b64_json"},
                        timeout=timeout)
        if r.status_code != 200:
            return None, f"HTTP {r.status_code}: {r.text[:200]}"
        data = r.json()["data"]
        if not isinstance(data, list) or len(data) != 1 or not isinstance(data[0], dict):
            return None, "data is not a list of one image"
        return data[0], None
    except (httpx.HTTPError, ValueError, KeyError, TypeError) as e:
        return None, f"{type(e).__name__}: {e}"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True)
    parser.add_argument("--cases", required=True, type=Path)
    parser.add_argument("--target-toml", required=True, type=Path)
    parser.add_argument("--report", required=True, type=Path)
    parser.add_argument("--timeout", type=float, default=300, help="per request, seconds")
    args = parser.parse_args(argv)
    try:
        need = compare.declared_min_agreement(args.target_toml)
        cases = [json.loads(x) for x in args.cases.read_text().splitlines() if x.strip()]
        ref = compare._reference()
        model, tokenizer = ref.load(args.model)
        expected = [ref.generate(model, ref.prompt_ids(model, tokenizer, c["prompt"])) for c in cases]
    except Exception:
        args.report.write_text(json.dumps({"passed": False, "error": traceback.format_exc()[-2000:]}))
        print(traceback.format_exc(), file=sys.stderr)
        return 2
    rows = []
    with httpx.Client(limits=httpx.Limits(max_connections=len(cases) + 1)) as client:
        alone = [ask(client, args.url, c["prompt"], args.timeout) for c in cases]
        with ThreadPoolExecutor(max_workers=len(cases)) as pool:
            together = list(pool.map(lambda c: ask(client, args.url, c["prompt"], args.timeout), cases))
    for mode, answers in (("alone", alone), ("concurrent", together)):
        for case, exp, (answer, error) in zip(cases, expected, answers, strict=True):
            row = {"id": case["id"], "mode": mode}
            if error is not None:
                rows.append({**row, "status": "error", "error": error})
                continue
            verdict = compare.score(model, tokenizer, case["prompt"], answer, need, exp)
            rows.append({**row, "status": "ok" if verdict["ok"] else "mismatch", **verdict})
    bad = [r for r in rows if r["status"] != "ok"]
    summary = f"{len(rows) - len(bad)}/{len(rows)} images within the tolerance (guided agreement >= {need:g})"
    if bad:
        summary += f"; first failure: {bad[0]['id']} ({bad[0]['mode']}): {bad[0].get('detail') or bad[0].get('error')}"
    args.report.write_text(json.dumps({"passed": not bad, "summary": summary, "min_agreement": need,
                                       "cases": rows}, indent=2))
    print(summary)
    return 0 if not bad else 1


if __name__ == "__main__":
    sys.exit(main())
