"""Draft-free speculation: guesses come from text the request already carries, not from a draft model.

Run it: ``python lookup_speculation.py``. Two sources of guesses, one verifier:
- predicted outputs (OpenAI's ``prediction`` parameter; code editing): the request ships the likely answer,
  here the model's own greedy output with a few tokens replaced, one span deleted and one inserted, as an
  edited file differs from the original;
- prompt lookup (n-gram): the guess is what followed the last n tokens the previous time they occurred in
  the prompt or the output so far.
The target verifies up to k guesses per forward pass and keeps the longest agreeing prefix plus its own
next token; after a mismatch the lookup re-synchronises on the last n generated tokens. Exit 0 only if
both outputs equal plain greedy decoding; acceptance rates and forward passes are reported.

Uses the engine of the paged-kv-cache skill (``paged_kv.py``), found next to this skill.
"""

from __future__ import annotations

import sys
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "paged-kv-cache" / "scripts"))

import torch  # noqa: E402
from paged_kv import BlockManager, PagedEngine, SeqKV, build_tiny_llama, reference_greedy  # noqa: E402


def lookup(corpus: list[int], context: list[int], k: int, max_n: int = 3, min_n: int = 1) -> list[int]:
    """Up to k tokens that followed the longest suffix of ``context`` (n from max_n down to min_n) at its
    latest earlier occurrence in ``corpus``; empty when nothing matches."""
    for n in range(min(max_n, len(context)), min_n - 1, -1):
        suffix = context[-n:]
        for start in range(len(corpus) - n, -1, -1):
            if corpus[start:start + n] == suffix and start + n < len(corpus):
                return corpus[start + n:start + n + k]
    return []


def speculate(engine: PagedEngine, prompt: list[int], new_tokens: int, k: int,
              prediction: list[int] | None) -> tuple[list[int], int, int, int]:
    """Greedy decoding verified k guesses at a time; returns (tokens, proposed, accepted, forward passes)."""
    seq = SeqKV()
    engine.step([(seq, prompt[:-1])])  # the last prompt token stays pending
    out: list[int] = []
    proposed = accepted = passes = 0
    while len(out) < new_tokens:
        room = min(k, new_tokens - len(out))
        if prediction is not None:  # predicted output: aligned at the start, then by n-gram on the output
            guess = prediction[:room] if not out else lookup(prediction, out, room)
        else:  # prompt lookup over everything seen so far
            guess = lookup(prompt + out, prompt + out, room)
        logits = engine.step([(seq, [(prompt + out)[-1]] + guess)])[0]
        passes += 1
        choice = logits.argmax(-1).tolist()
        n = 0
        while n < len(guess) and guess[n] == choice[n]:
            n += 1
        proposed, accepted = proposed + len(guess), accepted + n
        out += guess[:n] + [choice[n]]
        engine.truncate(seq, len(prompt) + len(out) - 1)  # drop K/V of rejected guesses
    engine.free(seq)
    return out[:new_tokens], proposed, accepted, passes


def edited(tokens: list[int], gen: torch.Generator) -> list[int]:
    """A near copy: two tokens replaced, a 3-token span deleted, two tokens inserted."""
    t = list(tokens)
    for i in (7, 30):
        t[i] = (t[i] + 1 + int(torch.randint(0, 100, (1,), generator=gen))) % 128
    del t[18:21]
    t[40:40] = [1, 2]
    return t


def main() -> int:
    torch.set_num_threads(1)
    model = build_tiny_llama(seed=4)
    engine = PagedEngine(model, BlockManager(num_blocks=48, block_size=8))
    gen = torch.Generator().manual_seed(17)
    prompt = torch.randint(0, 128, (12,), generator=gen).tolist()
    new_tokens, k = 56, 8
    greedy = reference_greedy(model, prompt, new_tokens)

    ok = True
    runs = {"predicted output": edited(greedy, gen), "prompt lookup": None}
    for label, prediction in runs.items():
        got, proposed, acc, passes = speculate(engine, prompt, new_tokens, k, prediction)
        same = got == greedy
        ok &= same
        rate = f"{acc / proposed:.0%} ({acc}/{proposed})" if proposed else "n/a (nothing to guess)"
        print(f"{label}: acceptance {rate}; {new_tokens} tokens in {passes} forward passes "
              f"({new_tokens / passes:.2f} per pass, greedy needs {new_tokens}); output "
              f"{'equals' if same else 'DIFFERS from'} greedy decoding")
        if not same:
            print(f"  got  {got}\n  want {greedy}")
    if engine.manager.num_free != engine.manager.num_blocks:
        ok = False
        print("LEAK: KV blocks still held")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
