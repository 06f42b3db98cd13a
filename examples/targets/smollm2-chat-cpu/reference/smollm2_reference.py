"""The reference behaviour of smollm2-chat-cpu: how a request becomes prompt ids, and greedy fp32 generation.

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

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id  # <|im_end|> = 2, the only stop token


def load(model_dir: str | Path) -> Reference:
    hf_logging.disable_progress_bar()  # keeps the gate logs readable
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return Reference(model, tokenizer)


def encode(tokenizer: Any, request: dict) -> list[int]:
    """Prompt ids. A completion prompt is tokenized as is (this tokenizer adds no BOS); a chat is rendered
    with the tokenizer's own chat template and tokenized without adding special tokens, so the literal
    ``<|im_start|>``/``<|im_end|>`` in the rendered text become the special tokens 1 and 2."""
    kind = request.get("kind")
    if kind == "completion":
        return tokenizer(request["prompt"], add_special_tokens=True)["input_ids"]
    if kind == "chat":
        text = tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=False)
        return tokenizer(text, add_special_tokens=False)["input_ids"]
    raise ValueError(f"request {request.get('id')!r}: kind must be 'completion' or 'chat', got {kind!r}")


@torch.inference_mode()
def generate(ref: Reference, request: dict, margins: bool = False) -> dict:
    """Greedy decoding of one request, stopping at <|im_end|> or after ``max_tokens`` new tokens.

    ``token_ids`` are the generated ids, including the final <|im_end|> when generation stopped on it;
    ``text`` decodes them without special tokens. With ``margins``, the result also holds
    ``min_logit_margin``: the smallest gap between the best and second-best logit over the chosen
    tokens, i.e. how close this request comes to a tie that reordered arithmetic could flip.
    """
    max_tokens = request["max_tokens"]
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise ValueError(f"request {request.get('id')!r}: max_tokens must be a positive integer")
    prompt = encode(ref.tokenizer, request)
    if not prompt:
        raise ValueError(f"request {request.get('id')!r}: the prompt encodes to no tokens")
    if len(prompt) + max_tokens > ref.max_context:
        raise ValueError(
            f"request {request.get('id')!r}: {len(prompt)} prompt tokens + {max_tokens} new tokens "
            f"exceed the context of {ref.max_context}"
        )
    input_ids = torch.tensor([prompt])
    output = ref.model.generate(
        input_ids,
        attention_mask=torch.ones_like(input_ids),
        max_new_tokens=max_tokens,
        do_sample=False,
        num_beams=1,
        eos_token_id=ref.eos_id,
        pad_token_id=ref.eos_id,
        return_dict_in_generate=True,
        output_logits=margins,
    )
    token_ids = output.sequences[0, len(prompt) :].tolist()
    result = {
        "id": request.get("id"),
        "text": ref.tokenizer.decode(token_ids, skip_special_tokens=True),
        "token_ids": token_ids,
        "finish_reason": "stop" if token_ids and token_ids[-1] == ref.eos_id else "length",
        "prompt_tokens": len(prompt),
    }
    if margins:
        top2 = torch.cat(output.logits).float().topk(2, dim=-1).values  # [generated, 2]
        result["min_logit_margin"] = float((top2[:, 0] - top2[:, 1]).min())
    return result
