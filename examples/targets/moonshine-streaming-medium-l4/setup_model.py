"""Put this target's artifacts in place, offline but for the speech clips' wheel, or say what is missing.

    python setup_model.py --out artifacts/model --audio-out artifacts/audio --kit ../moonshine-streaming-cpu

The weights are never downloaded: they are taken, in order, from ``$MOONSHINE_STREAMING_MEDIUM`` (a directory holding the checkpoint)
or from the local Hugging Face cache (``UsefulSensors/moonshine-streaming-medium``), and linked at ``--out``.
Without either, it exits 2 naming the model and the path to fill. Then the clips are made by the CPU kit's
`setup_audio.py` (from the `moonshine-voice` wheel).
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
from pathlib import Path

REPO_ID = "UsefulSensors/moonshine-streaming-medium"


def complete(path: Path) -> bool:
    return path.is_dir() and (path / "config.json").is_file() and any(path.glob("*.safetensors"))


def find_checkpoint() -> Path | None:
    env = os.environ.get("MOONSHINE_STREAMING_MEDIUM")
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
    parser.add_argument("--audio-out", required=True, type=Path, help="where the target expects the clips")
    parser.add_argument("--kit", required=True, type=Path, help="the moonshine-streaming-cpu kit")
    args = parser.parse_args(argv)
    found = None if complete(args.out) else find_checkpoint()
    if not complete(args.out) and found is None:
        print(f"setup_model.py: the Moonshine Streaming medium weights ({REPO_ID}) are not on this machine, and "
              f"this target never downloads them. Put the checkpoint (config.json, *.safetensors) in {args.out}, "
              "or set MOONSHINE_STREAMING_MEDIUM to a directory holding it, or point [artifacts].model in "
              "target.toml at it.", file=sys.stderr)
        return 2
    if found is not None:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        if args.out.is_symlink():
            args.out.unlink()
        args.out.symlink_to(found.resolve(), target_is_directory=True)
        print(f"linked {args.out} -> {found}")
    return subprocess.run([sys.executable, str(args.kit / "setup_audio.py"), "--out", str(args.audio_out)]).returncode


if __name__ == "__main__":
    sys.exit(main())
