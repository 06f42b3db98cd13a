"""Image generation with Janus: a prompt becomes a grid of VQ tokens, one token per step, each chosen greedily
from classifier-free-guided logits, then the VQ decoder turns the grid into pixels.

Each step runs the language model over the whole sequence so far, both branches in one batch: the
conditional one (``<s>`` + prompt + ``<begin_of_image>`` + the image tokens so far) and the unconditional
one (the same with the prompt replaced by ``<pad>``). The guided logits are
``uncond + guidance_scale * (cond - uncond)`` from the model's generation head, and the next token is their
argmax.

``JANUS_DEVICE`` and ``JANUS_DTYPE`` (environment; default ``cpu`` and ``float32``) place the model.
"""

from __future__ import annotations

import base64
import io
import os
import threading
from pathlib import Path

import torch


class Engine:
    def __init__(self, model_dir: str | Path):
        from transformers import AutoTokenizer, JanusForConditionalGeneration

        torch.set_grad_enabled(False)
        self.tokenizer = AutoTokenizer.from_pretrained(model_dir)
        dtype = getattr(torch, os.environ.get("JANUS_DTYPE", "float32"))
        model = JanusForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
        self.model = model.to(os.environ.get("JANUS_DEVICE", "cpu")).eval()
        cfg = self.model.generation_config
        self.boi = cfg.generation_kwargs["boi_token_id"]
        self.bos, self.pad = cfg.bos_token_id, cfg.pad_token_id
        self.guidance = float(cfg.guidance_scale)
        self.num_tokens = self.model.model.vision_model.config.num_image_tokens
        self.lock = threading.Lock()  # one image at a time

    def encode(self, prompt: str) -> list[int]:
        return self.tokenizer(prompt)["input_ids"] + [self.boi]

    def generate(self, prompt: str) -> list[int]:
        ids = self.encode(prompt)
        uncond = [t if t in (self.bos, self.boi) else self.pad for t in ids]
        with self.lock:
            return self._generate(torch.tensor([ids, uncond], device=self.model.device))

    def _generate(self, prompt_ids: torch.Tensor) -> list[int]:
        model = self.model
        lm, head = model.model.language_model, model.model.generation_head
        text = model.get_input_embeddings()(prompt_ids)
        tokens: list[int] = []
        for _ in range(self.num_tokens):
            if tokens:
                image = model.prepare_embeddings_for_image_generation(torch.tensor([tokens, tokens], device=model.device))
                embeds = torch.cat([text, image], dim=1)
            else:
                embeds = text
            hidden = lm(inputs_embeds=embeds, use_cache=False).last_hidden_state[:, -1]
            logits = head(hidden)
            guided = logits[1].float() + self.guidance * (logits[0].float() - logits[1].float())
            tokens.append(int(guided.argmax()))
        return tokens

    def png_b64(self, tokens: list[int]) -> str:
        from PIL import Image

        image = self.model.decode_image_tokens(torch.tensor([tokens], device=self.model.device))[0].float().cpu()
        pixels = ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8).numpy()
        buf = io.BytesIO()
        Image.fromarray(pixels).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()
