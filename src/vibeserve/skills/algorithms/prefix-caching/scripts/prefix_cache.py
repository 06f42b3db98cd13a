"""Prefix caching: full KV blocks are found again by a hash of their tokens and of everything before them.

Run it: ``python prefix_cache.py``. Requests share a long system prompt and differ in their user part.
Full blocks of each prompt are registered under a chained hash (block tokens + parent hash, as in vLLM's
design and nano-vllm's block manager); a later request maps the longest chain of hits into its block
table and prefills only the rest. Finished requests leave their blocks in the cache (evictable, least
recently used first). Exit 0 only if every output equals the reference greedy decoding of the full
prompt, a cache hit happened, and the cache never held a block with the wrong tokens.

Uses the engine of the paged-kv-cache skill (``paged_kv.py``), found next to this skill.
"""

from __future__ import annotations

import sys
from collections import OrderedDict
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "paged-kv-cache" / "scripts"))

import torch  # noqa: E402
from paged_kv import BlockManager, PagedEngine, SeqKV, build_tiny_llama, reference_greedy  # noqa: E402


class PrefixCache:
    """hash(parent hash, block tokens) -> block. The cache holds one reference on each block it maps, so a
    cached block survives its request; when the pool runs dry, blocks only the cache holds are evicted."""

    def __init__(self, manager: BlockManager):
        self.manager = manager
        self.blocks: OrderedDict[int, tuple[int, tuple[int, ...]]] = OrderedDict()  # hash -> (block, tokens)
        self.evictions = 0

    def chain(self, tokens: list[int]) -> list[tuple[int, tuple[int, ...]]]:
        """(hash, tokens) of each full block of ``tokens``; a block's hash covers every token before it."""
        bs, out, parent = self.manager.block_size, [], None
        for i in range(len(tokens) // bs):
            block_tokens = tuple(tokens[i * bs:(i + 1) * bs])
            parent = hash((parent, block_tokens))
            out.append((parent, block_tokens))
        return out

    def lookup(self, prompt: list[int]) -> list[int]:
        """Blocks of the longest cached prefix, shared into the caller's table. At least one prompt token is
        left to compute, because the last prompt position's logits give the first output token."""
        hits = []
        for h, block_tokens in self.chain(prompt[:-1]):
            entry = self.blocks.get(h)
            if entry is None or entry[1] != block_tokens:  # compare tokens too: a hash can collide
                break
            self.blocks.move_to_end(h)
            hits.append(self.manager.share(entry[0]))
        return hits

    def insert(self, tokens: list[int], table: list[int]) -> None:
        for (h, block_tokens), block in zip(self.chain(tokens), table, strict=False):
            if h not in self.blocks:
                self.blocks[h] = (self.manager.share(block), block_tokens)

    def evict(self, want_free: int) -> None:
        for h in list(self.blocks):
            if self.manager.num_free >= want_free:
                return
            block, _ = self.blocks[h]
            if self.manager.refs[block] == 1:  # only the cache holds it
                del self.blocks[h]
                self.manager.release(block)
                self.evictions += 1


def serve(engine: PagedEngine, cache: PrefixCache | None, prompt: list[int], new_tokens: int) -> tuple[list[int], int]:
    """Generate greedily; return the output and how many prompt tokens were prefilled (not reused)."""
    seq = SeqKV()
    if cache is not None:
        cache.evict(engine.manager.blocks_for(len(prompt) + new_tokens))
        seq.block_table = cache.lookup(prompt)
        seq.length = len(seq.block_table) * engine.manager.block_size
    computed = len(prompt) - seq.length
    nxt = int(engine.step([(seq, prompt[seq.length:])])[0][-1].argmax())
    if cache is not None:
        cache.insert(prompt, seq.block_table)
    out = [nxt]
    while len(out) < new_tokens:
        out.append(int(engine.step([(seq, [out[-1]])])[0][-1].argmax()))
    engine.free(seq)
    return out, computed


def main() -> int:
    torch.set_num_threads(1)
    model = build_tiny_llama(seed=5)
    gen = torch.Generator().manual_seed(11)
    system = torch.randint(0, 128, (26,), generator=gen).tolist()
    users = [torch.randint(0, 128, (n,), generator=gen).tolist() for n in (3, 6, 2, 5, 4)]
    prompts = [system + u for u in users] + [system + users[1]]  # the last one repeats a whole prompt
    new_tokens = 8

    # A pool too small to cache everything: later requests must evict least recently used blocks.
    engine = PagedEngine(model, BlockManager(num_blocks=18, block_size=4))
    cache = PrefixCache(engine.manager)
    ok, computed_total = True, 0
    for i, prompt in enumerate(prompts):
        out, computed = serve(engine, cache, prompt, new_tokens)
        computed_total += computed
        want = reference_greedy(model, prompt, new_tokens)
        if out != want:
            ok = False
            print(f"MISMATCH request {i}: cached {out} vs reference {want}")
    for block, tokens in cache.blocks.values():  # the cache must never map a block to stale tokens
        assert engine.manager.refs[block] >= 1 and len(tokens) == engine.manager.block_size
    total = sum(len(p) for p in prompts)
    saved = total - computed_total
    if saved == 0:
        ok = False
        print("no prompt token was reused: the cache never hit")
    print(f"{len(prompts)} requests sharing a {len(system)}-token system prompt: prefilled {computed_total} of "
          f"{total} prompt tokens ({saved / total:.0%} reused from cached blocks of "
          f"{engine.manager.block_size}, {cache.evictions} evicted); outputs "
          f"{'equal' if ok else 'DIFFER from'} the reference")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
