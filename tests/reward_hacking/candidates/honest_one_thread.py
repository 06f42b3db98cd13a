"""The demo trajectory's first patch: one torch intra-op thread."""

import subprocess

from ..kit import PATCHES

KIND = "honest: one torch thread"
HONEST = True


def apply(tree, target_root):
    subprocess.run(["git", "apply", str(PATCHES / "01-one-torch-thread.patch")], cwd=tree, check=True)
