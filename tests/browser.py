"""A page loaded in headless Chromium over the DevTools protocol (``--remote-debugging-pipe``, stdlib only):
its console errors, uncaught exceptions and failed loads, and each image's natural width once loaded."""

from __future__ import annotations

import contextlib
import json
import os
import select
import subprocess
import tempfile
import time
from collections.abc import Iterator
from dataclasses import dataclass, field

from vibeserve.report.screenshot import HEADLESS, find_browser

IMAGES = "JSON.stringify(Array.from(document.images).map(i => [i.getAttribute('src'), i.complete ? i.naturalWidth : 0]))"


@dataclass
class Page:
    title: str = ""
    errors: list[str] = field(default_factory=list)  # console errors, exceptions, failed resource loads
    images: list[tuple[str, int]] = field(default_factory=list)  # (src, natural width; 0 = not loaded)


class _Pipe:
    """DevTools messages over two pipes: JSON, each ended by a NUL byte."""

    def __init__(self, to_browser: int, from_browser: int):
        self.out, self.inp, self.buf, self.next_id = to_browser, from_browser, b"", 0
        self.events: list[dict] = []

    def send(self, method: str, params: dict | None = None, session: str | None = None, timeout: float = 30) -> dict:
        self.next_id += 1
        msg = {"id": self.next_id, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self.out, json.dumps(msg).encode() + b"\0")
        while True:
            reply = self.read(timeout)
            if reply.get("id") == self.next_id:
                if "error" in reply:
                    raise RuntimeError(f"{method}: {reply['error']}")
                return reply.get("result", {})
            self.events.append(reply)

    def read(self, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        while b"\0" not in self.buf:
            left = deadline - time.monotonic()
            if left <= 0 or not select.select([self.inp], [], [], left)[0]:
                raise TimeoutError("the browser said nothing in time")
            chunk = os.read(self.inp, 65536)
            if not chunk:
                raise EOFError("the browser closed its pipe")
            self.buf += chunk
        msg, self.buf = self.buf.split(b"\0", 1)
        return json.loads(msg)

    def wait_for(self, method: str, timeout: float) -> None:
        if any(e.get("method") == method for e in self.events):
            return
        deadline = time.monotonic() + timeout
        while True:
            event = self.read(max(0.01, deadline - time.monotonic()))
            self.events.append(event)
            if event.get("method") == method:
                return


def _problems(events: list[dict]) -> list[str]:
    out = []
    for e in events:
        p = e.get("params", {})
        if e.get("method") == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            out.append("console: " + " ".join(str(a.get("value", a.get("description", ""))) for a in p["args"]))
        elif e.get("method") == "Runtime.exceptionThrown":
            out.append("exception: " + p["exceptionDetails"].get("text", ""))
        elif e.get("method") == "Log.entryAdded" and p["entry"]["level"] == "error":
            out.append(f"log: {p['entry']['text']} {p['entry'].get('url', '')}".strip())
    return out


class LivePage:
    """A page open in headless Chromium: ``evaluate`` runs a JavaScript expression in it."""

    def __init__(self, pipe: _Pipe, session: str):
        self.pipe, self.session = pipe, session

    def evaluate(self, expression: str) -> object:
        result = self.pipe.send("Runtime.evaluate", {"expression": expression, "returnByValue": True},
                                session=self.session)
        return result["result"].get("value")

    def problems(self) -> list[str]:
        return _problems(self.pipe.events)


@contextlib.contextmanager
def open_page(url: str, timeout: float = 60) -> Iterator[LivePage]:
    """Open ``url`` in a fresh headless Chromium and hold it open, after its load event, while the block runs."""
    browser = find_browser()
    assert browser is not None
    to_r, to_w = os.pipe()
    from_r, from_w = os.pipe()

    def fds() -> None:  # the browser reads commands on fd 3 and writes replies on fd 4 (kept: close_fds=False)
        a, b = os.dup(to_r), os.dup(from_w)
        os.dup2(a, 3)
        os.dup2(b, 4)

    with tempfile.TemporaryDirectory(prefix="vibeserve-cdp-") as profile:
        proc = subprocess.Popen([browser, *HEADLESS, "--remote-debugging-pipe", f"--user-data-dir={profile}",
                                 "about:blank"], preexec_fn=fds, close_fds=False, stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL, start_new_session=True)
        os.close(to_r)
        os.close(from_w)
        pipe = _Pipe(to_w, from_r)
        try:
            target = pipe.send("Target.createTarget", {"url": "about:blank"}, timeout=timeout)["targetId"]
            session = pipe.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            for domain in ("Runtime", "Log", "Page"):
                pipe.send(f"{domain}.enable", session=session)
            pipe.send("Page.navigate", {"url": url}, session=session)
            pipe.wait_for("Page.loadEventFired", timeout)
            yield LivePage(pipe, session)
            pipe.send("Browser.close")
        finally:
            os.close(to_w)
            os.close(from_r)
            try:
                proc.wait(10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, 9)
                proc.wait()


def load_page(url: str, settle_s: float = 0.5, timeout: float = 60) -> Page:
    """Open ``url`` in a fresh headless Chromium, wait for its load event, and report what went wrong."""
    with open_page(url, timeout) as live:
        time.sleep(settle_s)
        title, images = live.evaluate(f"[document.title, {IMAGES}]")
        return Page(title=title, errors=live.problems(), images=[tuple(i) for i in json.loads(images)])
