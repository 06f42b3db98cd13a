"""The model side: one worker thread answers chunks one at a time, in the order they arrive.

For every chunk it runs the encoder over all the audio the stream has received so far, then decodes greedily
from the decoder's start token, handing each token to the waiting request as soon as it is chosen.
Nothing is kept between chunks but the stream's audio.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
from transformers import DynamicCache, EncoderDecoderCache, MoonshineStreamingForConditionalGeneration

FRAME = 80  # samples per 5 ms front-end frame


@dataclass
class Stream:
    audio: list[torch.Tensor] = field(default_factory=list)  # the chunks received, as float samples
    next_seq: int = 0
    lock: threading.Condition = field(default_factory=threading.Condition)


@dataclass
class Job:
    stream: Stream
    chunks: int  # how many of the stream's chunks this answer covers
    max_tokens: int
    emit: Callable[[int | None, str | None], None]  # a token id, then (None, finish_reason) at the end


class Engine:
    def __init__(self, model_dir: str):
        torch.set_num_threads(int(os.environ.get("SERVER_THREADS", "1")))
        self.model = MoonshineStreamingForConditionalGeneration.from_pretrained(model_dir, dtype=torch.float32).eval()
        gen = self.model.generation_config
        self.start_id = gen.decoder_start_token_id
        self.eos_id = gen.eos_token_id
        self.jobs: queue.Queue[Job] = queue.Queue()
        threading.Thread(target=self._worker, daemon=True).start()

    def submit(self, job: Job) -> None:
        self.jobs.put(job)

    def _worker(self) -> None:
        while True:
            job = self.jobs.get()
            try:
                self._answer(job)
            except Exception as e:  # noqa: BLE001 -- the request gets the error, the worker goes on
                job.emit(None, f"error: {type(e).__name__}: {e}")

    @torch.inference_mode()
    def _answer(self, job: Job) -> None:
        audio = torch.cat(job.stream.audio[: job.chunks])[None]
        model = self.model
        encoded = model.model.encoder(audio, attention_mask=torch.ones(audio.shape, dtype=torch.long))
        hidden = encoded.last_hidden_state
        cache = EncoderDecoderCache(DynamicCache(), DynamicCache())
        ids = torch.tensor([[self.start_id]])
        for _ in range(job.max_tokens):
            out = model.model.decoder(input_ids=ids, encoder_hidden_states=hidden, cache=cache, use_cache=True)
            token = int(model.proj_out(out.last_hidden_state[:, -1]).argmax(-1))
            if token == self.eos_id:
                job.emit(None, "stop")
                return
            job.emit(token, None)
            ids = torch.tensor([[token]])
        job.emit(None, "length")
