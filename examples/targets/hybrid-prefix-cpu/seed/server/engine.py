"""The model side of the server: prompt encoding, greedy generation one request at a time, and
incremental detokenization."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer

REPLACEMENT = "\ufffd"  # what decoding shows for bytes that do not (yet) form a whole UTF-8 character


@dataclass
class Step:
    """One generated token (the text it adds, possibly ""), or the end (``finish_reason`` set)."""

    delta: str = ""
    finish_reason: str | None = None
    completion_tokens: int = 0


class Detokenizer:
    """Turns a growing list of byte-level BPE ids into text deltas whose concatenation is exactly
    ``decode(all ids)``.

    One token can carry part of a UTF-8 character (an emoji or CJK character often spans two or three
    tokens); decoding then ends in U+FFFD until the rest arrives. So text ending in U+FFFD is held back,
    and ``flush`` releases whatever is left at the end, a genuine U+FFFD included. Text that ends in a
    whole character never changes when more bytes follow, so what was sent is always a prefix of the
    final decode.
    """

    def __init__(self, tokenizer):
        self.tokenizer = tokenizer
        self.ids: list[int] = []
        self.sent = ""

    def _decode(self) -> str:
        # Naive: re-decodes everything each time (quadratic in the output length, fine for a seed).
        return self.tokenizer.decode(self.ids, skip_special_tokens=True)

    def _take(self, text: str) -> str:
        if not text.startswith(self.sent):  # cannot happen with a byte-level decoder and no clean-up
            raise RuntimeError(f"decoded text {text!r} no longer starts with the sent {self.sent!r}")
        delta, self.sent = text[len(self.sent) :], text
        return delta

    def add(self, token_id: int) -> str:
        self.ids.append(token_id)
        text = self._decode()
        return "" if text.endswith(REPLACEMENT) else self._take(text)

    def flush(self) -> str:
        return self._take(self._decode())


class Engine:
    def __init__(self, model_dir: str):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        # The token that ends an answer: the same as reference/hf_greedy.py's stop_ids.
        self.eos_id = self.tokenizer.eos_token_id
        self.max_context = self.model.config.max_position_embeddings
        # One generation at a time: the model is not shared between concurrent forward passes.
        self.lock = threading.Lock()

    def encode_completion(self, prompt: str) -> list[int]:
        # As the reference encodes it: with the tokenizer's own special tokens (a BOS for Llama-style ones).
        return self.tokenizer(prompt, add_special_tokens=True)["input_ids"]

    def encode_chat(self, messages: list[dict]) -> list[int]:
        # The rendered template already holds its special tokens as text; they tokenize to their ids.
        text = self.tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return self.tokenizer(text, add_special_tokens=False)["input_ids"]

    def generate(self, prompt_ids: list[int], max_tokens: int) -> Iterator[Step]:
        """Greedy decoding with a per-request KV cache; yields a Step per token, then a final Step.

        The lock is held until the generator finishes or is closed, so callers must close it (or run
        it to the end) even when the client goes away.
        """
        with self.lock, torch.inference_mode():
            input_ids = torch.tensor([prompt_ids])
            cache = None
            detok = Detokenizer(self.tokenizer)
            finish = "length"
            for _ in range(max_tokens):
                out = self.model(input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=1)
                cache = out.cache
                next_id = int(out.logits[0, -1].argmax())
                if next_id == self.eos_id:
                    finish = "stop"
                    break
                yield Step(delta=detok.add(next_id))
                input_ids = torch.tensor([[next_id]])
            rest = detok.flush()
            if rest:
                yield Step(delta=rest)
            tokens = len(detok.ids) + (finish == "stop")  # the stop token counts, as in OpenAI's usage
            yield Step(finish_reason=finish, completion_tokens=tokens)
