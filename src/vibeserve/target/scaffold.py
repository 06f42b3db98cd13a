"""``vibeserve init``: write a small target that validates as it is, to be edited into a real one.

The scaffold serves ``f(x) = x*x + 1`` with a stdlib HTTP server; every file says what to replace.
Its benchmark reads a ``score`` the server declares, so replace checks/bench.py with a real measurement
(for LLM servers: ``python -m vibeserve.bench``) before a real run.
"""

from __future__ import annotations

from pathlib import Path

from vibeserve.errors import VibeserveError

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
            return self.reply({"score": float((HERE / "score.txt").read_text())})
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
    score = json.load(r)["score"]
json.dump({"score": score, "completed": 4}, open(a.out, "w"))
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


def write_target(root: Path, name: str | None = None, **options: int) -> Path:
    """Write the scaffold into ``root`` (which must not hold a target yet) and return it."""
    if (root / "target.toml").exists():
        raise VibeserveError(f"{root / 'target.toml'} already exists; choose an empty directory")
    for rel, text in template_files(name or _slug(root.name), **options).items():
        path = root / rel
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    return root


def _slug(text: str) -> str:
    import re

    slug = re.sub(r"[^a-z0-9._-]+", "-", text.lower()).strip("-._")
    return slug or "my-target"
