"""The run's git repository: one worktree per round, candidates committed by the framework, a best ref."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import threading
from pathlib import Path

from vibeserve.errors import DiskFull, VibeserveError
from vibeserve.skills.install import add_git_excludes

# No automatic gc: rounds in flight at once commit side by side, and a gc packing refs would lock them out.
AUTHOR = ["-c", "user.name=vibeserve", "-c", "user.email=vibeserve@localhost", "-c", "commit.gpgsign=false",
          "-c", "gc.auto=0"]
BEST_BRANCH = "vibeserve/best"


class GitError(VibeserveError):
    """A git command failed; the message carries git's own words."""


def git(cwd: Path, *args: str, check: bool = True, stdin: str | None = None) -> str:
    proc = subprocess.run(
        ["git", *AUTHOR, *args], cwd=cwd, capture_output=True, text=True, timeout=120, input=stdin,
        env={**os.environ, "GIT_CONFIG_GLOBAL": os.devnull, "GIT_CONFIG_NOSYSTEM": "1", "LC_ALL": "C"},
    )
    if check and proc.returncode != 0:
        said = proc.stderr.strip() or proc.stdout.strip()
        if "No space left on device" in said:
            raise DiskFull(f"the disk is full (git {args[0]} in {cwd}: No space left on device); free some space, "
                           "then continue with `vibeserve resume RUN`; what was recorded is kept")
        raise GitError(f"git {' '.join(args)} failed in {cwd}: {said}")
    return proc.stdout.strip()


class Workspace:
    """``runs/<id>/repo`` holds the deliverable's history; ``runs/<id>/worktrees/<name>`` the rounds' trees."""

    def __init__(self, run_dir: Path):
        self.repo = run_dir / "repo"
        self.trees = run_dir / "worktrees"
        # Adding, removing and pruning worktrees and moving the run branch edit the repo's shared
        # administrative files; rounds in flight at once take turns at them.
        self._admin = threading.RLock()

    def init(self, seed: Path | None) -> str:
        """Create the repo with the seed deliverable (or nothing) as its first commit; return that commit."""
        if (self.repo / ".git").exists():
            # Already made: resume must not add the seed again. The first commit is the seed.
            return git(self.repo, "rev-list", "--max-parents=0", "HEAD").splitlines()[0]
        self.repo.mkdir(parents=True, exist_ok=True)
        git(self.repo, "init", "-q", "-b", "main")
        add_git_excludes(self.repo / ".git")  # skills installed for agents never enter a candidate
        if seed is not None:
            shutil.copytree(seed, self.repo, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", ".git"))
        git(self.repo, "add", "-A")
        git(self.repo, "commit", "-q", "--allow-empty", "-m", "seed deliverable")
        sha = self.rev("HEAD")
        git(self.repo, "branch", BEST_BRANCH, sha)
        return sha

    def rev(self, ref: str) -> str:
        return git(self.repo, "rev-parse", "--verify", f"{ref}^{{commit}}")

    def tree_of(self, ref: str) -> str:
        return git(self.repo, "rev-parse", f"{ref}^{{tree}}")

    def best(self) -> str:
        return self.rev(BEST_BRANCH)

    def has_best(self) -> bool:
        return bool(git(self.repo, "rev-parse", "--verify", "-q", f"refs/heads/{BEST_BRANCH}", check=False))

    def has_commit(self, sha: str) -> bool:
        return bool(git(self.repo, "rev-parse", "--verify", "-q", f"{sha}^{{commit}}", check=False))

    def set_best(self, sha: str) -> None:
        """Point the run branch at ``sha``: keeping a candidate and reverting are both just this."""
        with self._admin:
            git(self.repo, "branch", "-f", BEST_BRANCH, sha)

    def worktree(self, name: str, start: str) -> Path:
        """A fresh worktree at ``start`` on branch ``round/<name>``; an old one of that name is replaced."""
        path = self.trees / name
        with self._admin:
            self.remove_worktree(name)
            self.trees.mkdir(parents=True, exist_ok=True)
            git(self.repo, "worktree", "add", "-q", "-f", "-B", f"round/{name}", str(path), start)
        return path

    def remove_worktree(self, name: str) -> None:
        path = self.trees / name
        with self._admin:
            if path.exists():
                git(self.repo, "worktree", "remove", "--force", str(path), check=False)
                shutil.rmtree(path, ignore_errors=True)
            git(self.repo, "worktree", "prune")

    def reset(self, path: Path, sha: str) -> None:
        """Put a worktree back to exactly ``sha``: tracked edits undone, untracked files removed (nested
        repositories and unreadable folders an agent left included)."""
        try:
            git(path, "reset", "-q", "--hard", sha)
            git(path, "clean", "-q", "-ffdx")
        except GitError:
            for root, dirs, _ in os.walk(path):  # a folder an agent made unreadable stops git clean
                for d in dirs:
                    with contextlib.suppress(OSError):
                        os.chmod(os.path.join(root, d), 0o755)
            git(path, "reset", "-q", "--hard", sha)
            git(path, "clean", "-q", "-ffdx")

    def commit(self, path: Path, message: str) -> str:
        """Commit everything in the worktree as a candidate (empty if nothing changed) and return its sha."""
        git(path, "add", "-A")
        git(path, "commit", "-q", "--allow-empty", "--no-verify", "-m", message)
        return git(path, "rev-parse", "HEAD")

    def diff(self, base: str, head: str, max_chars: int = 60_000) -> str:
        text = git(self.repo, "diff", "--stat", "--patch", base, head)
        if len(text) > max_chars:
            text = text[:max_chars] + f"\n[diff cut at {max_chars} characters]"
        return text

    def diff_stat(self, base: str, head: str) -> str:
        """``git diff --stat`` from ``base`` to ``head``: the files changed and by how many lines."""
        return git(self.repo, "diff", "--stat", base, head)

    def changed_files(self, base: str, head: str) -> list[str]:
        out = git(self.repo, "diff", "--name-only", base, head)
        return [line for line in out.splitlines() if line]

    def export(self, sha: str, dest: Path) -> None:
        """Write the tree of ``sha`` to ``dest`` (used to hand the user the best deliverable)."""
        dest.mkdir(parents=True, exist_ok=True)
        archive = subprocess.run(["git", "archive", sha], cwd=self.repo, capture_output=True, check=True).stdout
        subprocess.run(["tar", "-x", "-C", str(dest)], input=archive, check=True)
