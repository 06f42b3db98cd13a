"""The model side of the server: prompt encoding and greedy generation, one request at a time."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer


@dataclass
class Step:
    """One generated token (the text it adds), or the end (``finish_reason`` set)."""

    delta: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0


class Engine:
    def __init__(self, model_dir: str):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.eos_id = self.tokenizer.eos_token_id
        self.max_context = self.model.config.max_position_embeddings
        # One generation at a time: the model is not shared between concurrent forward passes.
        self.lock = threading.Lock()

    def encode_completion(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]

    def encode_chat(self, messages: list[dict]) -> list[int]:
        # The template already starts with <s>, so no special tokens are added on top.
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def decode(self, ids: list[int]) -> str:
        return self.tokenizer.decode(ids, skip_special_tokens=True)

    def generate(self, prompt_ids: list[int], max_tokens: int) -> Iterator[Step]:
        """Greedy decoding with a per-request KV cache; yields a Step per token, then a final Step.

        The lock is held until the generator finishes or is closed, so callers must close it (or run
        it to the end) even when the client goes away.
        """
        with self.lock, torch.inference_mode():
            input_ids = torch.tensor([prompt_ids])
            cache = None
            generated: list[int] = []
            text = ""
            for _ in range(max_tokens):
                out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
                next_id = int(out.logits[0, -1].argmax())
                if next_id == self.eos_id:
                    yield Step(finish_reason="stop", completion_tokens=len(generated) + 1)
                    return
                generated.append(next_id)
                # Deltas are differences of full decodes, so their concatenation is exactly the
                # decode of all generated ids (special tokens decode to "" and add nothing).
                full = self.decode(generated)
                delta, text = full[len(text) :], full
                yield Step(delta=delta)
                input_ids = torch.tensor([[next_id]])
            yield Step(finish_reason="length", completion_tokens=len(generated))
