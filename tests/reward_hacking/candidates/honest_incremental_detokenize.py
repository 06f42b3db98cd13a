"""The demo trajectory's second round as it ends: per-token text looked up instead of re-decoding."""

import subprocess

from ..kit import PATCHES

KIND = "honest: incremental detokenization"
HONEST = True


def apply(tree, target_root):
    for patch in ("02a-skip-eos-check.patch", "02b-incremental-detokenize.patch"):
        subprocess.run(["git", "apply", str(PATCHES / patch)], cwd=tree, check=True)
