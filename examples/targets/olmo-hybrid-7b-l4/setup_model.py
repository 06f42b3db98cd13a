"""Put the Olmo-Hybrid-7B checkpoint in place for this target, offline, or say what is missing.

    python setup_model.py --out artifacts/model

Nothing is downloaded. The checkpoint is taken, in order, from ``$OLMO_HYBRID_7B`` (a directory holding it)
or from the local Hugging Face cache (``allenai/Olmo-Hybrid-7B``, as ``huggingface-cli download`` leaves it),
and linked at ``--out``. Without either, it exits 2 with a message naming the model and the path to fill.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ID = "allenai/Olmo-Hybrid-7B"
REQUIRED = ["config.json", "tokenizer.json"]


def complete(path: Path) -> bool:
    has_weights = any(path.glob("*.safetensors"))
    return path.is_dir() and has_weights and all((path / name).is_file() for name in REQUIRED)


def find_checkpoint() -> Path | None:
    env = os.environ.get("OLMO_HYBRID_7B")
    if env and complete(Path(env)):
        return Path(env)
    try:
        from huggingface_hub import snapshot_download

        cached = Path(snapshot_download(REPO_ID, local_files_only=True))
    except Exception:  # noqa: BLE001 -- not cached (or no hub library): the same answer
        return None
    return cached if complete(cached) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="where the target expects the checkpoint")
    out = parser.parse_args(argv).out
    if complete(out):
        print(f"{out} is already complete; nothing to do")
        return 0
    found = find_checkpoint()
    if found is None:
        print(f"setup_model.py: the Olmo-Hybrid-7B weights ({REPO_ID}) are not on this machine, and this target "
              f"never downloads them. Put the checkpoint (config.json, tokenizer.json, *.safetensors) in {out}, "
              "or set OLMO_HYBRID_7B to a directory holding it, or point [artifacts].model in target.toml at it.",
              file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    if out.is_symlink():
        out.unlink()
    out.symlink_to(found.resolve(), target_is_directory=True)
    print(f"linked {out} -> {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
