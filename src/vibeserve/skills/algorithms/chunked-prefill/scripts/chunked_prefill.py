"""Chunked prefill: a long prompt is prefilled in pieces that ride along with running decodes.

Run it: ``python chunked_prefill.py``. Two requests are decoding when a 45-token prompt arrives. Each step
has a token budget; decodes take one token each, and the long prompt fills what is left (the
Sarathi-Serve / vLLM "decode first, then chunk" order). Without chunking the whole prompt would be one
step far over the budget, and the decoders would stall behind it. Exit 0 only if all three outputs equal
the reference greedy decoding (a chunk boundary may fall anywhere, even mid-block), no step exceeded the
budget, and the long prompt really went in several chunks.

Uses the engine of the paged-kv-cache skill (``paged_kv.py``), found next to this skill.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "paged-kv-cache" / "scripts"))

import torch  # noqa: E402
from paged_kv import BlockManager, PagedEngine, SeqKV, build_tiny_llama, reference_greedy  # noqa: E402

BUDGET = 8  # tokens per forward pass (vLLM: --max-num-batched-tokens; SGLang: --chunked-prefill-size)


def main() -> int:
    torch.set_num_threads(1)
    model = build_tiny_llama(seed=9)
    engine = PagedEngine(model, BlockManager(num_blocks=40, block_size=4))
    gen = torch.Generator().manual_seed(13)
    short = [torch.randint(0, 128, (n,), generator=gen).tolist() for n in (6, 4)]
    long_prompt = torch.randint(0, 128, (45,), generator=gen).tolist()
    new_tokens = {0: 16, 1: 16, 2: 6}

    prompts = {0: short[0], 1: short[1], 2: long_prompt}
    kv = {i: SeqKV() for i in prompts}
    out: dict[int, list[int]] = {i: [] for i in prompts}
    prefilled = {i: 0 for i in prompts}  # prompt tokens whose K/V are written
    # The short requests start first (prefilled in step 0); the long one arrives at step 2.
    arrival = {0: 0, 1: 0, 2: 2}
    step, sizes, chunks = 0, [], 0
    while any(len(out[i]) < new_tokens[i] for i in prompts):
        items, owners, budget = [], [], BUDGET
        for i in prompts:  # decodes first: every running request advances one token per step
            if out[i] and len(out[i]) < new_tokens[i]:
                items.append((kv[i], [out[i][-1]]))
                owners.append(i)
                budget -= 1
        for i in prompts:  # then prefill chunks into what is left of the budget
            left = len(prompts[i]) - prefilled[i]
            if arrival[i] <= step and left > 0 and budget > 0:
                chunk = prompts[i][prefilled[i]:prefilled[i] + min(left, budget)]
                items.append((kv[i], chunk))
                owners.append(i)
                prefilled[i] += len(chunk)
                budget -= len(chunk)
                chunks += i == 2
        logits = engine.step(items)
        sizes.append(sum(len(t) for _, t in items))
        for i, lg in zip(owners, logits, strict=True):
            if prefilled[i] == len(prompts[i]):  # a chunk that ends mid-prompt samples nothing
                out[i].append(int(lg[-1].argmax()))
        step += 1

    ok = True
    for i in prompts:
        want = reference_greedy(model, prompts[i], new_tokens[i])
        if out[i] != want:
            ok = False
            print(f"MISMATCH request {i}: chunked {out[i]} vs reference {want}")
    if max(sizes) > BUDGET:
        ok = False
        print(f"a step ran {max(sizes)} tokens, over the budget of {BUDGET}")
    if chunks < 2:
        ok = False
        print("the long prompt was not chunked")
    print(f"a {len(long_prompt)}-token prompt prefilled in chunks alongside 2 decoding requests: {step} steps, "
          f"at most {max(sizes)} tokens per step (budget {BUDGET}; unchunked it would be one "
          f"{len(long_prompt) + 2}-token step); {chunks} chunks; outputs "
          f"{'equal' if ok else 'DIFFER from'} the reference")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
