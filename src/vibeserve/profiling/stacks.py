"""Sampled stacks (py-spy's collapsed ``raw`` output) read, summarised and written as speedscope JSON and a
flame graph SVG.

A collapsed line is ``root;...;leaf COUNT``, each frame ``function (file:line)``. The summary ranks frames
by self time (the leaf of a sample) and total time (anywhere in it), and puts each sample in one part of a
serving system: the model forward, the tokenizer, the HTTP path, or the rest.
"""

from __future__ import annotations

import html
import json
import re
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

# The parts of a serving system a sample can fall in, most specific first: a sample whose stack holds a
# model frame is the model's time even when an HTTP handler called it, and a tokenizer called from a
# handler is the tokenizer's.
MODEL, TOKENIZER, HTTP, OTHER = "model forward", "tokenizer", "HTTP path", "other"
WAITING = "waiting (locks, sockets, sleep)"
PARTS = (WAITING, MODEL, TOKENIZER, HTTP, OTHER)
# A sample whose innermost frame is one of these is a thread blocked, not working (py-spy cannot always
# tell, e.g. for a candidate in its own PID namespace); with native frames a lock wait shows as well.
_WAIT_LEAF = re.compile(r"^(_?PollLikeSelector\.select|\w*Selector\.select|select|poll|epoll_wait|accept|sleep|"
                        r"Condition\.wait|Event\.wait|Thread\.join|_wait_for_tstate_lock|Queue\.get|"
                        r"SocketIO\.readinto|socket\.accept|recv\w*|"
                        r".*futex.*|.*cond_(timed)?wait.*|sem_\w*wait.*|PyThread_acquire_lock\w*|"
                        r"PyCOND_\w*|take_gil|drop_gil|__?(GI_)?_?(poll|select|epoll_wait|nanosleep|clock_nanosleep)\w*)$")
_MODEL_FILES = ("torch/nn/", "torch/_tensor", "torch/functional", "transformers/models/", "transformers/modeling_",
                "transformers/integrations/sdpa", "transformers/masking_utils", "libtorch", "libgomp", "mkl",
                "libopenblas", "llama_cpp", "libggml", "libllama", "onnxruntime", "vllm/model_executor")
_MODEL_FUNCTIONS = re.compile(r"^(forward|_call_impl|_wrapped_call_impl|model_forward|decode_step|prefill)$"
                              r"|^(at|c10|torch|aten|mkldnn|dnnl|sgemm|dgemm)::|gemm|_mm_|addmm|matmul|sdpa|attention",
                              re.IGNORECASE)
_TOKENIZER = re.compile(r"tokeniz|detokeniz|sentencepiece|tiktoken", re.IGNORECASE)
_HTTP_FILES = ("http/server", "socketserver", "uvicorn/", "starlette/", "fastapi/", "h11/", "httptools", "aiohttp/",
               "asyncio/", "socket.py", "selectors.py", "ssl.py", "json/", "sse_starlette", "anyio/", "wsgiref/")
_FRAME = re.compile(r"^(?P<name>.*?) \((?P<file>[^()]*?)(?::(?P<line>\d+))?\)$")


def frame_parts(frame: str) -> tuple[str, str]:
    """``(function, file)`` of one collapsed frame; a frame without a file gives ``(frame, "")``."""
    m = _FRAME.match(frame)
    return (m["name"], m["file"]) if m else (frame, "")


def short(frame: str, width: int = 110) -> str:
    """A frame without its line number, C++ template arguments or code address, so that one function's
    samples add up; at most ``width`` characters."""
    name, file = frame_parts(frame)
    if name.startswith("0x"):  # a native frame without a symbol: its library says enough
        name = "[native]"
    if "::" in name and "<" in name:  # C++: the template's name says which kernel; its arguments fill lines
        name = name[: name.index("<")] + "<…>"
    text = f"{name} ({file})" if file else name
    return text if len(text) <= width else text[: width - 1] + "…"


def is_plumbing(frame: str) -> bool:
    """Frames every sample of a thread passes through (threads, the HTTP server's dispatch, runpy): they
    top any ranking by total time and say nothing."""
    name, file = frame_parts(frame)
    return (part_of(frame) == HTTP or name.startswith(("0x", "_Py", "Py", "thread_run", "clone", "start_thread"))
            or any(p in file for p in ("threading.py", "runpy", "concurrent/futures", "libpython", "libc.so")))


def part_of(frame: str) -> str | None:
    """Which part of a serving system one frame belongs to, or None when it says nothing by itself."""
    name, file = frame_parts(frame)
    path = file.replace("\\", "/")
    if any(p in path for p in _MODEL_FILES) or _MODEL_FUNCTIONS.search(name):
        return MODEL
    if _TOKENIZER.search(path) or _TOKENIZER.search(name):
        return TOKENIZER
    if any(p in path for p in _HTTP_FILES):
        return HTTP
    return None


def is_meta(frame: str) -> bool:
    """py-spy's own frames: the process (``--subprocesses``) and the thread, not code."""
    return frame.startswith(("process ", "thread ("))


_LOCK_LINE = re.compile(r"^\s*(async\s+)?with\b[^#]*\b\w*(lock|mutex|sem(aphore)?)\b|\.acquire\(", re.IGNORECASE)


class SourceLines:
    """Lines of the candidate's own files, to tell a thread blocked at ``with self.lock:`` from one computing
    on that line: py-spy without native frames shows both as time in the line's function."""

    def __init__(self, tree: Path | None):
        self.tree, self._files = tree, {}

    def blocks(self, frame: str) -> bool:
        m = _FRAME.match(frame)
        if self.tree is None or not m or not m["line"]:
            return False
        if m["file"] not in self._files:
            path = self.tree / m["file"]
            try:
                inside = path.resolve().is_relative_to(self.tree.resolve())
                self._files[m["file"]] = path.read_text(errors="replace").splitlines() if inside else []
            except OSError:
                self._files[m["file"]] = []
        lines, n = self._files[m["file"]], int(m["line"])
        return 0 < n <= len(lines) and bool(_LOCK_LINE.search(lines[n - 1]))


@dataclass
class Stacks:
    """Collapsed stacks: each distinct stack (root first) with its sample count."""

    samples: Counter[tuple[str, ...]] = field(default_factory=Counter)
    source: SourceLines = field(default_factory=lambda: SourceLines(None))

    @classmethod
    def read(cls, path: Path, tree: Path | None = None) -> Stacks:
        """``tree``: the candidate's files, whose lock statements mark a thread as waiting."""
        stacks = cls(source=SourceLines(tree))
        for line in path.read_text(errors="replace").splitlines():
            stack, _, count = line.rstrip().rpartition(" ")
            if stack and count.isdigit():
                stacks.samples[tuple(f for f in stack.split(";") if f and not is_meta(f))] += int(count)
        return stacks

    @property
    def total(self) -> int:
        return sum(self.samples.values())

    def by_self(self) -> Counter[str]:
        """Samples whose leaf is each function."""
        out: Counter[str] = Counter()
        for stack, n in self.samples.items():
            if stack:
                out[short(stack[-1])] += n
        return out

    def by_total(self) -> Counter[str]:
        """Samples in which each function appears anywhere (once per sample, however deep the recursion),
        less the plumbing frames (``is_plumbing``)."""
        out: Counter[str] = Counter()
        for stack, n in self.samples.items():
            for name in {short(f) for f in stack if not is_plumbing(f)}:
                out[name] += n
        return out

    def parts(self) -> dict[str, int]:
        """Samples per part of the serving system (``PARTS``), each sample counted once."""
        out = dict.fromkeys(PARTS, 0)
        for stack, n in self.samples.items():
            if stack and (_WAIT_LEAF.match(frame_parts(stack[-1])[0]) or self._blocked(stack)):
                out[WAITING] += n
                continue
            found = {p for f in stack if (p := part_of(f))}
            out[next((p for p in PARTS if p in found), OTHER)] += n
        return out

    def _blocked(self, stack: tuple[str, ...]) -> bool:
        """Whether the innermost Python frame is at one of the candidate's lock statements, with nothing of the
        model below it (with native frames, the lock's own C frames follow it)."""
        py = [i for i, f in enumerate(stack) if frame_parts(f)[1].endswith(".py")]
        return bool(py) and self.source.blocks(stack[py[-1]]) and not any(
            part_of(f) == MODEL for f in stack[py[-1] + 1:])

    def summary(self, top: int = 8) -> str:
        """The short text an agent reads: shares per part, then the top frames by self and by total time."""
        total = self.total
        if not total:
            return "no samples were taken (the candidate ran no Python code while it was profiled)"
        lines = [f"{total} samples. Where the time went:"]
        lines += [f"  {share(n, total):>6}  {part}" for part, n in self.parts().items()]
        for title, counts in (("by self time", self.by_self()),
                              ("by total time (threads and HTTP dispatch left out)", self.by_total())):
            lines.append(f"Top frames {title}:")
            lines += [f"  {share(n, total):>6}  {name}" for name, n in counts.most_common(top)]
        return "\n".join(lines)

    def write_speedscope(self, path: Path, name: str) -> None:
        """The samples as a speedscope ``sampled`` profile (open it at https://www.speedscope.app)."""
        frames: dict[str, int] = {}
        samples, weights = [], []
        for stack, n in self.samples.items():
            samples.append([frames.setdefault(f, len(frames)) for f in stack])
            weights.append(n)
        doc = {
            "$schema": "https://www.speedscope.app/file-format-schema.json",
            "shared": {"frames": [_speedscope_frame(f) for f in frames]},
            "profiles": [{"type": "sampled", "name": name, "unit": "none", "startValue": 0,
                          "endValue": sum(weights), "samples": samples, "weights": weights}],
            "name": name, "exporter": "vibeserve",
        }
        path.write_text(json.dumps(doc))

    def write_flamegraph(self, path: Path, title: str, width: int = 1200, row: int = 16) -> None:
        """A static flame graph SVG (no script), root at the top: widths are shares of samples, each box titled."""
        tree: dict = {}
        for stack, n in self.samples.items():
            node = tree
            for f in stack:
                node = node.setdefault(f, [0, {}])
                node[0] += n
                node = node[1]
        total = self.total or 1
        boxes: list[str] = []
        depth = _layout(tree, 0.0, 0, width / total, boxes, row)
        height = (depth + 2) * row
        head = (f'<svg xmlns="http://www.w3.org/2000/svg" width="{width}" height="{height}" '
                f'font-family="monospace" font-size="11"><rect width="100%" height="100%" fill="#fff"/>'
                f'<text x="4" y="12">{html.escape(title)}</text>')
        body = "".join(boxes)
        path.write_text(head + body + "</svg>")


def _layout(tree: dict, x: float, depth: int, scale: float, out: list[str], row: int) -> int:
    deepest = depth
    for frame, (n, children) in sorted(tree.items()):
        w = n * scale
        if w >= 0.5:
            name = short(frame)
            hue = {MODEL: 20, TOKENIZER: 280, HTTP: 200}.get(part_of(frame) or "", 50)
            label = html.escape(name[: int(w / 7)]) if w > 30 else ""
            y = (depth + 1) * row
            out.append(f'<g><title>{html.escape(name)} ({n} samples)</title><rect x="{x:.1f}" y="{y}" '
                       f'width="{w:.1f}" height="{row - 1}" fill="hsl({hue},70%,65%)"/>'
                       f'<text x="{x + 2:.1f}" y="{y + row - 4}">{label}</text></g>')
            deepest = max(deepest, _layout(children, x, depth + 1, scale, out, row))
        x += w
    return deepest


def _speedscope_frame(frame: str) -> dict:
    name, file = frame_parts(frame)
    m = _FRAME.match(frame)
    out: dict = {"name": name}
    if file:
        out["file"] = file
    if m and m["line"]:
        out["line"] = int(m["line"])
    return out


def share(n: int, total: int) -> str:
    return f"{100 * n / total:.1f}%" if total else "-"


def torch_ops(trace: dict, top: int = 8) -> list[str]:
    """The top operators of a PyTorch profiler Chrome trace by summed duration (complete events, ``ph`` X)."""
    events = trace.get("traceEvents") if isinstance(trace, dict) else None
    total: Counter[str] = Counter()
    for e in events if isinstance(events, list) else []:
        if isinstance(e, dict) and e.get("ph") == "X" and isinstance(e.get("dur"), (int, float)):
            total[str(e.get("name", "?"))[:110]] += e["dur"]
    return [f"  {d / 1000:>9.1f} ms  {name}" for name, d in total.most_common(top)]
