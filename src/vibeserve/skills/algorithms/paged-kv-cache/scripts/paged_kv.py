"""A paged KV cache driving a tiny Llama: block manager (allocate, share, copy on write, free) + engine.

Run it: ``python paged_kv.py``. Two requests share a prompt prefix block by block, diverge (the shared
partial block is copied on write), decode together in one batched step per token, and are freed. Exit 0
only if every output equals the reference greedy decoding (the Transformers model recomputing the whole
sequence each step) and every block is back in the free list.

The other algorithm scripts import this module (``build_tiny_llama``, ``BlockManager``, ``PagedEngine``,
``reference_greedy``); their skills list paged-kv-cache in ``requires``. Needs torch and transformers.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field

import torch
from transformers import LlamaConfig, LlamaForCausalLM
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb


def build_tiny_llama(seed: int = 0, layers: int = 2, vocab_size: int = 128, hidden: int = 64,
                     heads: int = 4, kv_heads: int = 2, init_std: float = 0.1) -> LlamaForCausalLM:
    """A random fp32 Llama (grouped-query attention, RoPE, SwiGLU, RMSNorm); nothing is downloaded.

    A wider initialisation than the default keeps the top two logits well apart, so greedy decoding does
    not hinge on the last bit of a float and exactness checks test the algorithm, not rounding.
    """
    torch.manual_seed(seed)
    config = LlamaConfig(vocab_size=vocab_size, hidden_size=hidden, intermediate_size=2 * hidden,
                         num_hidden_layers=layers, num_attention_heads=heads, num_key_value_heads=kv_heads,
                         max_position_embeddings=1024, initializer_range=init_std, tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@torch.inference_mode()
def reference_greedy(model: LlamaForCausalLM, prompt: list[int], new_tokens: int) -> list[int]:
    """Greedy decoding with no cache at all: the whole sequence is recomputed for every token."""
    ids = list(prompt)
    for _ in range(new_tokens):
        logits = model(torch.tensor([ids]), use_cache=False).logits[0, -1]
        ids.append(int(logits.argmax()))
    return ids[len(prompt):]


class OutOfBlocks(RuntimeError):
    """The pool has no free block; a scheduler waits, preempts or evicts."""


class BlockManager:
    """Fixed-size KV blocks with reference counts: a block returns to the free list when no one holds it."""

    def __init__(self, num_blocks: int, block_size: int):
        self.num_blocks, self.block_size = num_blocks, block_size
        self.refs = [0] * num_blocks
        self.free: deque[int] = deque(range(num_blocks))

    @property
    def num_free(self) -> int:
        return len(self.free)

    def allocate(self) -> int:
        if not self.free:
            raise OutOfBlocks(f"all {self.num_blocks} blocks are in use")
        block = self.free.popleft()
        self.refs[block] = 1
        return block

    def share(self, block: int) -> int:
        assert self.refs[block] > 0, f"block {block} is free; only a held block can be shared"
        self.refs[block] += 1
        return block

    def release(self, block: int) -> None:
        assert self.refs[block] > 0, f"block {block} released twice"
        self.refs[block] -= 1
        if self.refs[block] == 0:
            self.free.append(block)

    def blocks_for(self, tokens: int) -> int:
        return -(-tokens // self.block_size)


@dataclass
class SeqKV:
    """One sequence's view of the cache: its block table and how many tokens have K/V written."""

    block_table: list[int] = field(default_factory=list)
    length: int = 0


class PagedEngine:
    """Runs the model's layers with K/V in a shared block pool (one tensor per layer for K and for V).

    ``step`` takes any mix of prefills, prefill chunks, decodes and speculative verifications: the
    projections and MLPs run once over all new tokens of all sequences, attention per sequence over
    its own blocks. It returns the logits of every new token, per sequence.
    """

    def __init__(self, model: LlamaForCausalLM, manager: BlockManager):
        cfg = model.config
        self.model, self.manager = model, manager
        self.heads, self.kv_heads = cfg.num_attention_heads, cfg.num_key_value_heads
        self.head_dim = getattr(cfg, "head_dim", None) or cfg.hidden_size // cfg.num_attention_heads
        self.device = next(model.parameters()).device
        shape = (manager.num_blocks * manager.block_size, self.kv_heads, self.head_dim)
        self.k = [torch.zeros(shape, device=self.device) for _ in range(cfg.num_hidden_layers)]
        self.v = [torch.zeros(shape, device=self.device) for _ in range(cfg.num_hidden_layers)]

    # -- block bookkeeping ---------------------------------------------------------------------------
    def fork(self, parent: SeqKV) -> SeqKV:
        """A new sequence sharing every block of ``parent``; writes later copy the shared partial block."""
        return SeqKV([self.manager.share(b) for b in parent.block_table], parent.length)

    def free(self, seq: SeqKV) -> None:
        for block in seq.block_table:
            self.manager.release(block)
        seq.block_table.clear()
        seq.length = 0

    def truncate(self, seq: SeqKV, length: int) -> None:
        """Forget K/V past ``length`` (rejected speculative tokens); blocks no longer needed go back."""
        assert length <= seq.length
        keep = self.manager.blocks_for(length)
        for block in seq.block_table[keep:]:
            self.manager.release(block)
        del seq.block_table[keep:]
        seq.length = length

    def reserve(self, seq: SeqKV, new: int) -> None:
        """Make room for ``new`` more tokens: copy a shared partial last block, then add blocks."""
        bs = self.manager.block_size
        if seq.length % bs and self.manager.refs[seq.block_table[-1]] > 1:
            # Copy on write: the partial last block is shared, and this sequence is about to append to it.
            old, fresh = seq.block_table[-1], self.manager.allocate()
            src, dst = slice(old * bs, old * bs + bs), slice(fresh * bs, fresh * bs + bs)
            for k, v in zip(self.k, self.v, strict=True):
                k[dst], v[dst] = k[src], v[src]
            self.manager.release(old)
            seq.block_table[-1] = fresh
        while len(seq.block_table) < self.manager.blocks_for(seq.length + new):
            seq.block_table.append(self.manager.allocate())

    def slots(self, seq: SeqKV, start: int, end: int) -> torch.Tensor:
        """Pool rows of positions ``start..end-1``: block_table[pos // block_size] * block_size + offset."""
        bs = self.manager.block_size
        pos = torch.arange(start, end)
        rows = torch.tensor(seq.block_table, dtype=torch.long)[pos // bs] * bs + pos % bs
        return rows.to(self.device)

    # -- the forward pass ----------------------------------------------------------------------------
    @torch.inference_mode()
    def step(self, items: list[tuple[SeqKV, list[int]]]) -> list[torch.Tensor]:
        """Append ``tokens`` to each sequence, return their logits (``[len(tokens), vocab]`` each)."""
        assert len({id(s) for s, _ in items}) == len(items), "a sequence appears twice in one step"
        for seq, tokens in items:
            self.reserve(seq, len(tokens))
        starts = [seq.length for seq, _ in items]
        counts = [len(tokens) for _, tokens in items]
        ids = torch.tensor([t for _, tokens in items for t in tokens], device=self.device)
        positions = torch.cat([torch.arange(s, s + n) for s, n in zip(starts, counts, strict=True)]).to(self.device)
        write = torch.cat([self.slots(seq, s, s + n) for (seq, _), s, n in zip(items, starts, counts, strict=True)])
        read = [self.slots(seq, 0, s + n) for (seq, _), s, n in zip(items, starts, counts, strict=True)]

        body = self.model.model
        h = body.embed_tokens(ids)  # [T, hidden]: every new token of every sequence, flattened
        cos, sin = body.rotary_emb(h[None], positions[None])
        groups = self.heads // self.kv_heads
        for i, layer in enumerate(body.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(-1, self.heads, self.head_dim).transpose(0, 1)[None]
            k = attn.k_proj(x).view(-1, self.kv_heads, self.head_dim).transpose(0, 1)[None]
            v = attn.v_proj(x).view(-1, self.kv_heads, self.head_dim)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            self.k[i][write] = k[0].transpose(0, 1)
            self.v[i][write] = v
            outs, offset = [], 0
            for start, n, rows in zip(starts, counts, read, strict=True):
                qi = q[0, :, offset:offset + n]  # [heads, n, dim]
                ki = self.k[i][rows].repeat_interleave(groups, dim=1).transpose(0, 1)  # [heads, ctx, dim]
                vi = self.v[i][rows].repeat_interleave(groups, dim=1).transpose(0, 1)
                scores = qi @ ki.transpose(1, 2) * self.head_dim ** -0.5
                query_pos = torch.arange(start, start + n, device=self.device)[:, None]
                future = torch.arange(start + n, device=self.device)[None, :] > query_pos
                scores = scores.masked_fill(future, float("-inf"))
                outs.append((scores.softmax(-1) @ vi).transpose(0, 1).reshape(n, -1))
                offset += n
            h = h + attn.o_proj(torch.cat(outs))
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        logits = self.model.lm_head(body.norm(h))
        for (seq, _), n in zip(items, counts, strict=True):
            seq.length += n
        return list(logits.split(counts))


def demo() -> int:
    torch.set_num_threads(1)  # a tiny model: threads only add overhead
    model = build_tiny_llama()
    manager = BlockManager(num_blocks=24, block_size=4)
    engine = PagedEngine(model, manager)
    gen = torch.Generator().manual_seed(1)
    prefix = torch.randint(0, 128, (10,), generator=gen).tolist()  # 2 full blocks + a partial one
    suffixes = [[5, 17, 42], [99, 3]]
    new_tokens = 12

    first = SeqKV()
    engine.step([(first, prefix)])
    shared = manager.num_blocks - manager.num_free
    second = engine.fork(first)  # shares all 3 prefix blocks: no K/V copied, no recompute
    assert manager.num_free == manager.num_blocks - shared, "forking must not allocate"
    seqs, outputs = [first, second], [[], []]
    logits = engine.step([(s, sfx) for s, sfx in zip(seqs, suffixes, strict=True)])  # copy on write here
    nxt = [int(lg[-1].argmax()) for lg in logits]
    for _ in range(new_tokens):
        for out, t in zip(outputs, nxt, strict=True):
            out.append(t)
        logits = engine.step([(s, [t]) for s, t in zip(seqs, nxt, strict=True)])  # one batched decode step
        nxt = [int(lg[-1].argmax()) for lg in logits]
    peak = manager.num_blocks - manager.num_free
    unshared = sum(manager.blocks_for(len(prefix) + len(s) + new_tokens) for s in suffixes)
    for s in seqs:
        engine.free(s)

    ok = True
    for sfx, out in zip(suffixes, outputs, strict=True):
        want = reference_greedy(model, prefix + sfx, new_tokens)
        if out != want:
            ok = False
            print(f"MISMATCH for suffix {sfx}: paged {out} vs reference {want}")
    if manager.num_free != manager.num_blocks:
        ok = False
        print(f"LEAK: {manager.num_blocks - manager.num_free} blocks still held after freeing every sequence")
    print(f"2 requests sharing a {len(prefix)}-token prefix ({shared} blocks of {manager.block_size}): "
          f"{peak} blocks at peak vs {unshared} without sharing; outputs "
          f"{'equal' if ok else 'DIFFER from'} the reference greedy decoding; all blocks freed: "
          f"{manager.num_free == manager.num_blocks}")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(demo())
