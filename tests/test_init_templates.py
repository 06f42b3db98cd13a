"""``vibeserve init --template``, through the real CLI as a user runs it, and docs/targets.md against the schema."""

from __future__ import annotations

import json
import re
import socket
import subprocess
import sys
from pathlib import Path

import pytest
from pydantic import BaseModel

from conftest import REPO, cli
from vibeserve.target.scaffold import TEMPLATES
from vibeserve.target.spec import TargetSpec

DOCS = REPO / "docs" / "targets.md"


@pytest.fixture(scope="module")
def llm_target(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, subprocess.CompletedProcess]:
    """A fresh llm-chat target, initialised and validated once (its setup builds the tiny model)."""
    root = tmp_path_factory.mktemp("init") / "my-chat"
    cli("init", str(root), "--template", "llm-chat", check=True)
    return root, cli("validate", str(root), timeout=900)


@pytest.mark.slow
def test_llm_chat_template_validates_on_a_fresh_copy(llm_target) -> None:
    root, validated = llm_target
    assert validated.returncode == 0, validated.stdout + validated.stderr
    out = validated.stdout
    for step in ("setup: built the missing artifacts", "reference: answered 2 inputs",
                 "accuracy: the checker passes the seed", "probes: 8/8 fresh probes equal the reference",
                 "benchmark: output_throughput =", "output audit 8/8 answers equal the reference"):
        assert step in out, out
    assert (root / "artifacts" / "model" / "model.safetensors").is_file()
    assert 'name = "my-chat"' in (root / "target.toml").read_text()  # named after its directory


def _checker(root: Path, url: str, model: Path, report: Path) -> subprocess.CompletedProcess:
    argv = [sys.executable, "checks/accuracy.py", "--url", url, "--model", str(model),
            "--cases", str(root / "checks" / "cases.jsonl"), "--report", str(report), "--timeout", "5"]
    return subprocess.run(argv, cwd=root, capture_output=True, text=True, timeout=120)


@pytest.mark.slow
def test_llm_chat_checker_fails_a_server_that_does_not_answer_with_exit_1(llm_target, tmp_path: Path) -> None:
    root, validated = llm_target
    assert validated.returncode == 0
    with socket.socket() as s:  # a port with nothing listening: every request fails, the candidate's fault
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    report = tmp_path / "report.json"
    done = _checker(root, url, root / "artifacts" / "model", report)
    assert done.returncode == 1, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["passed"] is False and data["failures"] == data["total"] > 0
    assert {c["status"] for c in data["cases"]} == {"error"}
    assert "Traceback" not in done.stderr


def test_llm_chat_checker_reports_its_own_failure_with_exit_2(tmp_path: Path) -> None:
    root = tmp_path / "t"
    cli("init", str(root), "--template", "llm-chat", check=True)
    report = tmp_path / "report.json"
    done = _checker(root, "http://127.0.0.1:9", tmp_path / "no-such-model", report)
    assert done.returncode == 2, done.stdout + done.stderr
    data = json.loads(report.read_text())
    assert data["passed"] is False and "could not prepare its cases" in data["error"]


def test_llm_chat_setup_refuses_to_build_outside_its_target(tmp_path: Path) -> None:
    root = tmp_path / "t"
    cli("init", str(root), "--template", "llm-chat", check=True)
    outside = tmp_path / "my-checkpoint"
    done = subprocess.run([sys.executable, "setup_model.py", "--out", str(outside)], cwd=root,
                          capture_output=True, text=True, timeout=60)
    assert done.returncode == 2 and "outside this target" in done.stderr
    assert not outside.exists()


def test_unknown_template_is_a_clear_error(tmp_path: Path) -> None:
    done = cli("init", str(tmp_path / "t"), "--template", "llm-chta")
    assert done.returncode != 0
    assert "unknown template 'llm-chta'" in done.stderr
    for name in TEMPLATES:
        assert name in done.stderr
    assert "Traceback" not in done.stderr
    assert not (tmp_path / "t").exists()


@pytest.mark.parametrize("template", sorted(TEMPLATES))
def test_init_refuses_a_non_empty_directory(tmp_path: Path, template: str) -> None:
    root = tmp_path / "mine"
    root.mkdir()
    (root / "notes.txt").write_text("mine\n")
    done = cli("init", str(root), "--template", template)
    assert done.returncode != 0 and "not an empty directory" in done.stderr
    assert sorted(p.name for p in root.iterdir()) == ["notes.txt"]


def test_init_writes_into_an_existing_empty_directory(tmp_path: Path) -> None:
    root = tmp_path / "empty"
    root.mkdir()
    cli("init", str(root), check=True)
    assert (root / "target.toml").is_file()


def test_init_help_lists_every_template() -> None:
    done = cli("init", "--help", check=True)
    text = " ".join(done.stdout.split())
    for name in TEMPLATES:
        assert name in text


# -- docs/targets.md covers the schema -------------------------------------------------------------------
def _sections(text: str) -> dict[str, str]:
    """Text under each heading, keyed by the heading line."""
    parts = re.split(r"^(#{1,4} .*)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _tables(model: type[BaseModel], prefix: str = "") -> dict[str, type[BaseModel]]:
    """Every table of the schema, by its TOML name ("" for the top level)."""
    out = {prefix: model}
    for name, field in model.model_fields.items():
        ann = field.annotation
        sub = next((a for a in (ann, *getattr(ann, "__args__", ())) if isinstance(a, type)
                    and issubclass(a, BaseModel)), None)
        if sub is not None:
            out.update(_tables(sub, f"{prefix}.{name}" if prefix else name))
    return out


def _toml(value: object) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, list):
        return "[" + ", ".join(_toml(v) for v in value) + "]"
    return str(value)


def _documented_default(field) -> str:
    if field.is_required():
        return "required"
    default = field.get_default(call_default_factory=True)
    return "unset" if default is None else f"`{_toml(default)}`"


def test_every_target_toml_key_is_documented_with_its_default() -> None:
    sections = _sections(DOCS.read_text())
    missing = []
    tables = _tables(TargetSpec)
    for table, model in tables.items():
        heading = "Top-level keys" if not table else f"`[{table}]`"
        body = "".join(text for head, text in sections.items() if heading in head)
        if not body:
            missing.append(f"no section whose heading holds {heading}")
            continue
        for key, field in model.model_fields.items():
            if not table and (key in tables or key == "artifacts"):
                continue  # a table: it has its own section
            rows = [line for line in body.splitlines() if line.startswith(f"| `{key}` |")]
            want = _documented_default(field)
            if not rows:
                missing.append(f"[{table or 'top level'}] {key}: no row")
            elif not any(row.split("|")[2].strip().startswith(want) for row in rows):
                missing.append(f"[{table or 'top level'}] {key}: default should read {want}: {rows}")
    # [artifacts] is a free-form table of names: it needs a section, not rows.
    assert any("`[artifacts]`" in head for head in sections)
    assert not missing, "\n".join(missing)


def test_every_placeholder_is_documented() -> None:
    from vibeserve.target.spec import ALLOWED

    text = DOCS.read_text()
    names = {name for allowed in ALLOWED.values() for name in allowed} - {"artifacts"}
    for name in [*names, "artifacts.NAME"]:
        assert re.search(rf"^\| `\{{{re.escape(name)}\}}` \|", text, flags=re.M), name

