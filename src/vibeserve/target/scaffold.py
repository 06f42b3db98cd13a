"""``vibeserve init``: write a target that validates as it is, to be edited into a real one.

Two templates. ``toy`` (the default) serves ``f(x) = x*x + 1`` with a stdlib HTTP server in
milliseconds; its benchmark reads a ``score`` the server declares, so it shows the contract's shape, not a
measurement. ``llm-chat`` is a working LLM target: an OpenAI-compatible seed server, an HF Transformers
reference, an exact checker and ``python -m vibeserve.bench`` as the load; its files live under
``templates/llm-chat/`` (package data) and each says what to replace.
"""

from __future__ import annotations

import shutil
from importlib import resources
from pathlib import Path

from vibeserve.errors import VibeserveError

TEMPLATES = {
    "toy": "a stdlib server computing x*x + 1; validates in seconds, shows the contract's shape",
    "llm-chat": "an OpenAI-compatible LLM server, HF Transformers reference, exact checker, vibeserve.bench load",
}
DEFAULT_TEMPLATE = "toy"


class TemplateError(VibeserveError):
    """``vibeserve init`` cannot write the asked-for template where it was asked to."""

TARGET_TOML = """\
version = 1
name = "toy"
instructions = "INSTRUCTIONS.md"
seed = "seed"

[hardware]
backend = "cpu"
summary = "any machine"

[artifacts]
table = "artifacts/table.json"

[reference]
sample_input = "reference_sample.jsonl"
command = ["python", "reference.py", "--in", "{input}", "--out", "{output}"]
timeout_s = 30

[deliverable]
start = ["python", "server.py", "--port", "{port}"]
ready_url = "http://127.0.0.1:{port}/health"
ready_timeout_s = 20

[accuracy]
command = ["python", "checks/accuracy.py", "--url", "{url}", "--report", "{report}"]
timeout_s = 30

[benchmark]
command = ["python", "checks/bench.py", "--url", "{url}", "--out", "{report}"]
timeout_s = 30
metric = "score"
direction = "max"
unit = "pts"
repeats = 2
min_gain = 0.03

[budget]
rounds = 3
retries_per_round = 2
agent_timeout_s = 60
max_cost_usd = 1
max_wall_h = 1
"""

SERVER = '''\
import argparse
import json
import pathlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlparse

HERE = pathlib.Path(__file__).parent


def f(x):
    return x * x + 1


class Handler(BaseHTTPRequestHandler):
    def log_message(self, *args):
        pass

    def reply(self, obj):
        body = json.dumps(obj).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_GET(self):
        url = urlparse(self.path)
        if url.path == "/health":
            return self.reply({"status": "ok"})
        if url.path == "/compute":
            return self.reply({"y": f(int(parse_qs(url.query)["x"][0]))})
        if url.path == "/stats":
            stats = {"score": float((HERE / "score.txt").read_text())}
            if (HERE / "latency.txt").is_file():  # a second number, for targets that declare two objectives
                stats["latency_ms"] = float((HERE / "latency.txt").read_text())
            return self.reply(stats)
        self.send_error(404)


if __name__ == "__main__":
    ap = argparse.ArgumentParser()
    ap.add_argument("--port", type=int, required=True)
    ThreadingHTTPServer(("127.0.0.1", ap.parse_args().port), Handler).serve_forever()
'''

ACCURACY = '''\
import argparse
import json
import sys
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--report", required=True)
a = ap.parse_args()
# The checker contract: a JSON report with a boolean "passed"; exit 0 = pass, exit 1 = the server fails
# (a wrong answer or no valid answer at all); any other exit = the checker itself is broken.
cases = []
for x in range(8):
    try:
        with urllib.request.urlopen(f"{a.url}/compute?x={x}", timeout=5) as r:
            got = json.load(r)["y"]
    except Exception as e:  # the server's failure, not the checker's
        got = f"error: {type(e).__name__}: {e}"
    cases.append({"x": x, "expected": x * x + 1, "got": got, "ok": got == x * x + 1})
passed = all(c["ok"] for c in cases)
bad = [c for c in cases if not c["ok"]]
summary = f"{len(bad)} of {len(cases)} answers wrong" + (f" (first: x={bad[0]['x']} gave {bad[0]['got']!r})" if bad else "")
json.dump({"passed": passed, "summary": summary, "cases": cases}, open(a.report, "w"))
sys.exit(0 if passed else 1)
'''

BENCH = '''\
import argparse
import json
import urllib.request

ap = argparse.ArgumentParser()
ap.add_argument("--url", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()
for x in range(4):
    urllib.request.urlopen(f"{a.url}/compute?x={x}", timeout=5).read()
with urllib.request.urlopen(f"{a.url}/stats", timeout=5) as r:
    stats = json.load(r)
score = stats.pop("score")
json.dump({"score": score, "completed": 4, **stats}, open(a.out, "w"))
'''

REFERENCE = '''\
import argparse
import json

ap = argparse.ArgumentParser()
ap.add_argument("--in", dest="inp", required=True)
ap.add_argument("--out", required=True)
a = ap.parse_args()
with open(a.inp) as fi, open(a.out, "w") as fo:
    for line in fi:
        req = json.loads(line)
        fo.write(json.dumps({"id": req["id"], "y": req["x"] * req["x"] + 1}) + "\\n")
'''



INSTRUCTIONS = """\
# Instructions for the agents

Hardware: say what the deliverable runs on (cores, memory, accelerator).

Deliverable: an HTTP server started by `python server.py --port PORT`, answering `GET /health` with 200 once
ready and `GET /compute?x=N` with `{"y": f(N)}` where f(x) = x*x + 1.

Constraints: edit only the deliverable; outputs must equal the reference's.
"""


def template_files(name: str = "my-target", rounds: int = 3, retries: int = 2, repeats: int = 2) -> dict[str, str]:
    """The scaffold's files, ``{relative path: text}``."""
    toml = TARGET_TOML.replace('name = "toy"', f'name = "{name}"').replace("rounds = 3", f"rounds = {rounds}")
    toml = toml.replace("retries_per_round = 2", f"retries_per_round = {retries}")
    toml = toml.replace("repeats = 2", f"repeats = {repeats}")
    return {
        "target.toml": toml,
        "INSTRUCTIONS.md": INSTRUCTIONS,
        "reference.py": REFERENCE,
        "reference_sample.jsonl": '{"id": "a", "x": 3}\n{"id": "b", "x": 5}\n',
        "checks/accuracy.py": ACCURACY,
        "checks/bench.py": BENCH,
        "artifacts/table.json": '{"f": "x*x+1"}\n',
        "seed/server.py": SERVER,
        "seed/score.txt": "1.0\n",
    }


def write_target(root: Path, name: str | None = None, template: str = DEFAULT_TEMPLATE, **options: int) -> Path:
    """Write ``template`` into ``root`` (a new or empty directory) and return it.

    ``name`` is the target's name (default: from the directory's); ``options`` (rounds, retries, repeats)
    apply to the toy template only.
    """
    if template not in TEMPLATES:
        raise TemplateError(f"unknown template {template!r}; known templates: {', '.join(TEMPLATES)}")
    if root.exists() and (not root.is_dir() or any(root.iterdir())):
        raise TemplateError(f"{root} already exists and is not an empty directory; choose a new or empty one")
    name = name or _slug(root.name)
    if template == "toy":
        for rel, text in template_files(name, **options).items():
            path = root / rel
            path.parent.mkdir(parents=True, exist_ok=True)
            path.write_text(text)
        return root
    with resources.as_file(resources.files("vibeserve.target") / "templates" / template) as source:
        shutil.copytree(source, root, dirs_exist_ok=True, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
    toml = root / "target.toml"
    toml.write_text(toml.read_text().replace(f'name = "{template}"', f'name = "{name}"', 1))
    return root


def _slug(text: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug or "my-target"
