"""The reference's definition of a partial transcript, shared by the reference command, the checker, the probe
command and the benchmark's audit.

After the k-th chunk of a stream, the partial transcript is what Transformers' `generate` gives, greedy and
in fp32, for all the audio received so far (chunks 1..k concatenated), with an attention mask of ones:
with a mask, the encoder attends within each layer's sliding window (16 frames back, 3 ahead in four of its
six layers), as Moonshine Streaming does; without one it would attend to the whole input. The transcript is
the generated token ids after the decoder's start token, at most `max_tokens` of them, ending before the
end-of-sequence token if the model emits it.

Audio is 16-bit signed little-endian mono PCM at 16 kHz; the model gets each sample as `int16 / 32768`.

`MOONSHINE_DEVICE` (default `cpu`) and `MOONSHINE_DTYPE` (default `float32`) choose where and in what the
reference runs: the GPU variant of this kit sets them.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import torch

RATE = 16000
FRAME = 80  # samples in one 5 ms front-end frame: every chunk is a whole number of them


def load_model(path: str):
    from transformers import MoonshineStreamingForConditionalGeneration
    from transformers.utils import logging as hf_logging

    hf_logging.disable_progress_bar()
    torch.set_num_threads(int(os.environ.get("REFERENCE_THREADS", "1")))
    dtype = getattr(torch, os.environ.get("MOONSHINE_DTYPE", "float32"))
    model = MoonshineStreamingForConditionalGeneration.from_pretrained(path, dtype=dtype)
    return model.to(os.environ.get("MOONSHINE_DEVICE", "cpu")).eval()


def samples_of(pcm: bytes) -> torch.Tensor:
    """16-bit PCM as the model's float input, shape (1, n)."""
    return (torch.frombuffer(bytearray(pcm), dtype=torch.int16).to(torch.float32) / 32768.0)[None]


@torch.inference_mode()
def transcribe(model, audio: torch.Tensor, max_tokens: int) -> list[int]:
    """The greedy transcript of `audio` (shape (1, n), n a multiple of 80) as token ids."""
    if audio.shape[-1] == 0 or audio.shape[-1] % FRAME:
        raise ValueError(f"audio of {audio.shape[-1]} samples is not a positive multiple of {FRAME}")
    audio = audio.to(model.device, model.dtype)
    out = model.generate(input_values=audio, attention_mask=torch.ones(audio.shape, dtype=torch.long, device=model.device),
                         max_new_tokens=max_tokens, do_sample=False)
    ids = out[0, 1:].tolist()  # after the decoder start token
    eos = model.generation_config.eos_token_id
    return ids[: ids.index(eos)] if eos in ids else ids


def partial_transcripts(model, pcm: bytes, chunk_sizes: Sequence[int], max_tokens: int) -> list[list[int]]:
    """The partial transcript after each chunk, for a stream whose chunks have these sizes (in samples)."""
    audio = samples_of(pcm)
    if sum(chunk_sizes) != audio.shape[-1]:
        raise ValueError(f"chunks of {sum(chunk_sizes)} samples for {audio.shape[-1]} samples of audio")
    out, end = [], 0
    for size in chunk_sizes:
        end += size
        out.append(transcribe(model, audio[:, :end], max_tokens))
    return out
