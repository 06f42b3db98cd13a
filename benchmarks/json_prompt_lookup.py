"""Would prompt-lookup speculation pay on top of jump-forward for the smollm2-json-cpu kit? Replayed over the
greedy answers, so the counts do not depend on the machine.

For each request of the kit's workload (``checks/requests.jsonl``): the reference's greedy answer (Hugging Face
``generate`` under the request's XGrammar grammar, fp32), then two replays of that answer:

- the grammar's reach: the answer's tokens fed to XGrammar's matcher one by one; a token is *forced* when its
  text starts the matcher's jump-forward string at that point (what jump-forward proposes; round 1 keeps
  those of them the model spells the same way);
- prompt lookup: before each forward, the last n tokens (n = 4, 3, 2) are looked up in the prompt and the
  answer so far, and the ``--num-tokens`` tokens after the latest match are proposed; the run that equals
  the greedy answer is accepted, and the forward adds one token of its own.

Forwards are counted for: the seed (one per token), jump-forward alone and prompt lookup alone (each accepting
what it proposes correctly), and both (each step taking the longer accepted run). Jump-forward's count is a
lower bound on its forwards (every forced token assumed accepted; round 1 measured 67%), so "both" against
"jump-forward alone" is the most prompt lookup could add. Prints one JSON object.

    python benchmarks/json_prompt_lookup.py [--kit examples/targets/smollm2-json-cpu] [--num-tokens 10] [--limit N]
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def lookup(context: list[int], num_tokens: int) -> list[int]:
    """Prompt lookup's proposal: the tokens after the latest earlier occurrence of the context's last n tokens."""
    for n in (4, 3, 2):
        if len(context) <= n:
            continue
        tail = context[-n:]
        for start in range(len(context) - n - 1, -1, -1):
            if context[start:start + n] == tail:
                return context[start + n:start + n + num_tokens]
    return []


def agreeing(proposal: list[int], answer: list[int], at: int) -> int:
    run = 0
    while run < len(proposal) and at + run < len(answer) and proposal[run] == answer[at + run]:
        run += 1
    return run


def replay(prompt: list[int], answer: list[int], forced: list[bool], num_tokens: int) -> dict:
    counts = {"jump_forward": 0, "prompt_lookup": 0, "both": 0}
    proposed = accepted = accepted_unforced = 0
    for mode in counts:
        at = 0
        while at < len(answer):
            run_jf = 0
            while mode != "prompt_lookup" and at + run_jf < len(answer) - 1 and forced[at + run_jf]:
                run_jf += 1
            run_pl = 0
            if mode != "jump_forward":
                proposal = lookup(prompt + answer[:at], num_tokens)
                run_pl = agreeing(proposal, answer[:-1], at)  # the last token is the forward's own
                if mode == "prompt_lookup":
                    proposed += len(proposal)
                    accepted += run_pl
                    accepted_unforced += sum(not f for f in forced[at:at + run_pl])
            counts[mode] += 1
            at += max(run_jf, run_pl) + 1
    return {**counts, "pl_proposed": proposed, "pl_accepted": accepted, "pl_accepted_unforced": accepted_unforced}


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--kit", type=Path, default=REPO / "examples" / "targets" / "smollm2-json-cpu")
    ap.add_argument("--num-tokens", type=int, default=10)
    ap.add_argument("--limit", type=int, default=None, help="only the first N requests")
    args = ap.parse_args()
    if args.num_tokens < 1 or (args.limit is not None and args.limit < 1):
        ap.error("--num-tokens and --limit must be positive")
    model = args.kit / "artifacts" / "model"
    if not (model / "config.json").is_file():
        print(f"json_prompt_lookup.py: no model at {model}; run the kit's setup first "
              f"(cd {args.kit} && python setup_model.py --out artifacts/model)", file=sys.stderr)
        return 2
    sys.path.insert(0, str(args.kit / "reference"))
    import xgrammar as xgr
    from json_reference import compile_grammar, encode, generate, load, schema_of

    ref = load(model)
    requests = [json.loads(x) for x in (args.kit / "checks" / "requests.jsonl").read_text().splitlines() if x.strip()]
    rows, started = [], time.monotonic()
    for request in requests[: args.limit]:
        schema = schema_of(request)
        if schema is None:
            continue
        answer = generate(ref, request)["token_ids"]
        matcher = xgr.GrammarMatcher(compile_grammar(ref.compiler, schema))
        forced = []
        for token in answer:
            piece = ref.tokenizer.decode([token])
            ahead = "" if matcher.is_terminated() else matcher.find_jump_forward_string()
            forced.append(bool(piece) and ahead.startswith(piece))
            if not matcher.is_terminated():
                matcher.accept_token(token)
        rows.append({"id": request["id"], "tokens": len(answer), "forced": sum(forced),
                     **replay(encode(ref.tokenizer, request), answer, forced, args.num_tokens)})
    total = {k: sum(r[k] for r in rows) for k in ("tokens", "forced", "jump_forward", "prompt_lookup", "both",
                                                 "pl_proposed", "pl_accepted", "pl_accepted_unforced")}
    print(json.dumps({
        "benchmark": "json_prompt_lookup", "kit": args.kit.name, "requests": len(rows), "num_tokens": args.num_tokens,
        "forwards": {"seed": total["tokens"], "jump_forward": total["jump_forward"],
                     "prompt_lookup": total["prompt_lookup"], "both": total["both"]},
        "tokens": total["tokens"], "forced_tokens": total["forced"],
        "prompt_lookup": {"proposed": total["pl_proposed"], "accepted": total["pl_accepted"],
                          "accepted_not_forced": total["pl_accepted_unforced"]},
        "seconds": round(time.monotonic() - started, 1), "per_request": rows,
    }))
    return 0


if __name__ == "__main__":
    sys.exit(main())
