"""The kit's speech clips: real recordings from the `moonshine-voice` wheel on PyPI, cut to short 16 kHz clips.

    python setup_audio.py --out artifacts/audio

The recordings (`moonshine-voice==0.1.5`, only its WAV files are used) are taken, in order, from
`$MOONSHINE_VOICE_WHEEL` (a path to the .whl), from the package installed in this Python environment
(`scripts/setup.sh` installs it with `--no-deps`; it is never imported), or from the wheel fetched with
`pip download --no-deps` into a cache next to `--out`. Nothing comes from a model hub. Each source recording is
checked against its SHA-256 before use; 48 kHz sources are low-pass filtered and decimated to 16 kHz.

Every clip is mono, 16-bit, 16 kHz, and a whole number of 320 ms chunks long: 3.84 s each (one of 7.68 s),
and under `long/` two of 19.84 s for the paper's 2 s chunks. `clips.json` lists them with their source and
offset. A complete existing directory is left alone; a new one appears atomically.
"""

from __future__ import annotations

import argparse
import hashlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
import wave
import zipfile
from pathlib import Path

PACKAGE = "moonshine-voice==0.1.5"
# The recordings used, as the wheel carries them (moonshine_voice/assets/NAME).
SOURCES = {
    "beckett.wav": "e5a26b3d29e5b0bc8dbd72c11d16a3808a4ec0ac45b21f12a27d2a2fe5c5ae61",
    "clone-test.wav": "ff0313f1b99468ac425304ba7f8deada003efbada014863a475cb8bda87a6191",
    "two_cities.wav": "f3348494d77cb74a02862f5e685ed09faf3e75832c5cc5c80703282c2cd8b52e",
}
RATE = 16000
CHUNK_SAMPLES = 5120  # 320 ms
# (clip name, source, start in seconds, number of 320 ms chunks)
CLIPS = [
    ("clip-00.wav", "beckett.wav", 0.0, 12),
    ("clip-01.wav", "beckett.wav", 5.0, 12),
    ("clip-02.wav", "clone-test.wav", 0.0, 12),
    ("clip-03.wav", "two_cities.wav", 1.0, 12),
    ("clip-04.wav", "two_cities.wav", 12.0, 12),
    ("clip-05.wav", "two_cities.wav", 24.0, 12),
    ("clip-06.wav", "two_cities.wav", 30.0, 24),  # a longer one, for the checker
    # Long clips for the paper's setting (2 s chunks; the GPU variant streams these): 20 s each.
    ("long/clip-10.wav", "two_cities.wav", 0.0, 62),
    ("long/clip-11.wav", "two_cities.wav", 22.0, 62),
]


class SetupError(Exception):
    pass


def installed_assets() -> dict[str, bytes] | None:
    """The recordings from the installed package's files, if it is installed (without importing it)."""
    from importlib import metadata

    try:
        dist = metadata.distribution("moonshine-voice")
    except metadata.PackageNotFoundError:
        return None
    if dist.version != PACKAGE.split("==")[1]:
        return None
    out = {}
    for name in SOURCES:
        path = Path(str(dist.locate_file(f"moonshine_voice/assets/{name}")))
        if not path.is_file():
            return None
        out[name] = path.read_bytes()
    return out


def wheel_assets(wheel: Path) -> dict[str, bytes]:
    with zipfile.ZipFile(wheel) as z:
        try:
            return {name: z.read(f"moonshine_voice/assets/{name}") for name in SOURCES}
        except KeyError as e:
            raise SetupError(f"{wheel.name} has no {e}") from None


def source_assets(cache: Path) -> dict[str, bytes]:
    local = os.environ.get("MOONSHINE_VOICE_WHEEL")
    if local:
        if not Path(local).is_file():
            raise SetupError(f"MOONSHINE_VOICE_WHEEL={local} is not a file")
        return wheel_assets(Path(local))
    return installed_assets() or wheel_assets(fetch_wheel(cache))


def fetch_wheel(cache: Path) -> Path:
    cache.mkdir(parents=True, exist_ok=True)
    found = sorted(cache.glob("moonshine_voice-0.1.5-*.whl"))
    if not found:
        done = subprocess.run([sys.executable, "-m", "pip", "download", "--no-deps", "--only-binary=:all:",
                               "--platform", "manylinux_2_34_x86_64", "--python-version", "3.11", "--dest",
                               str(cache), PACKAGE], capture_output=True, text=True)
        found = sorted(cache.glob("moonshine_voice-0.1.5-*.whl"))
        if done.returncode != 0 or not found:
            raise SetupError(f"pip download {PACKAGE} failed (exit {done.returncode}): {done.stderr.strip()[-600:]}\n"
                             "Without a package index, download the wheel elsewhere and set MOONSHINE_VOICE_WHEEL "
                             "to its path.")
    return found[0]


def read_source(data: bytes, name: str) -> tuple[bytes, int]:
    """The 16-bit mono samples of one recording (as bytes) and its rate, checked by hash."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != SOURCES[name]:
        raise SetupError(f"{PACKAGE}'s {name} has SHA-256 {digest}, expected {SOURCES[name]}")
    with wave.open(io.BytesIO(data)) as w:
        if w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SetupError(f"{name}: expected 16-bit mono")
        return w.readframes(w.getnframes()), w.getframerate()


def to_16k(samples, rate: int):
    """Float samples at 16 kHz: as they are at 16 kHz; low-passed (windowed sinc, 127 taps) and decimated
    at an integer multiple of it."""
    import numpy as np

    if rate == RATE:
        return samples
    if rate % RATE:
        raise SetupError(f"cannot resample {rate} Hz to {RATE} Hz")
    factor = rate // RATE
    n = np.arange(127) - 63
    taps = np.sinc(n / factor * 0.9) * np.hamming(127)
    taps /= taps.sum()
    return np.convolve(samples, taps, mode="same")[::factor]


def build(out: Path, assets: dict[str, bytes]) -> None:
    import numpy as np

    sources = {}
    for name in SOURCES:
        raw, rate = read_source(assets[name], name)
        sources[name] = to_16k(np.frombuffer(raw, "<i2").astype(np.float64), rate)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=out.name + ".tmp-", dir=out.parent))
    tmp.chmod(0o755)
    try:
        listing = []
        for clip, source, start, chunks in CLIPS:
            first, count = int(start * RATE), chunks * CHUNK_SAMPLES
            part = sources[source][first:first + count]
            if len(part) < count:
                raise SetupError(f"{source} is too short for {clip}")
            pcm = np.clip(np.round(part), -32768, 32767).astype("<i2").tobytes()
            (tmp / clip).parent.mkdir(exist_ok=True)
            with wave.open(str(tmp / clip), "wb") as w:
                w.setnchannels(1)
                w.setsampwidth(2)
                w.setframerate(RATE)
                w.writeframes(pcm)
            listing.append({"clip": clip, "source": f"{PACKAGE}:moonshine_voice/assets/{source}",
                            "start_s": start, "chunks": chunks, "seconds": count / RATE})
        (tmp / "clips.json").write_text(json.dumps(listing, indent=1) + "\n")
        if is_complete(out):
            return
        if out.exists():
            shutil.rmtree(out)
        os.rename(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def is_complete(path: Path) -> bool:
    return (path / "clips.json").is_file() and all((path / clip).is_file() for clip, *_ in CLIPS)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", required=True, type=Path, help="the audio directory to create")
    parser.add_argument("--cache", type=Path, default=None,
                        help="where the wheel is kept (default: .cache next to --out)")
    args = parser.parse_args(argv)
    out = args.out.resolve()
    if is_complete(out):
        print(f"{out} is already complete; nothing to do")
        return 0
    try:
        build(out, source_assets(args.cache or out.parent / ".cache"))
    except SetupError as e:
        print(f"setup_audio.py: {e}", file=sys.stderr)
        return 2
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
