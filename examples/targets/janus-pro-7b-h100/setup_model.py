"""Find the Janus-Pro-7B checkpoint on this machine and link it at ``--out``; never download.

    python setup_model.py --out artifacts/model

Looks at ``$JANUS_PRO_7B`` (a checkpoint directory), then at the local Hugging Face cache
(``deepseek-community/Janus-Pro-7B``, the Transformers-format weights). Without either it exits 2 naming
what is missing and how to provide it.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path

REPO_ID = "deepseek-community/Janus-Pro-7B"
NEEDED = ("config.json", "tokenizer.json")


def usable(path: Path) -> bool:
    return path.is_dir() and all((path / f).is_file() for f in NEEDED) and any(path.glob("*.safetensors"))


def find() -> Path | None:
    env = os.environ.get("JANUS_PRO_7B")
    if env and usable(Path(env)):
        return Path(env)
    try:
        from huggingface_hub import snapshot_download

        path = Path(snapshot_download(REPO_ID, local_files_only=True))
    except Exception:  # not in the cache (or no huggingface_hub): nothing to link
        return None
    return path if usable(path) else None


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    out = parser.parse_args(argv).out
    found = find()
    if found is None:
        print(f"setup_model.py: the Janus-Pro-7B weights ({REPO_ID}) are not on this machine: put the checkpoint at "
              f"{out}, set JANUS_PRO_7B to its directory, or download it into the Hugging Face cache "
              f"(huggingface-cli download {REPO_ID}) before running vibeserve", file=sys.stderr)
        return 2
    out.parent.mkdir(parents=True, exist_ok=True)
    out.symlink_to(found.resolve(), target_is_directory=True)
    print(f"linked {out} -> {found}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
