"""CUDA-graph-ready decoding: a static-shape decode step over fixed buffers, batches padded to buckets.

Run it: ``python graph_buckets.py`` (add ``--device cuda`` on a GPU). A graph replays fixed kernels on fixed
addresses, so the decode step reads everything from preallocated buffers (token ids, positions, KV slot
per token, block tables, context lengths), attention gathers whole padded block tables and masks by
context length, and a batch of b sequences runs in the smallest captured bucket >= b, its padding rows
writing to a scratch block (the layout nano-vllm's ``capture_cudagraph`` and vLLM's capture sizes use).

On CPU the script proves the static step with padding is exact: three sequences decoded in a bucket of
four give the same tokens as greedy decoding. On CUDA it also captures one ``torch.cuda.CUDAGraph`` per
bucket, replays it, checks the replayed tokens equal eager ones, and reports both step times. Exit 0
only if every check holds.

Uses the engine of the paged-kv-cache skill (``paged_kv.py``), found next to this skill.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "paged-kv-cache" / "scripts"))

import torch  # noqa: E402
from paged_kv import BlockManager, PagedEngine, SeqKV, build_tiny_llama, reference_greedy  # noqa: E402
from transformers.models.llama.modeling_llama import apply_rotary_pos_emb  # noqa: E402

BUCKETS = (1, 2, 4, 8)


class StaticDecoder:
    """One decode token per sequence, shapes fixed by (bucket, max_blocks); no host sync inside."""

    def __init__(self, engine: PagedEngine, max_blocks: int):
        self.engine, self.max_blocks = engine, max_blocks
        dev, top = engine.device, max(BUCKETS)
        self.scratch = engine.manager.allocate()  # padding rows write here and read only this
        self.ids = torch.zeros(top, dtype=torch.long, device=dev)
        self.pos = torch.zeros(top, dtype=torch.long, device=dev)
        # Until loaded, every row is padding: warm-up and capture runs must not write into a live block.
        self.slot = torch.full((top,), self.scratch * engine.manager.block_size, dtype=torch.long, device=dev)
        self.ctx = torch.ones(top, dtype=torch.long, device=dev)
        self.tables = torch.full((top, max_blocks), self.scratch, dtype=torch.long, device=dev)
        self.logits: dict[int, torch.Tensor] = {}
        self.graphs: dict[int, torch.cuda.CUDAGraph] = {}

    def load(self, seqs: list[SeqKV], tokens: list[int]) -> int:
        """Fill the buffers for ``seqs`` (one new token each); returns the bucket to run."""
        e, bs = self.engine, self.engine.manager.block_size
        b = len(seqs)
        bucket = next(x for x in BUCKETS if x >= b)
        for seq in seqs:
            e.reserve(seq, 1)
        self.ids[:b] = torch.tensor(tokens)
        self.pos[:b] = torch.tensor([s.length for s in seqs])
        self.slot[:b] = torch.cat([e.slots(s, s.length, s.length + 1) for s in seqs])
        self.ctx[:b] = torch.tensor([s.length + 1 for s in seqs])
        table = torch.full((b, self.max_blocks), self.scratch, dtype=torch.long)
        for i, s in enumerate(seqs):
            table[i, :len(s.block_table)] = torch.tensor(s.block_table)
        self.tables[:b] = table
        # Padding rows: token 0 at position 0, written to and read from the scratch block only.
        self.ids[b:], self.pos[b:], self.ctx[b:] = 0, 0, 1
        self.slot[b:] = self.scratch * bs
        self.tables[b:] = self.scratch
        return bucket

    @torch.inference_mode()
    def forward(self, bucket: int) -> torch.Tensor:
        e, bs = self.engine, self.engine.manager.block_size
        body = e.model.model
        ids, pos, slot, ctx = self.ids[:bucket], self.pos[:bucket], self.slot[:bucket], self.ctx[:bucket]
        rows = (self.tables[:bucket, :, None] * bs + torch.arange(bs, device=e.device)).reshape(bucket, -1)
        key_pos = torch.arange(rows.shape[1], device=e.device)[None, :]
        masked = key_pos >= ctx[:, None]  # [bucket, max_ctx]: keys beyond each context are masked
        h = body.embed_tokens(ids)  # [bucket, hidden]
        cos, sin = body.rotary_emb(h[:, None], pos[:, None])
        groups = e.heads // e.kv_heads
        for i, layer in enumerate(body.layers):
            attn = layer.self_attn
            x = layer.input_layernorm(h)
            q = attn.q_proj(x).view(bucket, 1, e.heads, e.head_dim).transpose(1, 2)
            k = attn.k_proj(x).view(bucket, 1, e.kv_heads, e.head_dim).transpose(1, 2)
            v = attn.v_proj(x).view(bucket, e.kv_heads, e.head_dim)
            q, k = apply_rotary_pos_emb(q, k, cos, sin)
            e.k[i].index_copy_(0, slot, k[:, :, 0])
            e.v[i].index_copy_(0, slot, v)
            keys = e.k[i][rows].repeat_interleave(groups, dim=2).permute(0, 2, 3, 1)  # [b, heads, dim, ctx]
            values = e.v[i][rows].repeat_interleave(groups, dim=2).transpose(1, 2)  # [b, heads, ctx, dim]
            scores = (q @ keys) * e.head_dim ** -0.5  # [b, heads, 1, ctx]
            scores = scores.masked_fill(masked[:, None, None, :], float("-inf"))
            out = (scores.softmax(-1) @ values).reshape(bucket, -1)
            h = h + attn.o_proj(out)
            h = h + layer.mlp(layer.post_attention_layernorm(h))
        return e.model.lm_head(body.norm(h))

    def capture(self) -> None:
        """One graph per bucket; the first run of each bucket outside the graph warms up allocations."""
        pool = None
        stream = torch.cuda.Stream()
        stream.wait_stream(torch.cuda.current_stream())
        with torch.cuda.stream(stream):
            for bucket in reversed(BUCKETS):
                self.forward(bucket)
        torch.cuda.current_stream().wait_stream(stream)
        for bucket in reversed(BUCKETS):  # largest first, so smaller graphs reuse its memory pool
            graph = torch.cuda.CUDAGraph()
            with torch.cuda.graph(graph, pool=pool):
                self.logits[bucket] = self.forward(bucket)
            pool = graph.pool()
            self.graphs[bucket] = graph

    def run(self, bucket: int, replay: bool) -> torch.Tensor:
        if replay:
            self.graphs[bucket].replay()
            return self.logits[bucket]
        return self.forward(bucket)


def decode(model, prompts: list[list[int]], new_tokens: int, device: str, replay: bool) -> tuple[list, float]:
    engine = PagedEngine(model, BlockManager(num_blocks=64, block_size=4))
    dec = StaticDecoder(engine, max_blocks=16)
    seqs = [SeqKV() for _ in prompts]
    nxt = [int(lg[-1].argmax()) for lg in engine.step(list(zip(seqs, prompts, strict=True)))]  # eager prefill
    if replay:
        dec.capture()
    outs, took = [[t] for t in nxt], 0.0
    for _ in range(new_tokens - 1):
        bucket = dec.load(seqs, nxt)
        if device == "cuda":
            torch.cuda.synchronize()
        t0 = time.perf_counter()
        logits = dec.run(bucket, replay)[:len(seqs)]
        nxt = logits.argmax(-1).tolist()  # the host sync of a real engine's sampler
        took += time.perf_counter() - t0
        for s in seqs:
            s.length += 1
        for o, t in zip(outs, nxt, strict=True):
            o.append(t)
    return outs, took / (new_tokens - 1)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    device = parser.parse_args().device
    if device == "cuda" and not torch.cuda.is_available():
        print("no CUDA device; run without --device cuda")
        return 2
    torch.set_num_threads(1)
    model = build_tiny_llama(seed=6)
    gen = torch.Generator().manual_seed(23)
    prompts = [torch.randint(0, 128, (n,), generator=gen).tolist() for n in (9, 5, 14)]  # 3 rows -> bucket 4
    new_tokens = 12
    want = [reference_greedy(model, p, new_tokens) for p in prompts]
    model = model.to(device)

    ok = True
    eager, eager_s = decode(model, prompts, new_tokens, device, replay=False)
    if eager != want:
        ok = False
        print(f"MISMATCH: padded static decode {eager} vs greedy {want}")
    print(f"static decode step, 3 sequences padded to bucket 4 on {device}: {eager_s * 1e3:.2f} ms/step; "
          f"output {'equals' if eager == want else 'DIFFERS from'} greedy decoding")
    if device == "cuda":
        replayed, graph_s = decode(model, prompts, new_tokens, device, replay=True)
        if replayed != eager:
            ok = False
            print(f"MISMATCH: graph replay {replayed} vs eager {eager}")
        print(f"CUDA graph replay: {graph_s * 1e3:.2f} ms/step vs eager {eager_s * 1e3:.2f} ms/step; "
              f"replayed tokens {'equal' if replayed == eager else 'DIFFER from'} eager tokens")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
