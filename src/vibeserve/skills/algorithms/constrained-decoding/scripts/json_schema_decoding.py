"""JSON-schema constrained decoding with an XGrammar token bitmask on a tiny random Llama.

Run it: ``python json_schema_decoding.py``. The model knows nothing (random weights), so whatever it emits
is well-formed only because of the mask: each step, the grammar matcher fills a bitmask of the tokens
that keep the output a prefix of some valid document, the logits of every other token become -inf, the
argmax is taken and fed back to the matcher; generation ends when the matcher accepts the stop token.
Five prompts, greedy. Exit 0 only if every output parses as JSON and validates against the schema, and
the same model without the mask does not produce valid JSON (so the mask did the work).

Needs torch, transformers, xgrammar and jsonschema. The vocabulary is made up (printable ASCII plus a
few multi-character JSON pieces, as a BPE vocabulary has), so no tokenizer is downloaded.
"""

from __future__ import annotations

import json
import sys

import jsonschema
import torch
import xgrammar as xgr
from transformers import LlamaConfig, LlamaForCausalLM

EOS = "<eos>"
VOCAB = [EOS] + [chr(c) for c in range(32, 127)] + ['{"', '"}', '":', '", "', '": ', "true", "false", "null"]
SCHEMA = {
    "type": "object",
    "properties": {
        "name": {"type": "string", "minLength": 1, "maxLength": 12},
        "age": {"type": "integer", "minimum": 0, "maximum": 150},
        "admin": {"type": "boolean"},
        "tags": {"type": "array", "items": {"enum": ["cpu", "gpu", "tpu"]}, "maxItems": 3},
    },
    "required": ["name", "age", "admin"],
    "additionalProperties": False,
}
MAX_TOKENS = 120


def tiny_model() -> LlamaForCausalLM:
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=len(VOCAB), hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                         num_attention_heads=4, num_key_value_heads=2, initializer_range=0.1,
                         tie_word_embeddings=False)
    return LlamaForCausalLM(config).eval()


@torch.inference_mode()
def generate(model: LlamaForCausalLM, prompt: list[int], grammar: xgr.CompiledGrammar | None,
             max_tokens: int = MAX_TOKENS) -> str:
    """Greedy decoding, masked by ``grammar`` when given; the text of the tokens up to the stop token."""
    matcher = xgr.GrammarMatcher(grammar) if grammar is not None else None
    bitmask = xgr.allocate_token_bitmask(1, len(VOCAB))
    ids, text = list(prompt), []
    for _ in range(max_tokens):
        logits = model(torch.tensor([ids]), use_cache=False).logits[:, -1]  # [1, vocab]
        if matcher is not None:
            matcher.fill_next_token_bitmask(bitmask)  # on CPU; an engine overlaps this with the forward
            xgr.apply_token_bitmask_inplace(logits, bitmask)
        token = int(logits.argmax())
        if matcher is not None and not matcher.accept_token(token):
            raise AssertionError(f"the matcher refused token {VOCAB[token]!r} that its own mask allowed")
        if token == 0 or (matcher is not None and matcher.is_terminated()):
            break
        ids.append(token)
        text.append(VOCAB[token])
    return "".join(text)


def valid(text: str) -> str | None:
    """None if ``text`` is a JSON document valid under the schema, else why not."""
    try:
        jsonschema.validate(json.loads(text), SCHEMA)
    except (json.JSONDecodeError, jsonschema.ValidationError) as e:
        return str(e).splitlines()[0]
    return None


def main() -> int:
    torch.set_num_threads(1)
    model = tiny_model()
    info = xgr.TokenizerInfo(VOCAB, vocab_type=xgr.VocabType.RAW, stop_token_ids=[0])
    compiler = xgr.GrammarCompiler(info)  # one per model; it caches compiled grammars
    # Compact output: no free whitespace between tokens (fewer tokens, and a random model would
    # otherwise happily emit spaces until the token limit).
    grammar = compiler.compile_json_schema(json.dumps(SCHEMA), any_whitespace=False)

    gen = torch.Generator().manual_seed(31)
    prompts = [torch.randint(1, len(VOCAB), (n,), generator=gen).tolist() for n in (4, 7, 10, 5, 12)]
    ok = True
    for i, prompt in enumerate(prompts):
        text = generate(model, prompt, grammar)
        problem = valid(text)
        print(f"prompt {i}: {text}" + (f"  <- INVALID: {problem}" if problem else ""))
        ok &= problem is None
    free = [generate(model, p, None, max_tokens=40) for p in prompts[:2]]
    unconstrained_valid = sum(valid(t) is None for t in free)
    print(f"without the mask the same model produced {unconstrained_valid}/{len(free)} valid documents, "
          f"e.g. {free[0][:50]!r}")
    if unconstrained_valid == len(free):
        ok = False
        print("the unconstrained model is already valid: this run does not show the mask at work")
    if ok:
        print("every constrained output parses and validates against the schema")
    print("OK" if ok else "FAILED")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
