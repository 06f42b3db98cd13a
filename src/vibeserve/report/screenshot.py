"""A PNG of a report's HTML page as a browser draws it: headless Chromium (Debian's ``chromium``)."""

from __future__ import annotations

import shutil
import tempfile
from pathlib import Path

from vibeserve import process

BROWSERS = ("chromium", "chromium-browser", "google-chrome")
HEADLESS = ("--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars")
TIMEOUT_S = 120


def find_browser() -> str | None:
    """The first headless-capable Chromium on PATH, or None."""
    return next((b for b in BROWSERS if shutil.which(b)), None)


def screenshot(page: Path, png: Path, width: int = 1280, height: int = 1600) -> str:
    """Save ``page`` as drawn by headless Chromium to ``png``; return one line saying what happened (the
    report goes on without the picture when no browser is installed or it fails)."""
    browser = find_browser()
    if browser is None:
        return "no screenshot: chromium is not installed (apt-get install chromium)"
    png.unlink(missing_ok=True)
    # Its own profile and working directory: nothing of the user's browser is read, nothing is left behind.
    with tempfile.TemporaryDirectory(prefix="vibeserve-shot-") as tmp:
        argv = [browser, *HEADLESS, f"--user-data-dir={tmp}/profile", f"--screenshot={png.resolve()}",
                f"--window-size={width},{height}", page.resolve().as_uri()]
        done = process.run(argv, cwd=Path(tmp), log_dir=Path(tmp) / "logs", name="chromium", timeout_s=TIMEOUT_S,
                           env=process.clean_env())
        if done.timed_out or not png.is_file():
            why = "timed out" if done.timed_out else f"exit {done.returncode}: {process.read_tail(done.stderr_path, 300)}"
            return f"no screenshot: {browser} did not draw {page.name} ({' '.join(why.split())})"
    return f"screenshot: {png}"
