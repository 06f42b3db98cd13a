"""Continuous batching: requests join and leave the running batch between steps, not between batches.

Run it: ``python continuous_batching.py``. Six requests with different prompt lengths, output lengths and
arrival steps go through a scheduler with a waiting queue, a cap on running sequences, a per-step token
budget and a KV block pool that does not fit everyone at once. Every step runs the admitted prefills and
all running decodes in one forward pass. Exit 0 only if each request's output equals unbatched greedy
decoding of that request alone, and every KV block is free at the end.

Uses the engine of the paged-kv-cache skill (``paged_kv.py``), found next to this skill.
"""

from __future__ import annotations

import sys
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path

HERE = Path(__file__).resolve()
sys.path.insert(0, str(HERE.parents[2] / "paged-kv-cache" / "scripts"))

import torch  # noqa: E402
from paged_kv import BlockManager, PagedEngine, SeqKV, build_tiny_llama, reference_greedy  # noqa: E402


@dataclass
class Request:
    rid: int
    prompt: list[int]
    max_new: int
    arrival: int  # the engine step at which the request arrives
    out: list[int] = field(default_factory=list)
    kv: SeqKV = field(default_factory=SeqKV)
    first_step: int = -1


class Scheduler:
    """Iteration-level scheduling: admit from the waiting queue (FCFS) while the running cap, the token
    budget and the block pool allow; a request holds blocks for its whole lifetime, so no preemption is
    needed here (vLLM and nano-vllm preempt by freeing blocks and recomputing instead)."""

    def __init__(self, engine: PagedEngine, max_running: int, token_budget: int):
        self.engine, self.max_running, self.token_budget = engine, max_running, token_budget
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []

    def _blocks_needed(self, r: Request) -> int:
        return self.engine.manager.blocks_for(len(r.prompt) + r.max_new)

    def schedule(self) -> tuple[list[Request], list[Request]]:
        """This step's prefills (newly admitted) and decodes (everyone already running)."""
        decodes = list(self.running)
        budget = self.token_budget - len(decodes)
        reserved = sum(self._blocks_needed(r) for r in self.running)  # each running request's lifetime need
        prefills = []
        while self.waiting and len(self.running) + len(prefills) < self.max_running:
            r = self.waiting[0]
            need = self._blocks_needed(r)
            if len(r.prompt) > budget or reserved + need > self.engine.manager.num_blocks:
                break  # FCFS: the head of the queue waits, and so does everyone behind it
            self.waiting.popleft()
            prefills.append(r)
            budget -= len(r.prompt)
            reserved += need
        return prefills, decodes

    def step(self, now: int) -> int:
        """One engine iteration; returns how many sequences shared the forward pass."""
        prefills, decodes = self.schedule()
        items = [(r.kv, r.prompt) for r in prefills] + [(r.kv, [r.out[-1]]) for r in decodes]
        if not items:
            return 0
        logits = self.engine.step(items)
        for r, lg in zip(prefills + decodes, logits, strict=True):
            r.out.append(int(lg[-1].argmax()))
            if r.first_step < 0:
                r.first_step = now
        self.running += prefills
        for r in [r for r in self.running if len(r.out) == r.max_new]:
            self.running.remove(r)
            self.engine.free(r.kv)
        return len(items)


def main() -> int:
    torch.set_num_threads(1)
    model = build_tiny_llama(seed=3)
    engine = PagedEngine(model, BlockManager(num_blocks=20, block_size=4))
    gen = torch.Generator().manual_seed(7)
    shapes = [(12, 10, 0), (5, 14, 0), (20, 6, 1), (9, 12, 3), (16, 8, 5), (7, 9, 8)]  # prompt, new, arrival
    requests = [Request(i, torch.randint(0, 128, (p,), generator=gen).tolist(), n, a)
                for i, (p, n, a) in enumerate(shapes)]
    sched = Scheduler(engine, max_running=3, token_budget=32)

    pending, step, widths = deque(requests), 0, []
    while pending or sched.waiting or sched.running:
        while pending and pending[0].arrival <= step:
            sched.waiting.append(pending.popleft())
        widths.append(sched.step(step))
        step += 1
        assert step < 500, "the scheduler stopped making progress"

    ok = True
    for r in requests:
        want = reference_greedy(model, r.prompt, r.max_new)
        if r.out != want:
            ok = False
            print(f"MISMATCH request {r.rid}: batched {r.out} vs alone {want}")
    if engine.manager.num_free != engine.manager.num_blocks:
        ok = False
        print("LEAK: blocks still held after every request finished")
    tokens = sum(r.max_new for r in requests)
    print(f"{len(requests)} requests, {tokens} generated tokens in {step} engine steps "
          f"(one request at a time would take {tokens}); up to {max(widths)} sequences per forward pass; "
          f"steps from arrival to first token: {[r.first_step - r.arrival for r in requests]}")
    print("batched greedy output equals unbatched greedy output" if ok else "batched output DIFFERS")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
