"""Speculative decoding with a draft model, greedy: the draft proposes k tokens, the target checks them in
one forward pass and keeps the longest agreeing prefix plus its own next token.

Run it: ``python draft_speculation.py``. The target is a 4-layer tiny Llama; the draft is its first layer
with the same embeddings, final norm and head (a layer-skip draft, so the two agree often enough to show
the mechanics). Both keep paged KV caches; rejected tokens are rolled back by truncating them. Exit 0
only if the output equals the target's own greedy decoding; the acceptance rate and the number of target
forward passes are reported.

Uses the engine of the paged-kv-cache skill (``paged_kv.py``), found next to this skill.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "paged-kv-cache" / "scripts"))

import torch  # noqa: E402
from paged_kv import BlockManager, PagedEngine, SeqKV, build_tiny_llama, reference_greedy  # noqa: E402


def make_pair(seed: int = 2) -> tuple[torch.nn.Module, torch.nn.Module]:
    """A 4-layer target whose later layers change the residual stream little, and its 1-layer draft."""
    target = build_tiny_llama(seed=seed, layers=4)
    with torch.no_grad():
        for layer in target.model.layers[1:]:
            layer.self_attn.o_proj.weight.mul_(0.1)
            layer.mlp.down_proj.weight.mul_(0.1)
    draft = build_tiny_llama(seed=seed, layers=1)
    draft.load_state_dict({k: v for k, v in target.state_dict().items()
                           if not k.startswith("model.layers.") or k.startswith("model.layers.0.")})
    return target, draft


def speculate(target: PagedEngine, draft: PagedEngine, prompt: list[int], new_tokens: int, k: int):
    """Greedy speculative decoding; returns (tokens, proposed, accepted, target forward passes)."""
    t_seq, d_seq = SeqKV(), SeqKV()
    tokens = list(prompt)
    # Prefill both; the last prompt token stays pending (its K/V is written by the next verify pass).
    target.step([(t_seq, tokens[:-1])])
    proposed = accepted = passes = 0
    out: list[int] = []
    while len(out) < new_tokens:
        # Draft: catch up on tokens it has not seen, then propose k tokens one at a time.
        guess, feed = [], tokens[d_seq.length:]
        for _ in range(min(k, new_tokens - len(out))):
            nxt = int(draft.step([(d_seq, feed)])[0][-1].argmax())
            guess.append(nxt)
            feed = [nxt]
        # Target: one pass over the pending token and the guesses gives its choice after each of them.
        logits = target.step([(t_seq, [tokens[-1]] + guess)])[0]
        passes += 1
        choice = logits.argmax(-1).tolist()
        n = 0
        while n < len(guess) and guess[n] == choice[n]:
            n += 1
        proposed, accepted = proposed + len(guess), accepted + n
        emitted = guess[:n] + [choice[n]]  # the agreed guesses, then the target's own token
        tokens += emitted
        out += emitted
        # Roll back K/V of rejected guesses: keep everything before the newly pending token.
        target.truncate(t_seq, len(tokens) - 1)
        draft.truncate(d_seq, min(d_seq.length, len(tokens) - 1))
    target.free(t_seq)
    draft.free(d_seq)
    return out[:new_tokens], proposed, accepted, passes


def main() -> int:
    torch.set_num_threads(1)
    target_model, draft_model = make_pair()
    target = PagedEngine(target_model, BlockManager(num_blocks=32, block_size=4))
    draft = PagedEngine(draft_model, BlockManager(num_blocks=32, block_size=4))
    gen = torch.Generator().manual_seed(21)
    ok, totals = True, [0, 0, 0, 0]
    for i in range(3):
        prompt = torch.randint(0, 128, (8 + 3 * i,), generator=gen).tolist()
        new_tokens = 24
        got, proposed, acc, passes = speculate(target, draft, prompt, new_tokens, k=4)
        want = reference_greedy(target_model, prompt, new_tokens)
        if got != want:
            ok = False
            print(f"MISMATCH prompt {i}: speculative {got} vs greedy {want}")
        for j, v in enumerate((new_tokens, proposed, acc, passes)):
            totals[j] += v
        if target.manager.num_free != target.manager.num_blocks or draft.manager.num_free != draft.manager.num_blocks:
            ok = False
            print("LEAK: a KV block is still held after the request")
    tokens, proposed, acc, passes = totals
    print(f"draft k=4: acceptance rate {acc / proposed:.0%} ({acc}/{proposed}); {tokens} tokens in {passes} "
          f"target forward passes ({tokens / passes:.2f} tokens per pass); output "
          f"{'equals' if ok else 'DIFFERS from'} greedy decoding of the target")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
