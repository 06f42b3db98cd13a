"""Build the kit's model: a small random-weight Olmo-Hybrid (fp32) with a word-level tokenizer, fully offline.

    python setup_model.py --out artifacts/model

The architecture is Transformers' `olmo_hybrid` (Olmo-Hybrid-7B's): Gated DeltaNet linear-attention layers
(a short causal convolution and a recurrent state per head) with a full-attention layer every fourth
layer. Only the size is small (and the attention layer uses RoPE); the weights are random,
which changes neither what exactness means nor where the time goes.

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

# The model's shape: three linear-attention layers, then one full-attention layer (the 7B model's 3:1 pattern).
CONFIG = {
    "hidden_size": 128,
    "intermediate_size": 256,
    "num_hidden_layers": 4,
    "layer_types": ["linear_attention", "linear_attention", "linear_attention", "full_attention"],
    "num_attention_heads": 4,
    "num_key_value_heads": 4,
    "linear_num_key_heads": 4,
    "linear_num_value_heads": 4,
    "linear_key_head_dim": 32,
    "linear_value_head_dim": 64,
    "max_position_embeddings": 8192,
    # Ten times the usual 0.02: with tiny weights the output hardly depends on anything but the last token;
    # larger ones make every token depend on the whole context, so a state restored wrongly shows as other text.
    "initializer_range": 0.2,
    "rms_norm_eps": 1e-6,
    # The linear layers' decay rates: exp(A_log) drawn from [0.001, 0.05] instead of the default [0, 16], whose
    # fast-decaying heads forget a prompt within a few tokens. Slow decay makes the recurrent and convolution
    # states carry the prefix, so a state that is lost or restored wrongly changes the output.
    "linear_a_log_min": 0.001,
    "linear_a_log_max": 0.05,
}

SPECIAL_TOKENS = ["<unk>", "<s>", "</s>"]  # ids 0, 1, 2
PUNCTUATION = [".", ",", ":", "?", "!", "'"]
ROLES = ["system", "user", "assistant"]
# The vocabulary, in a fixed order (token id = position): never reorder. Other words become <unk>.
WORDS = """
the of and to a in is it you that he was for on are with as his they be at one have this from or had by
word but what some we can out other were all there when up use your how said an each she which do their
time if will way about many then them write would like so these her long make thing see him two has look
more day could go come did number sound no most people my over know water than call first who may down
side been now find any new work part take get place made live where after back little only round man year
came show every good me give our under name very through just form sentence great think say help low line
turn cause much mean before move right boy old too same tell does set three want air well also play small
end put home read hand port large spell add even land here must big high such follow act why ask men
change went light kind off need house picture try us again animal point mother world near build self earth
father head stand own page should country found answer school grow study still learn plant cover food sun
four between state keep eye never last let thought city tree cross farm hard start might story saw far sea
draw left late run while press close night real life few north open seem together next white children
begin got walk example ease paper group always music those both mark often letter until mile river car feet
care second book carry took science eat room friend began idea fish mountain stop once base hear horse cut
sure watch color face wood main enough plain girl usual young ready above ever red list though feel talk
bird soon body dog family direct leave song measure door product black short class wind question happen
complete ship area half rock order fire south problem piece told knew pass since top whole king space heard
best hour better true during hundred five remember step early hold west ground interest reach fast sing
listen six table travel less morning ten simple several toward war lay against pattern slow center love
person money serve appear road map rain rule pull cold notice voice unit power town fine certain fly fall
lead cry dark machine note wait plan figure star box field rest correct able done drive stood front teach
week final gave green oh quick develop ocean warm free minute strong special mind behind clear produce
fact street nothing course stay wheel full force blue object decide surface deep moon island foot system
busy test record boat common gold possible plane dry wonder laugh thousand ago ran check game shape miss
brought heat snow bring yes distant fill east paint language among brown fox lazy jump hello please thank
today tomorrow garden window summer winter spring bread milk coffee friendly happy sad forest village
captain assistant helpful short answers question explain
"""
# The words vibeserve's load generator draws synthetic prompts from, so its shared prefix is real tokens.
BENCH_WORDS = """
time year people way day man thing woman life child world school state family student group country
problem hand part place case week company system program question work government number night point
home water room mother area money story fact month lot right study book eye job word business issue
side kind head house service friend father power hour game line end member law car city community name
president team minute idea kid body information back parent face others level office door health
person art war history party result change morning reason research girl guy moment air teacher force
education foot boy age policy process music market sense nation plan college interest death experience
effect use class control care field development role effort rate heart drug show leader light voice
wife police mind price report decision son view relationship town road arm difference value building
action model season society tax director position player record paper space ground form event official
matter center couple site project activity star table need court oil situation cost industry figure
street image phone data picture practice piece land product doctor wall patient worker news test movie
north love support technology step baby computer type attention film tree source organization hair
window evidence population site garden river summer winter spring autumn bread milk coffee forest
village captain ocean island mountain valley bridge castle engine signal letter theory method answer
"""

# Each message is " <role> : <content>"; the prompt ends with " assistant :" so the model answers next.
CHAT_TEMPLATE = (
    "{{ bos_token }}"
    "{% for message in messages %}{{ ' ' + message['role'] + ' : ' + message['content'] }}{% endfor %}"
    "{% if add_generation_prompt %}{{ ' assistant :' }}{% endif %}"
)

# The files that make the checkpoint usable; their presence is what "complete" means.
REQUIRED_FILES = ["config.json", "model.safetensors", "tokenizer.json", "tokenizer_config.json"]


def vocabulary() -> list[str]:
    return list(dict.fromkeys(SPECIAL_TOKENS + PUNCTUATION + ROLES + WORDS.split() + BENCH_WORDS.split()))


def build_tokenizer():
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, processors
    from transformers import PreTrainedTokenizerFast

    vocab = {tok: i for i, tok in enumerate(vocabulary())}
    backend = Tokenizer(models.WordLevel(vocab=vocab, unk_token="<unk>"))
    backend.add_special_tokens(SPECIAL_TOKENS)
    backend.pre_tokenizer = pre_tokenizers.Whitespace()
    # Plain encodings start with <s>, as Llama tokenizers do.
    backend.post_processor = processors.TemplateProcessing(
        single="<s> $A", pair="<s> $A <s> $B", special_tokens=[("<s>", vocab["<s>"])]
    )
    # WordPiece without clean-up joins tokens with single spaces (no word starts with "##").
    backend.decoder = decoders.WordPiece(prefix="##", cleanup=False)
    tokenizer = PreTrainedTokenizerFast(
        tokenizer_object=backend, unk_token="<unk>", bos_token="<s>", eos_token="</s>",
        clean_up_tokenization_spaces=False, model_max_length=CONFIG["max_position_embeddings"],
    )
    tokenizer.chat_template = CHAT_TEMPLATE
    return tokenizer


def build_model(vocab_size: int, bos_id: int, eos_id: int):
    import torch
    from transformers import GenerationConfig, OlmoHybridConfig, OlmoHybridForCausalLM

    config = OlmoHybridConfig(vocab_size=vocab_size, tie_word_embeddings=False, bos_token_id=bos_id,
                              eos_token_id=eos_id, pad_token_id=eos_id, **CONFIG)
    torch.manual_seed(SEED)
    model = OlmoHybridForCausalLM(config).to(torch.float32).eval()
    model.generation_config = GenerationConfig(bos_token_id=bos_id, eos_token_id=eos_id, pad_token_id=eos_id,
                                               do_sample=False)
    return model


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def build(out: Path) -> None:
    tokenizer = build_tokenizer()
    model = build_model(len(tokenizer), tokenizer.bos_token_id, tokenizer.eos_token_id)
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
