"""A peer for benchmarks/peers.py: Hugging Face ``generate`` behind a minimal OpenAI chat endpoint.

    python benchmarks/peer_servers/hf_generate.py --model DIR --port P [--prompt-lookup N]

What a user would write with stock tools: fp32, greedy, one request at a time. A ``response_format``
(``json_schema`` or ``json_object``) is enforced with XGrammar's Transformers logits processor, compiled
as the smollm2-json-cpu kit's reference does (no free whitespace, strict); ``--prompt-lookup N`` turns on
Transformers' prompt-lookup decoding (``prompt_lookup_num_tokens=N``, exact for greedy), whose n-grams
come from the prompt (a code-edit prompt holds the code to be edited). A streamed request gets its whole
answer in one chunk: end-to-end latency is what these kits measure.
"""

from __future__ import annotations

import argparse
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import torch
import xgrammar as xgr
from transformers import AutoModelForCausalLM, AutoTokenizer


class Peer:
    def __init__(self, model_dir: str, prompt_lookup: int):
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        self.model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
        self.eos = self.tokenizer.eos_token_id
        info = xgr.TokenizerInfo.from_huggingface(self.tokenizer, vocab_size=self.model.config.vocab_size,
                                                  stop_token_ids=[self.eos])
        self.compiler = xgr.GrammarCompiler(info)
        self.prompt_lookup = prompt_lookup
        self.lock = threading.Lock()

    def processors(self, fmt: dict | None) -> list:
        kind = (fmt or {}).get("type")
        if kind == "json_object":
            return [xgr.contrib.hf.LogitsProcessor(self.compiler.compile_builtin_json_grammar())]
        if kind == "json_schema":
            schema = json.dumps(fmt["json_schema"]["schema"])
            grammar = self.compiler.compile_json_schema(schema, any_whitespace=False, strict_mode=True)
            return [xgr.contrib.hf.LogitsProcessor(grammar)]
        return []

    @torch.inference_mode()
    def answer(self, body: dict) -> tuple[str, str]:
        text = self.tokenizer.apply_chat_template(body["messages"], add_generation_prompt=True, tokenize=False)
        ids = torch.tensor([self.tokenizer(text, add_special_tokens=False)["input_ids"]])
        extra = {"prompt_lookup_num_tokens": self.prompt_lookup} if self.prompt_lookup else {}
        processors = self.processors(body.get("response_format"))
        if extra and processors:
            # XGrammar's Transformers processor advances its matcher one token per call and asserts so; the
            # candidates of assisted generation arrive several at a time (an AssertionError on every request)
            raise ValueError("prompt lookup cannot run with a response_format here: XGrammar's logits processor "
                             "for Transformers takes one token per step, prompt lookup verifies several")
        with self.lock:
            out = self.model.generate(ids, attention_mask=torch.ones_like(ids), max_new_tokens=body.get("max_tokens") or 16,
                                      do_sample=False, eos_token_id=self.eos, pad_token_id=self.eos,
                                      logits_processor=processors, **extra)
        new = out[0, ids.shape[1]:].tolist()
        finish = "stop" if new and new[-1] == self.eos else "length"
        return self.tokenizer.decode(new, skip_special_tokens=True), finish


def handler(peer: Peer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        # a stock server answers without Nagle's delay: the body's write would otherwise wait for the
        # client's delayed ACK of the headers (up to 40 ms)
        disable_nagle_algorithm = True

        def log_message(self, *args) -> None:
            pass

        def _send(self, status: int, data: bytes, kind: str = "application/json") -> None:
            self.send_response(status)
            self.send_header("Content-Type", kind)
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_GET(self) -> None:
            self._send(200, json.dumps({"data": [{"id": "peer", "object": "model"}]}).encode())

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers.get("Content-Length") or 0)))
            try:
                text, finish = peer.answer(body)
            except Exception as e:  # a bad request or schema: the client sees why
                self._send(400, json.dumps({"error": {"message": f"{type(e).__name__}: {e}"}}).encode())
                return
            if not body.get("stream"):
                choice = {"index": 0, "message": {"role": "assistant", "content": text}, "finish_reason": finish}
                self._send(200, json.dumps({"object": "chat.completion", "choices": [choice]}).encode())
                return
            chunks = [{"choices": [{"index": 0, "delta": {"role": "assistant", "content": text}}]},
                      {"choices": [{"index": 0, "delta": {}, "finish_reason": finish}]}]
            data = "".join(f"data: {json.dumps(c)}\n\n" for c in chunks) + "data: [DONE]\n\n"
            self._send(200, data.encode(), "text/event-stream")

    return Handler


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", required=True)
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--prompt-lookup", type=int, default=0)
    args = ap.parse_args()
    server = ThreadingHTTPServer(("127.0.0.1", args.port), handler(Peer(args.model, args.prompt_lookup)))
    server.serve_forever()


if __name__ == "__main__":
    main()
