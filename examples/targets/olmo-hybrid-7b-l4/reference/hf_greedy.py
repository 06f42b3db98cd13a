"""The reference behaviour: how a request becomes prompt ids, and greedy fp32 generation with HF Transformers.

Shared by ``reference/generate.py`` (what vibeserve's probe gate and output audit compare with) and
``checks/accuracy.py`` (which imports it), so the two can never disagree about prompt encoding.

Request (one JSON object): ``{"id": str, "kind": "completion", "prompt": str, "max_tokens": int}`` or
``{"id": str, "kind": "chat", "messages": [{"role": str, "content": str}, ...], "max_tokens": int}``.
Output: ``{"id", "text", "token_ids", "finish_reason", "prompt_tokens"}``; vibeserve compares ``text``.

On CPU, Transformers runs the Gated DeltaNet layers with its PyTorch fallbacks: the chunked delta rule
(chunks of 64 tokens) for a prompt, the per-token recurrence for each generated token, and the causal
convolution with ``F.conv1d``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig
from transformers.utils import logging as hf_logging


@dataclass
class Reference:
    model: Any
    tokenizer: Any

    @property
    def max_context(self) -> int:
        return self.model.config.max_position_embeddings


def load(model_dir: str | Path) -> Reference:
    """The model on ``HYBRID_DEVICE`` (default ``cpu``) in ``HYBRID_DTYPE`` (default ``float32``): the GPU
    variant of this kit (``../olmo-hybrid-7b-l4``) sets them for a 7B model on a 24 GB card."""
    hf_logging.disable_progress_bar()  # keeps the gate logs readable
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    # fp32 on CPU: the reference is exact by definition; a lower precision would make it a moving target.
    dtype = getattr(torch, os.environ.get("HYBRID_DTYPE", "float32"))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=dtype).eval()
    return Reference(model.to(os.environ.get("HYBRID_DEVICE", "cpu")), tokenizer)


def stop_ids(ref: Reference) -> list[int]:
    """The tokens that end an answer (not part of its text)."""
    return [ref.tokenizer.eos_token_id]


def encode(tokenizer: Any, request: dict) -> list[int]:
    """Prompt ids: a completion prompt is tokenized with the tokenizer's own special tokens (a BOS for
    Llama-style tokenizers, none for others); a chat is rendered by the chat template and tokenized
    without adding special tokens again."""
    kind = request.get("kind")
    if kind == "completion":
        if not isinstance(request.get("prompt"), str):
            raise ValueError(f"request {request.get('id')!r}: a completion needs a string 'prompt'")
        return tokenizer(request["prompt"], add_special_tokens=True)["input_ids"]
    if kind == "chat":
        messages = request.get("messages")
        if not isinstance(messages, list) or not messages:
            raise ValueError(f"request {request.get('id')!r}: a chat needs a non-empty 'messages' list")
        text = tokenizer.apply_chat_template(messages, add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    raise ValueError(f"request {request.get('id')!r}: kind must be 'completion' or 'chat', got {kind!r}")


@torch.inference_mode()
def generate(ref: Reference, request: dict) -> dict:
    """Greedy decoding of one request alone, stopping at a stop token or after ``max_tokens`` new tokens.

    ``token_ids`` include the stop token when generation stopped on it; ``text`` decodes them without
    special tokens.
    """
    max_tokens = request.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"request {request.get('id')!r}: max_tokens must be a positive integer")
    prompt = encode(ref.tokenizer, request)
    if not prompt:
        raise ValueError(f"request {request.get('id')!r}: the prompt encodes to no tokens")
    if len(prompt) + max_tokens > ref.max_context:
        raise ValueError(f"request {request.get('id')!r}: {len(prompt)} prompt tokens + {max_tokens} new "
                         f"tokens exceed the context of {ref.max_context}")
    stops = stop_ids(ref)
    input_ids = torch.tensor([prompt], device=ref.model.device)
    # A fresh GenerationConfig: a checkpoint's own (sampling, repetition penalty) must not change greedy.
    config = GenerationConfig(max_new_tokens=max_tokens, do_sample=False, num_beams=1, eos_token_id=stops,
                              pad_token_id=stops[0])
    output = ref.model.generate(input_ids, attention_mask=torch.ones_like(input_ids), generation_config=config)
    token_ids = output[0, len(prompt):].tolist()
    stopped = bool(token_ids) and token_ids[-1] in stops
    return {
        "id": request.get("id"),
        "text": ref.tokenizer.decode(token_ids, skip_special_tokens=True),
        "token_ids": token_ids,
        "finish_reason": "stop" if stopped else "length",
        "prompt_tokens": len(prompt),
    }
