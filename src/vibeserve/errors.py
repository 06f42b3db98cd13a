"""Errors a user can cause. The CLI prints their message without a traceback and exits non-zero."""

from __future__ import annotations


class VibeserveError(Exception):
    """Base of every error whose message tells the user what to fix."""

    exit_code = 2


class TargetError(VibeserveError):
    """The target directory or its target.toml is wrong; the message names file, key and expectation.

    ``more`` carries further ``(key, problem)`` pairs found in the same pass, so a user fixes them all at once.
    """

    def __init__(self, file: str, key: str, problem: str, more: list[tuple[str, str]] | None = None):
        self.file, self.key, self.problem = file, key, problem
        self.problems = [(key, problem), *(more or [])]
        if len(self.problems) == 1:
            where = f"{file}: {key}" if key else file
            super().__init__(f"{where}: {problem}")
        else:
            lines = "\n".join(f"  {k or '(file)'}: {p}" for k, p in self.problems)
            super().__init__(f"{file}: {len(self.problems)} problems:\n{lines}")


class StoreError(VibeserveError):
    """The run store cannot be opened or does not fit this version; it is never overwritten."""


class RunNotFound(VibeserveError):
    """A run id that names no run."""


class SandboxError(VibeserveError):
    """The sandbox could not be set up; the run stops unless --sandbox none was chosen."""


class HarnessError(VibeserveError):
    """A harness cannot start (missing binary, bad config)."""


class BudgetExceeded(VibeserveError):
    """The next agent call would pass a budget cap."""

    exit_code = 3


class DiskFull(VibeserveError):
    """No space left on the device; nothing recorded is lost, and the run resumes once there is room."""

    exit_code = 1


class NoResult(VibeserveError):
    """The run ended without anything to show: no measured baseline, or every round failed."""

    exit_code = 1


class RunInterrupted(VibeserveError):
    """The user stopped the run (SIGINT, SIGTERM); it is marked interrupted and can be resumed."""

    def __init__(self, message: str, exit_code: int):
        super().__init__(message)
        self.exit_code = exit_code


class Terminated(BaseException):  # noqa: N818 - raised from a signal, like KeyboardInterrupt
    """SIGTERM or SIGHUP arrived; raised in the main thread so every ``finally`` runs."""

    def __init__(self, signum: int):
        super().__init__(f"signal {signum}")
        self.signum = signum
