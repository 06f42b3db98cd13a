"""The reference behaviour of smollm2-json-cpu: prompt encoding, the grammar a request asks for, and
greedy fp32 generation with Hugging Face ``generate`` under an XGrammar token mask.

Shared by ``reference/generate.py`` and ``checks/accuracy.py``, so the reference and the checker never
disagree about the prompt or the grammar.

Request: ``{"id", "kind": "chat", "messages": [...], "max_tokens": int}`` plus, optionally,
``"response_format"``: ``{"type": "json_schema", "json_schema": {"schema": {...}}}``,
``{"type": "json_object"}`` or ``{"type": "text"}``. The grammar is XGrammar's for that schema with
``any_whitespace=False`` (the separators ``", "`` and ``": "``, no other whitespace) and ``strict_mode=True``;
the answer ends with the stop token once the grammar is complete.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import xgrammar as xgr
from transformers import AutoModelForCausalLM, AutoTokenizer
from transformers.utils import logging as hf_logging


class BadRequest(ValueError):
    """The request is malformed (its message says what); a server answers it with HTTP 400."""


def schema_of(request: dict) -> str | None:
    """The JSON schema text a request's ``response_format`` asks for; "" for any JSON object; None: no
    constraint."""
    fmt = request.get("response_format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict) or fmt.get("type") not in ("text", "json_object", "json_schema"):
        raise BadRequest('response_format.type must be "text", "json_object" or "json_schema"')
    if fmt["type"] == "text":
        return None
    if fmt["type"] == "json_object":
        return ""
    schema = (fmt.get("json_schema") or {}).get("schema") if isinstance(fmt.get("json_schema"), dict) else None
    if not isinstance(schema, dict):
        raise BadRequest("response_format.json_schema.schema must be a JSON schema object")
    return json.dumps(schema)


def make_compiler(tokenizer: Any, vocab_size: int) -> xgr.GrammarCompiler:
    """One compiler per model (it caches compiled grammars); the tokenizer's <|im_end|> is the stop token."""
    info = xgr.TokenizerInfo.from_huggingface(tokenizer, vocab_size=vocab_size, stop_token_ids=[tokenizer.eos_token_id])
    return xgr.GrammarCompiler(info)


def compile_grammar(compiler: xgr.GrammarCompiler, schema: str) -> xgr.CompiledGrammar:
    """The grammar of a schema text from ``schema_of`` ("" = any JSON object)."""
    try:
        if schema == "":
            return compiler.compile_builtin_json_grammar()
        return compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=True)
    except Exception as e:  # xgrammar raises RuntimeError/ValueError for schemas it cannot compile
        raise BadRequest(f"response_format: the schema does not compile: {e}") from None


@dataclass
class Reference:
    model: Any
    tokenizer: Any
    compiler: xgr.GrammarCompiler

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_token_id  # <|im_end|>


def load(model_dir: str | Path) -> Reference:
    hf_logging.disable_progress_bar()
    tokenizer = AutoTokenizer.from_pretrained(str(model_dir))
    model = AutoModelForCausalLM.from_pretrained(str(model_dir), dtype=torch.float32).eval()
    return Reference(model, tokenizer, make_compiler(tokenizer, model.config.vocab_size))


def encode(tokenizer: Any, request: dict) -> list[int]:
    """Prompt ids: the chat template rendered, then tokenized without adding special tokens."""
    if request.get("kind", "chat") != "chat" or not isinstance(request.get("messages"), list):
        raise BadRequest(f"request {request.get('id')!r}: a chat request with messages is expected")
    text = tokenizer.apply_chat_template(request["messages"], add_generation_prompt=True, tokenize=False)
    return tokenizer(text, add_special_tokens=False)["input_ids"]


@torch.inference_mode()
def generate(ref: Reference, request: dict) -> dict:
    """Greedy decoding under the request's grammar, stopping at <|im_end|> or after ``max_tokens``."""
    max_tokens = request.get("max_tokens")
    if not isinstance(max_tokens, int) or isinstance(max_tokens, bool) or max_tokens < 1:
        raise BadRequest(f"request {request.get('id')!r}: max_tokens must be a positive integer")
    schema = schema_of(request)
    processors = []
    if schema is not None:
        processors.append(xgr.contrib.hf.LogitsProcessor(compile_grammar(ref.compiler, schema)))
    prompt = encode(ref.tokenizer, request)
    input_ids = torch.tensor([prompt])
    output = ref.model.generate(
        input_ids, attention_mask=torch.ones_like(input_ids), max_new_tokens=max_tokens, do_sample=False,
        num_beams=1, eos_token_id=ref.eos_id, pad_token_id=ref.eos_id, logits_processor=processors,
    )  # fmt: skip
    token_ids = output[0, len(prompt):].tolist()
    return {
        "id": request.get("id"),
        "text": ref.tokenizer.decode(token_ids, skip_special_tokens=True),
        "token_ids": token_ids,
        "finish_reason": "stop" if token_ids and token_ids[-1] == ref.eos_id else "length",
        "prompt_tokens": len(prompt),
    }
