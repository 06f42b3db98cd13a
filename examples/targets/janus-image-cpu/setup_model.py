"""Build the kit's model: a small random-weight Janus (fp32) with a word-level tokenizer, fully offline.

    python setup_model.py --out artifacts/model

The architecture is Transformers' `janus` (JanusForConditionalGeneration, Janus-Pro's): a Llama language
model that writes images as a grid of VQ codebook tokens through its own generation embeddings and head,
with classifier-free guidance (a conditional and an unconditional branch per step), and a VQ decoder that
turns the grid into pixels. Only the size is small (a 16x16 token grid, a 512-entry codebook, 16x16-pixel
tiles per... see CONFIG); the weights are random, which changes neither what the tolerance means nor where the time goes.

Everything is seeded (fixed word list, config and seed), so every machine builds bit-identical weights.
The directory appears atomically (built under a temporary sibling, then renamed), and a complete existing
one is left alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import sys
import tempfile
from pathlib import Path

SEED = 1234
GRID = 16  # image tokens per side: 256 tokens per image
GUIDANCE_SCALE = 5.0  # classifier-free guidance: logits = uncond + scale * (cond - uncond)

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>", "<pad>", "<begin_of_image>", "<end_of_image>", "<image_placeholder>"]
PUNCTUATION = [".", ",", ":", "?", "!", "'", "(", ")"]
# The vocabulary, in a fixed order (token id = position): never reorder. Other words become <unk>.
WORDS = """
a an the of and in on with at by under over near beside above behind small large tiny huge old new red blue
green yellow orange purple black white gray brown golden silver dark bright quiet busy cold warm wet dry
cat dog horse bird fish fox owl bear rabbit tiger lion whale boat ship train car bicycle house castle tower
bridge river lake ocean sea island beach desert forest mountain valley hill field garden city village
street market kitchen window door table chair lamp book letter paper glass bread coffee apple flower tree
cloud rain snow wind fire storm sun moon star planet sky night morning evening sunset winter summer spring
autumn painting photo drawing sketch watercolor portrait landscape close-up view of style pixel art
time person year way day thing man world life hand part child eye woman place work week case point number
group problem fact water music story question answer station stone engine computer language history
science doctor teacher student family friend ocean king queen robot color happy slow quick simple strange
careful gentle brave clever ancient modern build write read open close carry find give keep bring follow
learn change move play turn start show once upon what is list things about summary tell me write short
poem explain one sentence difference between continue this you answer like expert
"""

CONFIG = {
    "text_config": {
        "model_type": "llama", "hidden_size": 128, "intermediate_size": 256, "num_hidden_layers": 4,
        "num_attention_heads": 4, "num_key_value_heads": 4, "max_position_embeddings": 1024,
        "rms_norm_eps": 1e-6, "initializer_range": 0.1,
    },
    # The understanding path (a SigLIP-like encoder) is not used to generate; image_size / patch_size sets
    # the generated grid (GRID x GRID tokens), so it is kept but tiny.
    "vision_config": {
        "hidden_size": 32, "num_hidden_layers": 1, "num_attention_heads": 2, "image_size": GRID * 16,
        "patch_size": 16, "mlp_ratio": 2.0, "projection_dim": 128, "num_image_tokens": GRID * GRID, "depth": 2,
    },
    # The VQ model: 512 codes of 8 dimensions; the decoder upsamples each token to 2x2 pixels (32x32 images).
    "vq_config": {
        "embed_dim": 8, "num_embeddings": 512, "latent_channels": 32, "base_channels": 32,
        "channel_multiplier": [1, 2], "num_res_blocks": 1, "projection_dim": 128, "image_token_embed_dim": 128,
        "num_hidden_layers": 2, "initializer_range": 0.1,
    },
}

# The files that make the checkpoint usable; their presence is what "complete" means.
REQUIRED_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json",
                  "generation_config.json"]


def vocabulary() -> list[str]:
    return list(dict.fromkeys(SPECIAL_TOKENS + PUNCTUATION + WORDS.split()))


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.add_special_tokens(SPECIAL_TOKENS)
    backend.normalizer = None
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    return PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>", pad_token="<pad>",
        clean_up_tokenization_spaces=False, model_max_length=CONFIG["text_config"]["max_position_embeddings"],
        extra_special_tokens={"boi_token": "<begin_of_image>", "eoi_token": "<end_of_image>",
                              "image_token": "<image_placeholder>"},
    )


def build_model(tokenizer):
    import torch
    from transformers import GenerationConfig, JanusConfig, JanusForConditionalGeneration

    ids = {t: tokenizer.convert_tokens_to_ids(t) for t in SPECIAL_TOKENS}
    text = dict(CONFIG["text_config"], vocab_size=len(tokenizer), bos_token_id=ids["<s>"], eos_token_id=ids["</s>"],
                pad_token_id=ids["<pad>"])
    config = JanusConfig(text_config=text, vision_config=CONFIG["vision_config"], vq_config=CONFIG["vq_config"],
                         image_token_id=ids["<image_placeholder>"])
    torch.manual_seed(SEED)
    model = JanusForConditionalGeneration(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(
        bos_token_id=ids["<s>"], eos_token_id=ids["</s>"], pad_token_id=ids["<pad>"], do_sample=False,
        guidance_scale=GUIDANCE_SCALE, max_new_tokens=GRID * GRID,
        generation_kwargs={"boi_token_id": ids["<begin_of_image>"]})
    return model


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def build(out: Path) -> None:
    tokenizer = build_tokenizer()
    model = build_model(tokenizer)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the checkpoint is read by the server and the checker too
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        if is_complete(out):  # another process finished first; its result is identical
            return
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="directory to create")
    out = parser.parse_args(argv).out.resolve()
    if is_complete(out):
        print(f"{out} is already complete; nothing to do")
        return 0
    build(out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
