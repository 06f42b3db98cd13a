"""The kit's ground truth, shared by the reference command, the checker and the comparator.

- ``generate``: the image tokens Transformers' own ``JanusForConditionalGeneration.generate`` writes in image
  mode (greedy, classifier-free guidance at the checkpoint's ``guidance_scale``), the reference a candidate
  is compared with;
- ``guided_choices``: for a candidate's tokens, what the reference model picks at every position *given the
  candidate's own tokens before it* (teacher forcing: one forward pass of both branches over the whole
  sequence). A greedy image is autoregressive, so one token chosen differently changes every later one;
  comparing each token with the reference's choice after the same prefix measures how often the candidate
  departs from the guided argmax without letting one early departure count 255 times;
- ``png_b64`` / ``pixels``: the VQ decoder's image for a token grid, as a base64 PNG and as pixel values.

``JANUS_DEVICE`` and ``JANUS_DTYPE`` (environment; default ``cpu`` and ``float32``) place the model, for the
GPU variant of this contract (``../janus-pro-7b-h100``).

A prompt is ``<s>`` + its words (a word-level tokenizer: other words become ``<unk>``) + ``<begin_of_image>``;
the unconditional branch is the same sequence with every token but ``<s>`` and ``<begin_of_image>``
replaced by ``<pad>``, as Transformers builds it.
"""

from __future__ import annotations

import base64
import io
import os
from pathlib import Path

import torch


def load(model_dir: str | Path):
    from transformers import AutoTokenizer, JanusForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.set_verbosity_error()
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    dtype = getattr(torch, os.environ.get("JANUS_DTYPE", "float32"))
    model = JanusForConditionalGeneration.from_pretrained(model_dir, dtype=dtype)
    return model.to(os.environ.get("JANUS_DEVICE", "cpu")).eval(), tokenizer


def prompt_ids(model, tokenizer, prompt: str) -> list[int]:
    boi = model.generation_config.generation_kwargs["boi_token_id"]
    return tokenizer(prompt)["input_ids"] + [boi]


@torch.no_grad()
def generate(model, ids: list[int]) -> list[int]:
    x = torch.tensor([ids], device=model.device)
    out = model.generate(x, attention_mask=torch.ones_like(x), generation_mode="image")
    return out[0].tolist()


@torch.no_grad()
def guided_choices(model, ids: list[int], tokens: list[int]) -> list[int]:
    """The reference's guided argmax at each of ``len(tokens)`` positions, given ``tokens`` before it."""
    cfg = model.generation_config
    keep = {cfg.bos_token_id, cfg.generation_kwargs["boi_token_id"]}
    uncond = [t if t in keep else cfg.pad_token_id for t in ids]
    text = model.get_input_embeddings()(torch.tensor([ids, uncond], device=model.device))
    image = model.prepare_embeddings_for_image_generation(torch.tensor([tokens[:-1]] * 2, device=model.device))
    hidden = model.model.language_model(inputs_embeds=torch.cat([text, image], dim=1)).last_hidden_state
    logits = model.model.generation_head(hidden[:, len(ids) - 1:])
    guided = logits[1].float() + cfg.guidance_scale * (logits[0].float() - logits[1].float())
    return guided.argmax(-1).tolist()


@torch.no_grad()
def pixels(model, tokens: list[int]) -> torch.Tensor:
    """The decoded image as uint8 pixels, (height, width, 3)."""
    image = model.decode_image_tokens(torch.tensor([tokens], device=model.device))[0].float().cpu()
    return ((image.clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def png_b64(model, tokens: list[int]) -> str:
    from PIL import Image

    buf = io.BytesIO()
    Image.fromarray(pixels(model, tokens).numpy()).save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()
