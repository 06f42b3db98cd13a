"""The declared output comparator ([comparator] in target.toml): exact by default for every target, a
tolerance where a target declares one, and the same comparator in the probe gate and the output audit.

The gate tests run a real image target end to end (a stdlib server, a reference command, a benchmark writing
its answers): its "model" writes 64 tokens derived from the prompt, and a candidate departs from them on a
fraction of the positions. Inside the tolerance it passes both gates; outside it, both reject it.
"""

from __future__ import annotations

import base64
import io
import textwrap
import tomllib
from pathlib import Path

import pytest

from vibeserve.errors import TargetError
from vibeserve.gates.comparators import ComparatorFailed, judge, psnr, token_agreement
from vibeserve.gates.deterministic import run_gate
from vibeserve.gates.probes import make_image_probes, summarize
from vibeserve.gates.session import GateJob, run_gate_session
from vibeserve.target.spec import Comparator, load_target
from vibeserve.testing.toy_target import make_toy_target
from vibeserve.types import GateName

REPO = Path(__file__).resolve().parents[1]

# The image "model": 64 tokens from the prompt's hash; shared by the server, the reference and the command.
MODEL = '''
import hashlib
def tokens(prompt):
    digest = b"".join(hashlib.sha256(f"{prompt}:{i}".encode()).digest() for i in range(2))
    return [b % 256 for b in digest]
'''

SERVER = '''
import json, sys, pathlib
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from model import tokens
NOISE = float(pathlib.Path("noise.txt").read_text())  # the fraction of positions this candidate gets wrong
class H(BaseHTTPRequestHandler):
    def log_message(self, *a): pass
    def _send(self, obj):
        data = json.dumps(obj).encode()
        self.send_response(200); self.send_header("Content-Length", str(len(data))); self.end_headers()
        self.wfile.write(data)
    def do_GET(self):
        self._send({"status": "ok"} if self.path == "/health" else {"data": [{"id": "toy-image"}]})
    def do_POST(self):
        body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
        toks = tokens(body["prompt"])
        wrong = int(round(NOISE * len(toks)))
        toks = [(t + 1) % 256 if i < wrong else t for i, t in enumerate(toks)]
        self._send({"created": 0, "data": [{"image_tokens": toks, "b64_json": ""}]})
port = int(sys.argv[sys.argv.index("--port") + 1])
ThreadingHTTPServer(("127.0.0.1", port), H).serve_forever()
'''

REFERENCE = '''
import json, sys
from model import tokens
inp, out = sys.argv[sys.argv.index("--in") + 1], sys.argv[sys.argv.index("--out") + 1]
rows = [json.loads(x) for x in open(inp) if x.strip()]
assert all(r["kind"] == "image" for r in rows), rows
open(out, "w").write("".join(json.dumps({"id": r["id"], "image_tokens": tokens(r["prompt"])}) + "\\n" for r in rows))
'''

CHECKER = '''
import json, sys
json.dump({"passed": True}, open(sys.argv[sys.argv.index("--report") + 1], "w"))
'''

BENCH = '''
import json, sys, random, time, httpx
arg = lambda k: sys.argv[sys.argv.index(k) + 1]
url, rng, rows, ms = arg("--url"), random.Random(time.time_ns()), [], []
for i in range(4):
    prompt = f"a picture of thing {i} ({rng.randrange(10**9)})"
    t = time.perf_counter()
    data = httpx.post(url + "/v1/images/generations", json={"prompt": prompt, "n": 1}).json()["data"][0]
    ms.append((time.perf_counter() - t) * 1000)
    rows.append({"index": i, "kind": "image", "prompt": prompt, "ok": True, **data})
json.dump({"p50_latency_ms": sorted(ms)[2], "failed": 0}, open(arg("--out"), "w"))
open(arg("--responses"), "w").write("".join(json.dumps(r) + "\\n" for r in rows))
'''

# A comparator of the target's own: the same agreement, computed by a program (kind = "command").
COMMAND = '''
import json, sys
arg = lambda k: sys.argv[sys.argv.index(k) + 1]
rows = lambda k: [json.loads(x) for x in open(arg(k)) if x.strip()]
need = float(arg("--min"))
with open(arg("--verdicts"), "w") as out:
    for req, exp, got in zip(rows("--requests"), rows("--expected"), rows("--answers")):
        want, have = exp["image_tokens"], got.get("image_tokens") or []
        score = sum(a == b for a, b in zip(want, have)) / len(want)
        out.write(json.dumps({"ok": score >= need, "score": score, "detail": f"agreement {score:.2f}"}) + "\\n")
'''

COMPARATORS = {
    "token-agreement": 'kind = "token-agreement"\nfield = "image_tokens"\nmin_agreement = 0.9\n',
    "command": ('kind = "command"\ncommand = ["{python}", "compare.py", "--requests", "{requests}", "--expected", '
                '"{expected}", "--answers", "{answers}", "--verdicts", "{verdicts}", "--min", "0.9"]\n'),
}


def image_target(root: Path, comparator: str) -> Path:
    root.mkdir(parents=True)
    for name, text in {"model.py": MODEL, "reference.py": REFERENCE, "checker.py": CHECKER, "bench.py": BENCH,
                       "compare.py": COMMAND, "INSTRUCTIONS.md": "Serve images.\n"}.items():
        (root / name).write_text(textwrap.dedent(text))
    (root / "seed").mkdir()
    (root / "seed" / "server.py").write_text(SERVER)
    (root / "seed" / "model.py").write_text(MODEL)
    (root / "target.toml").write_text(textwrap.dedent('''\
        version = 1
        name = "toy-image"
        seed = "seed"
        [hardware]
        backend = "cpu"
        [reference]
        command = ["{python}", "reference.py", "--in", "{input}", "--out", "{output}"]
        [deliverable]
        start = ["{python}", "server.py", "--port", "{port}"]
        ready_url = "http://127.0.0.1:{port}/health"
        ready_timeout_s = 30
        [accuracy]
        command = ["{python}", "checker.py", "--report", "{report}"]
        [probes]
        kind = "openai-images"
        count = 4
        [benchmark]
        command = ["{python}", "bench.py", "--url", "{url}", "--out", "{report}", "--responses", "{responses}"]
        metric = "p50_latency_ms"
        direction = "min"
        repeats = 1
        warmup = 0
        [comparator]
        ''') + COMPARATORS[comparator])
    return root


def gate(target_root: Path, tree: Path, which: GateName, tmp: Path) -> tuple[bool, str, dict]:
    target = load_target(target_root)
    job = GateJob(gate=which, target_root=target.root, workdir=tree, log_dir=tmp / "logs" / str(which), commit="c")
    verdict = run_gate(target, which, job, run_gate_session, run_seed=11, attempt=1, cache_dir=tmp / "cache",
                       bench_lock=tmp / "bench.lock")
    return verdict.passed, verdict.reason, verdict.report


@pytest.mark.parametrize("comparator", sorted(COMPARATORS))
def test_a_candidate_inside_the_tolerance_passes_both_gates_and_one_outside_fails_both(tmp_path, comparator):
    root = image_target(tmp_path / "target", comparator)
    for noise, inside in ((0.05, True), (0.5, False)):
        tree = tmp_path / f"tree-{noise}"
        tree.mkdir()
        for f in (root / "seed").iterdir():
            (tree / f.name).write_text(f.read_text())
        (tree / "noise.txt").write_text(str(noise))
        work = tmp_path / f"work-{noise}"
        passed, reason, report = gate(root, tree, GateName.PROBES, work)
        assert passed is inside, reason
        assert report["total"] == 4 and len(report["probes"]) == 4
        if not inside:
            assert reason.startswith("probes: 4 of 4 differ from the reference") and "agree" in reason, reason
        passed, reason, report = gate(root, tree, GateName.BENCHMARK, work)
        assert passed is inside, reason
        assert report["audit"]["checked"] == 4, report["audit"]
        if not inside:
            assert reason.startswith("output audit: 4 of 4 differ") and reason.endswith("under load"), reason


def test_token_agreement_and_psnr_hold_a_threshold() -> None:
    spec = Comparator(kind="token-agreement", field="t", min_agreement=0.75)
    assert token_agreement(spec, {"t": [1, 2, 3, 4]}, {"t": [1, 2, 3, 9]})["status"] == "ok"
    low = token_agreement(spec, {"t": [1, 2, 3, 4]}, {"t": [1, 2, 8, 9]})
    assert low["status"] == "mismatch" and low["agreement"] == 0.5 and "below min_agreement 0.75" in low["detail"]
    assert "has 3 items" in token_agreement(spec, {"t": [1, 2, 3, 4]}, {"t": [1, 2, 3]})["detail"]
    with pytest.raises(ComparatorFailed, match="reference's output has no non-empty list 't'"):
        token_agreement(spec, {}, {"t": [1]})

    import numpy as np
    from PIL import Image

    def png(pixels) -> str:
        buf = io.BytesIO()
        Image.fromarray(np.asarray(pixels, dtype=np.uint8)).save(buf, format="PNG")
        return base64.b64encode(buf.getvalue()).decode()

    rng = np.random.default_rng(0)
    ref = rng.integers(0, 256, (8, 8, 3))
    close = np.clip(ref + rng.integers(-2, 3, ref.shape), 0, 255)  # about 1.4 levels of noise: ~45 dB
    spec = Comparator(kind="psnr", min_psnr_db=35)
    assert psnr(spec, {"b64_json": png(ref)}, {"b64_json": png(ref)})["psnr_db"] == "inf"
    assert psnr(spec, {"b64_json": png(ref)}, {"b64_json": png(close)})["status"] == "ok"
    far = psnr(spec, {"b64_json": png(ref)}, {"b64_json": png(255 - ref)})
    assert far["status"] == "mismatch" and "below min_psnr_db 35" in far["detail"]
    assert "not an image" in psnr(spec, {"b64_json": png(ref)}, {"b64_json": "not base64!"})["detail"]
    assert "shape" in psnr(spec, {"b64_json": png(ref)}, {"b64_json": png(ref[:4])})["detail"]


def test_exact_is_the_default_and_keeps_naming_where_texts_part(tmp_path) -> None:
    target = load_target(make_toy_target(tmp_path / "t"))
    assert target.spec.comparator.kind == "exact"
    requests = [{"id": "a"}, {"id": "b"}, {"id": "c"}]
    results = judge(target, requests, [{"text": "same"}, {"text": "hello world"}, {"text": "x"}],
                    [({"text": "same"}, None), ({"text": "hello there"}, None), (None, "HTTP 500")], tmp_path)
    assert [r["status"] for r in results] == ["ok", "mismatch", "error"]
    assert results[1]["first_difference_at_char"] == 6
    passed, why = summarize(results)
    assert not passed and why.startswith("2 of 3 differ") and "part at character 6" in why


def test_every_example_target_but_the_image_kit_compares_exactly() -> None:
    kits = sorted((REPO / "examples" / "targets").glob("*/target.toml"))
    assert kits
    for path in kits:
        table = tomllib.loads(path.read_text()).get("comparator")
        if path.parent.name in ("janus-image-cpu", "janus-pro-7b-h100"):
            assert table and table["kind"] == "command", path
        else:
            assert table is None, f"{path}: declares a comparator; exact is every text kit's contract"


@pytest.mark.parametrize(("table", "key", "words"), [
    ('kind = "token-agreement"', "comparator.min_agreement", 'required with kind = "token-agreement"'),
    ('kind = "token-agreement"\nmin_agreement = 1.5', "comparator.min_agreement", "at most 1 (got 1.5)"),
    ('kind = "psnr"\nmin_psnr_db = -3', "comparator.min_psnr_db", "above 0 (got -3"),
    ('kind = "psnr"', "comparator.min_psnr_db", 'required with kind = "psnr"'),
    ('min_psnr_db = 30', "comparator.min_psnr_db", 'only used with kind = "psnr"'),
    ('kind = "command"', "comparator.command", 'required with kind = "command"'),
    ('kind = "command"\ncommand = ["{python}", "c.py", "{answer}"]', "comparator.command",
     "unknown placeholder {answer}"),
    ('kind = "close-enough"', "comparator.kind", "'exact', 'token-agreement', 'psnr' or 'command'"),
    ('kind = "exact"\nmin_agreemnt = 0.9', "comparator.min_agreemnt", "did you mean 'min_agreement'"),
])
def test_a_comparator_that_does_not_fit_its_kind_is_named_at_load(tmp_path, table, key, words) -> None:
    root = make_toy_target(tmp_path / "t")
    (root / "c.py").write_text("")
    with (root / "target.toml").open("a") as f:
        f.write(f"\n[comparator]\n{table}\n")
    with pytest.raises(TargetError) as e:
        load_target(root)
    assert key in str(e.value) and words in str(e.value), str(e.value)


def test_image_probes_are_fresh_per_seed_and_repeat_the_first_prompt() -> None:
    a, b = make_image_probes(1, 5), make_image_probes(2, 5)
    assert a == make_image_probes(1, 5) and a != b
    assert {p["kind"] for p in a} == {"image"} and a[0]["prompt"] == a[-1]["prompt"]
    assert len({p["prompt"] for p in a + b}) >= 6


def test_a_failing_comparator_command_is_a_target_error(tmp_path) -> None:
    root = image_target(tmp_path / "target", "command")
    (root / "compare.py").write_text("import sys; sys.exit(3)\n")
    target = load_target(root)
    with pytest.raises(ComparatorFailed, match=r"\[comparator\].command failed \(exit 3\)"):
        judge(target, [{"id": "a", "kind": "image", "prompt": "p"}], [{"image_tokens": [1]}],
              [({"image_tokens": [1]}, None)], tmp_path / "logs")
