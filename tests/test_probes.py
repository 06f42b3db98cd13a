"""Probe inputs, the reference cache, comparisons, the output audit and the static diff checks."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from vibeserve.errors import TargetError
from vibeserve.gates.probes import (
    ReferenceFailed,
    ask,
    audit_responses,
    compare,
    make_probes,
    probes_from_requests,
    reference_outputs,
    request_key,
    round_seed,
    summarize,
)
from vibeserve.gates.static import scan_diff
from vibeserve.target.spec import load_target
from vibeserve.testing.toy_target import make_toy_target

# A stand-in reference: the answer is the prompt upper-cased; every request it sees is counted.
ECHO = """
import argparse, json, pathlib
p = argparse.ArgumentParser(); p.add_argument("--in", dest="inp"); p.add_argument("--out"); a = p.parse_args()
rows = [json.loads(x) for x in pathlib.Path(a.inp).read_text().splitlines() if x.strip()]
with open("seen.log", "a") as f:
    f.write("".join(r["id"] + "\\n" for r in rows))
def text(r):
    return (r.get("prompt") or r["messages"][-1]["content"]).upper()[: r["max_tokens"] * 4]
pathlib.Path(a.out).write_text("".join(json.dumps({"id": r["id"], "text": text(r)}) + "\\n" for r in rows))
"""


@pytest.fixture
def target(tmp_path: Path):
    root = make_toy_target(tmp_path / "t")
    (root / "reference.py").write_text(ECHO)
    return load_target(root)


def seen(target) -> list[str]:
    log = target.root / "seen.log"
    return log.read_text().split() if log.exists() else []


def test_probes_are_fresh_per_seed_varied_and_reproducible() -> None:
    a, b = make_probes(1, 8, 16), make_probes(2, 8, 16)
    assert a == make_probes(1, 8, 16) and a != b
    assert {p["kind"] for p in a} == {"chat", "completion"}
    assert len({p["max_tokens"] for p in a + b}) >= 2
    lengths = {len((p.get("prompt") or p["messages"][-1]["content"]).split()) for p in a + b}
    assert max(lengths) - min(lengths) >= 10
    # The last one repeats the first prompt with another max_tokens (a prompt-keyed response cache fails it).
    first, last = a[0], a[-1]
    assert first.get("prompt") == last.get("prompt") and first["max_tokens"] != last["max_tokens"]
    assert round_seed(7, 1, "probes-a1") != round_seed(7, 2, "probes-a1") != round_seed(8, 1, "probes-a1")


def test_reference_outputs_are_cached_by_request_not_id(target, tmp_path: Path) -> None:
    reqs = make_probes(3, 4, 8)
    out = reference_outputs(target, reqs, tmp_path / "cache", tmp_path / "log")
    assert [o["text"] for o in out] == [(r.get("prompt") or r["messages"][-1]["content"]).upper()[: r["max_tokens"] * 4]
                                        for r in reqs]
    assert len(seen(target)) == len({request_key(r) for r in reqs})
    renamed = [dict(r, id=f"other-{i}") for i, r in enumerate(reqs)]
    assert reference_outputs(target, renamed, tmp_path / "cache", tmp_path / "log") == out
    assert len(seen(target)) == len({request_key(r) for r in reqs})  # nothing generated twice


def test_a_failing_reference_is_a_target_error(target, tmp_path: Path) -> None:
    (target.root / "reference.py").write_text("import sys; sys.exit(3)\n")
    with pytest.raises(ReferenceFailed, match=r"\[reference\]\.command failed \(exit 3\)"):
        reference_outputs(target, make_probes(1, 2, 4), tmp_path / "cache", tmp_path / "log")


def test_compare_and_summarize_name_the_first_difference() -> None:
    assert compare({"text": "abc"}, "abc") == {"status": "ok"}
    bad = compare({"text": "abcdef"}, "abXdef")
    assert bad["status"] == "mismatch" and bad["first_difference_at_char"] == 2
    assert compare({"text": "abc"}, "ab")["first_difference_at_char"] == 2  # truncated
    assert compare({"text": "abc"}, None, "HTTP 500")["status"] == "error"
    ok, why = summarize([{"id": "p0", "status": "ok"}, {"id": "p1", **bad}])
    assert not ok and why.startswith(
        "1 of 2 differ from the reference (first, p1: they part at character 2: expected 'abcdef', got 'abXdef')")


def test_a_difference_late_in_a_long_text_is_shown_where_it_is() -> None:
    # Texts that agree for 300 characters: the report shows where they part, not two identical openings.
    want = "the same words again and again " * 10 + "and then the reference goes on like this"
    got = "the same words again and again " * 10 + "and then the candidate says something else"
    bad = compare({"text": want}, got)
    at = bad["first_difference_at_char"]
    assert at == len("the same words again and again " * 10 + "and then the ")
    assert bad["expected"].startswith("…") and "reference goes on" in bad["expected"]
    assert "candidate says" in bad["got"] and bad["expected"] != bad["got"]
    _, why = summarize([{"id": "p", **bad}])
    assert "reference goes on" in why and "candidate says" in why


def write_rows(path: Path, rows: list[dict]) -> None:
    path.write_text("".join(json.dumps(r) + "\n" for r in rows))


def test_audit_compares_a_sample_of_the_benchmarks_own_answers(target, tmp_path: Path) -> None:
    rows = [{"prompt": f"words {i}", "max_tokens": 8, "text": f"WORDS {i}", "ok": True} for i in range(10)]
    write_rows(tmp_path / "bench0.responses.jsonl", rows)
    write_rows(tmp_path / "bench-warmup0.responses.jsonl", [{"prompt": "x", "max_tokens": 1, "text": "?", "ok": True}])
    result = audit_responses(target, tmp_path, tmp_path / "cache", seed=5, count=4)
    assert result["passed"] and result["checked"] == 4 and result["of"] == 10  # warm-up answers are not audited

    rows[3]["text"] = "WORDS 3 and more"  # wrong under load: every row is audited when count covers all
    write_rows(tmp_path / "bench0.responses.jsonl", rows)
    result = audit_responses(target, tmp_path, tmp_path / "cache", seed=5, count=10)
    assert not result["passed"] and "1 of 10 differ" in result["reason"] and "under load" in result["reason"]

    rows[3] = {**rows[3], "ok": False, "error": "timeout"}
    write_rows(tmp_path / "bench0.responses.jsonl", rows)
    assert "recorded as failed (first: timeout)" in audit_responses(target, tmp_path, tmp_path / "c", 5, 4)["reason"]


def test_by_default_every_answer_of_one_repeat_is_audited(target, tmp_path: Path) -> None:
    # One answer in sixteen wrong (as bf16 in an output head does): four samples miss it most of the time;
    # the default, every answer of the repeat the seed picks after the run, never does.
    for r in range(3):
        rows = [{"prompt": f"words {r} {i}", "max_tokens": 8, "text": f"WORDS {r} {i}", "ok": True} for i in range(16)]
        rows[11]["text"] = "WORDS almost"
        write_rows(tmp_path / f"bench{r}.responses.jsonl", rows)
    sampled = [audit_responses(target, tmp_path, tmp_path / "cache", seed, 4)["passed"] for seed in range(12)]
    assert any(sampled)  # the hole a sample of four left open
    for seed in range(12):
        full = audit_responses(target, tmp_path, tmp_path / "cache", seed, None)
        assert not full["passed"] and full["checked"] == full["of"] == 16
        assert full["repeat"] in {f"bench{r}.responses.jsonl" for r in range(3)}
    picks = {audit_responses(target, tmp_path, tmp_path / "cache", seed, None)["repeat"] for seed in range(12)}
    assert len(picks) > 1  # the repeat is drawn from the seed, not always the first


def test_audit_of_another_protocol_asks_the_reference_what_the_benchmark_recorded(target, tmp_path: Path) -> None:
    # A benchmark that speaks no OpenAI protocol (a speech stream, say) records each request in the
    # reference's own input format; the audit hands it over as it is, with an id, and compares the answer.
    asked = [{"prompt": f"stream {i}", "max_tokens": 8, "channel": i} for i in range(6)]
    rows = [{"reference_request": req, "text": req["prompt"].upper(), "ok": True} for req in asked]
    write_rows(tmp_path / "bench0.responses.jsonl", rows)
    result = audit_responses(target, tmp_path, tmp_path / "cache", seed=3, count=None)
    assert result["passed"] and result["checked"] == 6, result
    rows[4]["text"] = "STREAM 4 AND MORE"
    write_rows(tmp_path / "bench0.responses.jsonl", rows)
    result = audit_responses(target, tmp_path, tmp_path / "cache", seed=3, count=None)
    assert not result["passed"] and "1 of 6 differ" in result["reason"]


def test_an_audit_with_nothing_comparable_fails(target, tmp_path: Path) -> None:
    write_rows(tmp_path / "bench0.responses.jsonl", [{"ignore_eos": True, "prompt": "x", "max_tokens": 4,
                                                      "text": "y", "ok": True}])
    result = audit_responses(target, tmp_path, tmp_path / "cache", seed=1, count=None)
    assert not result["passed"] and "could be compared" in result["reason"]


def test_audit_without_answers_fails(target, tmp_path: Path) -> None:
    result = audit_responses(target, tmp_path, tmp_path / "cache", seed=1, count=4)
    assert not result["passed"] and "wrote no answers" in result["reason"]


DIFF = '''diff --git a/server.py b/server.py
--- a/server.py
+++ b/server.py
@@ -10,3 +10,9 @@ def handle(prompt):
 x = 1
+SEEN = {}
+    if prompt in SEEN: return SEEN[prompt]
+    expected = open("/srv/targets/tiny/checks/accuracy.py").read()
+    open("/etc/out.txt", "w").write(x)
+    ANSWER = "%s"
+    ids = tokenizer.encode(text)  # an honest line
''' % ("z" * 300)


def test_static_checks_point_at_suspicious_added_lines(target) -> None:
    findings = scan_diff(DIFF.replace("/srv/targets/tiny", str(target.root)), target)
    kinds = {(f.kind, f.line) for f in findings}
    assert ("prompt_keyed_table", 12) in kinds
    assert ("reads_target_files", 13) in kinds
    assert ("write_outside", 14) in kinds
    assert ("large_literal", 15) in kinds
    assert not any(f.line == 16 for f in findings)
    assert all(f.file == "server.py" for f in findings)


ROWS = [{"messages": [{"role": "user", "content": f"edit {i}"}], "max_tokens": 40,
         "prediction": {"type": "content", "content": f"code {i}"}} for i in range(5)]


def test_probes_drawn_from_a_requests_file_keep_its_extra_fields_and_are_fresh() -> None:
    probes = probes_from_requests(ROWS, seed=3, count=6, max_tokens=24)
    assert probes == probes_from_requests(ROWS, seed=3, count=6, max_tokens=24)
    assert probes != probes_from_requests(ROWS, seed=4, count=6, max_tokens=24)
    for p in probes:
        body = p["messages"][-1]["content"]
        source = next(r for r in ROWS if body.startswith(r["messages"][-1]["content"] + " ("))
        assert p["kind"] == "chat" and p["prediction"] == source["prediction"]
        assert body != source["messages"][-1]["content"]  # a fresh tail: no answer could be prepared
        assert 1 <= p["max_tokens"] <= 24  # capped by [probes].max_tokens
    # The last repeats the first prompt with another length (a response cache answers it wrongly).
    assert probes[-1]["messages"] == probes[0]["messages"] and probes[-1]["max_tokens"] != probes[0]["max_tokens"]


def test_the_audit_gives_the_reference_each_answers_extra_fields(target, tmp_path: Path) -> None:
    (target.root / "reference.py").write_text(ECHO.replace(
        'return (r.get("prompt")', 'return json.dumps(r.get("prediction")) if "prediction" in r else (r.get("prompt")'))
    rows = [{"messages": r["messages"], "max_tokens": 8, "extra": {"prediction": r["prediction"]},
             "text": json.dumps(r["prediction"]), "ok": True} for r in ROWS]
    write_rows(tmp_path / "bench0.responses.jsonl", rows)
    assert audit_responses(target, tmp_path, tmp_path / "cache", seed=1, count=None)["passed"]
    rows[2]["extra"]["prediction"]["content"] = "another"  # the answer no longer fits the request sent
    write_rows(tmp_path / "bench0.responses.jsonl", rows)
    assert "1 of 5 differ" in audit_responses(target, tmp_path, tmp_path / "cache", seed=1, count=None)["reason"]


def test_a_probe_requests_file_is_checked_when_the_target_loads(target) -> None:
    toml = target.root / "target.toml"
    toml.write_text(toml.read_text().replace("[probes]", '[probes]\nrequests = "probes.jsonl"'))
    if "[probes]" not in toml.read_text():
        toml.write_text(toml.read_text() + '\n[probes]\nrequests = "probes.jsonl"\n')
    with pytest.raises(TargetError, match=r"probes.requests: file 'probes.jsonl' does not exist"):
        load_target(target.root)
    (target.root / "probes.jsonl").write_text('{"prompt": "no messages"}\n')
    with pytest.raises(TargetError, match=r'probes.jsonl:1: expected a JSON object with a non-empty "messages"'):
        load_target(target.root)
    write_rows(target.root / "probes.jsonl", ROWS)
    assert load_target(target.root).spec.probes.requests == "probes.jsonl"


def test_a_stream_ends_at_done_or_after_a_finish_reason_and_is_cut_short_otherwise() -> None:
    """The probes read a streamed answer as the load generator does: complete at data: [DONE], or when it
    closes cleanly after a chunk with a finish_reason (as `transformers serve` ends); else it was cut short."""
    import threading
    from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

    import httpx

    def chunk(text: str, finish: str | None = None) -> bytes:
        obj = {"choices": [{"index": 0, "delta": {"content": text}, "finish_reason": finish}]}
        return f"data: {json.dumps(obj)}\n\n".encode()

    endings = {"/done": chunk("a") + chunk("b", "length") + b"data: [DONE]\n\n",
               "/finish": chunk("a") + chunk("b", "length"),
               "/cut": chunk("a") + chunk("b")}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            self.rfile.read(int(self.headers["Content-Length"]))
            body = endings[self.path.split("/v1/")[0]]
            self.send_response(200)
            self.send_header("Content-Type", "text/event-stream")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    base = f"http://127.0.0.1:{server.server_address[1]}"
    request = {"kind": "chat", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 2}
    try:
        with httpx.Client() as client:
            assert ask(client, base + "/done", "m", request, stream=True, timeout=10) == "ab"
            assert ask(client, base + "/finish", "m", request, stream=True, timeout=10) == "ab"
            with pytest.raises(ValueError, match=r"without data: \[DONE\] or a finish_reason"):
                ask(client, base + "/cut", "m", request, stream=True, timeout=10)
    finally:
        server.shutdown()
        server.server_close()
