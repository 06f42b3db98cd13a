"""The reference behaviour of tiny-llama: how a request becomes prompt ids, and greedy fp32 generation.

Shared by ``reference/generate.py`` and ``checks/accuracy.py`` (which imports it in-process), so the
reference outputs and the accuracy checker can never disagree about the prompt encoding.

Request: ``{"id": str, "kind": "completion", "prompt": str, "max_tokens": int}`` or
``{"id": str, "kind": "chat", "messages": [{"role": str, "content": str}, ...], "max_tokens": int}``.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging


@dataclass
class Reference:
    model: Any
    tokenizer: Any

    @property
    def max_context(self) -> int:
        return self.model.config.max_position_embeddings


def load(model_dir: str | Path) -> Reference:
    hf_logging.disable_progress_bar()  # keeps the gate logs readable
    # A 64-wide model gains nothing from intra-op threads, and on a machine shared with the server under
    # test, spinning threads slow both down many times over. One thread gives the same fp32 results.
    torch.set_num_threads(1)
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return Reference(model, tokenizer)


def encode(tokenizer: Any, request: dict) -> list[int]:
    """Prompt ids: a completion prompt gets <s> prepended; a chat is rendered by the chat template
    (which already starts with <s>) and tokenized without adding special tokens again."""
    kind = request.get("kind")
    if kind == "completion":
        return tokenizer(request["prompt"], add_special_tokens=True)["input_ids"]
    if kind == "chat":
        text = tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    raise ValueError(f"request {request.get('id')!r}: kind must be 'completion' or 'chat', got {kind!r}")


@torch.inference_mode()
def generate(ref: Reference, request: dict) -> dict:
    """Greedy decoding of one request, stopping at </s> or after ``max_tokens`` new tokens.

    ``token_ids`` are the generated ids, including the final </s> when generation stopped on it;
    ``text`` decodes them without special tokens.
    """
    max_tokens = request["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"request {request.get('id')!r}: max_tokens must be a positive integer")
    prompt = encode(ref.tokenizer, request)
    if len(prompt) + max_tokens > ref.max_context:
        raise ValueError(
            f"request {request.get('id')!r}: {len(prompt)} prompt tokens + {max_tokens} new tokens "
            f"exceed the context of {ref.max_context}"
        )
    eos = ref.tokenizer.eos_token_id
    input_ids = torch.tensor([prompt])
    output = ref.model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=eos,
        pad_token_id=eos,
    )
    token_ids = output[0, len(prompt) :].tolist()
    return {
        "id": request.get("id"),
        "text": ref.tokenizer.decode(token_ids, skip_special_tokens=True),
        "token_ids": token_ids,
        "finish_reason": "stop" if token_ids and token_ids[-1] == eos else "length",
        "prompt_tokens": len(prompt),
    }
