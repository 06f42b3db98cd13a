"""Build the kit's artifacts, fully offline but for one package from PyPI: a small random-weight Moonshine
Streaming model (fp32) and the speech clips the checker and the benchmark stream.

    python setup_model.py --out artifacts/model --audio-out artifacts/audio

The architecture is Transformers' `moonshine_streaming` (Moonshine Streaming's): a causal audio front end
(per-frame normalisation, asinh compression, two causal stride-2 convolutions: one encoder frame per 20 ms)
and an encoder whose layers attend within a sliding window of 16 frames back and, in four of its six layers,
3 frames ahead; a decoder cross-attending to the encoder's output. Only the size is small; the weights are
random, which changes neither what an exact partial transcript means nor where the time goes. There is no
tokenizer: a transcript is a list of token ids.

Everything is seeded, so every machine builds bit-identical weights. Each directory appears atomically (built
under a temporary sibling, then renamed), and a complete existing one is left alone. The audio comes from
`setup_audio.py` (see there).
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

SEED = 1234

ENCODER = {
    "hidden_size": 256,
    "intermediate_size": 1024,
    "num_hidden_layers": 6,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
    # Moonshine Streaming's own windows: (frames back including the frame itself, frames ahead + 1).
    "sliding_windows": [[16, 4], [16, 4], [16, 0], [16, 0], [16, 4], [16, 4]],
}
DECODER = {
    "vocab_size": 1024,
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 2,
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "max_position_embeddings": 4096,
    # Ten times the usual 0.02: with tiny random weights the transcript hardly depends on the audio; larger
    # ones make every token depend on it, so an encoder state reused wrongly shows as other tokens.
    "initializer_range": 0.2,
}
PAD, BOS, EOS = 0, 1, 2

REQUIRED_FILES = ["config.json", "model.safetensors", "generation_config.json"]


def build_model():
    import torch
    from transformers import (
        GenerationConfig,
        MoonshineStreamingConfig,
        MoonshineStreamingForConditionalGeneration,
    )

    config = MoonshineStreamingConfig(encoder_config=dict(ENCODER, initializer_range=DECODER["initializer_range"]),
                                      pad_token_id=PAD, bos_token_id=BOS, eos_token_id=EOS,
                                      decoder_start_token_id=BOS, **DECODER)
    torch.manual_seed(SEED)
    model = MoonshineStreamingForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(bos_token_id=BOS, eos_token_id=EOS, pad_token_id=PAD,
                                               decoder_start_token_id=BOS, do_sample=False)
    return model


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def build(out: Path) -> None:
    model = build_model()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the server and the checker read the checkpoint too
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        if is_complete(out):  # another process finished first; its result is identical
            return
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="the model directory to create")
    parser.add_argument("--audio-out", type=Path, help="the audio directory to create (setup_audio.py)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if is_complete(out):
        print(f"{out} is already complete; nothing to do")
    else:
        build(out)
        print(f"wrote {out}")
    if args.audio_out is not None:
        sys.path.insert(0, str(Path(__file__).resolve().parent))
        import setup_audio

        return setup_audio.main(["--out", str(args.audio_out)])
    return 0


if __name__ == "__main__":
    sys.exit(main())
