"""The target contract: scaffold, validate, and a clear error for every kind of bad input."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from conftest import REPO, cli
from vibeserve.errors import TargetError
from vibeserve.target.manifest import build_manifest, diff_manifest
from vibeserve.target.spec import load_target
from vibeserve.target.validate import validate_target


def edit(target: Path, old: str, new: str) -> None:
    f = target / "target.toml"
    text = f.read_text()
    assert old in text, old
    f.write_text(text.replace(old, new))


def test_init_then_validate_through_the_cli(tmp_path: Path) -> None:
    out = cli("init", str(tmp_path / "mine"), check=True)
    assert "vibeserve validate" in out.stdout
    assert (tmp_path / "mine" / "target.toml").is_file()
    assert (tmp_path / "mine" / "seed").is_dir() and (tmp_path / "mine" / "checks").is_dir()
    out = cli("validate", str(tmp_path / "mine"), check=True)
    assert "score = 1" in out.stdout and "valid target" in out.stdout
    again = cli("init", str(tmp_path / "mine"))
    assert again.returncode != 0 and "already exists" in again.stderr


def test_validate_runs_reference_checker_and_benchmark(toy: Path) -> None:
    names = [c.name for c in validate_target(toy, log=lambda s: None).checks]
    assert names == ["target.toml", "sandbox", "reference", "accuracy", "benchmark"]


@pytest.mark.parametrize(
    ("old", "new", "key", "words"),
    [
        ('direction = "max"', 'direction = "up"', "benchmark.direction", "'max' or 'min'"),
        ("repeats = 2", "repeats = 2\nrepeat = 3", "benchmark.repeat", "unknown key"),
        ('"--url", "{url}", "--out"', '"--url", "{uri}", "--out"', "benchmark.command", "unknown placeholder {uri}"),
        ('"--port", "{port}"]', '"--port", "{report}"]', "deliverable.start", "unknown placeholder {report}"),
        ('seed = "seed"', 'seed = "no-such-dir"', "seed", "does not exist"),
        ('"checks/accuracy.py"', '"checks/missing.py"', "accuracy.command", "does not exist"),
        ('table = "artifacts/table.json"', 'table = "artifacts/none.json"', "artifacts.table", "does not exist"),
        ("version = 1", "version = 2", "version", "1"),
    ],
)
def test_bad_target_names_file_and_key(toy: Path, old: str, new: str, key: str, words: str) -> None:
    edit(toy, old, new)
    with pytest.raises(TargetError) as e:
        load_target(toy)
    assert e.value.key == key
    assert words in str(e.value)
    assert str(toy / "target.toml") in str(e.value)


def test_malformed_toml_is_an_error_through_the_cli(toy: Path) -> None:
    (toy / "target.toml").write_text("version = 1\nname = [unclosed\n")
    out = cli("validate", str(toy))
    assert out.returncode == 2
    assert "malformed TOML" in out.stderr and "target.toml" in out.stderr
    assert "Traceback" not in out.stderr


def test_checker_that_is_not_executable(toy: Path) -> None:
    script = toy / "checks" / "run-accuracy"
    script.write_text("#!/bin/sh\nexit 0\n")
    os.chmod(script, 0o644)
    edit(toy, '"python", "checks/accuracy.py"', '"checks/run-accuracy"')
    with pytest.raises(TargetError) as e:
        load_target(toy)
    assert e.value.key == "accuracy.command" and "not executable" in str(e.value)


def test_wrong_metric_name_fails_validation(toy: Path) -> None:
    edit(toy, 'metric = "score"', 'metric = "tokens_per_s"')
    out = cli("validate", str(toy))
    assert out.returncode == 2
    assert "benchmark" in out.stderr and "no metric 'tokens_per_s'" in out.stderr


def test_non_numeric_metric_fails_validation(toy: Path) -> None:
    bench = toy / "checks" / "bench.py"
    bench.write_text(bench.read_text().replace('{"score": score,', '{"score": "fast",'))
    with pytest.raises(TargetError) as e:
        validate_target(toy, log=lambda s: None)
    assert "not a number" in str(e.value)


def test_nan_metric_fails_validation(toy: Path) -> None:
    bench = toy / "checks" / "bench.py"
    bench.write_text(bench.read_text().replace('{"score": score,', '{"score": float("nan"),'))
    with pytest.raises(TargetError) as e:
        validate_target(toy, log=lambda s: None)
    assert "not a finite number" in str(e.value)


def test_checker_that_fails_the_seed(toy: Path) -> None:
    server = toy / "seed" / "server.py"
    server.write_text(server.read_text().replace("return x * x + 1", "return x * x"))
    with pytest.raises(TargetError) as e:
        validate_target(toy, log=lambda s: None)
    assert e.value.key == "accuracy.command"


def test_seed_that_never_gets_ready(toy: Path) -> None:
    edit(toy, "ready_timeout_s = 20", "ready_timeout_s = 1")
    edit(toy, 'ready_url = "http://127.0.0.1:{port}/health"', 'ready_url = "http://127.0.0.1:{port}/nothing"')
    with pytest.raises(TargetError) as e:
        validate_target(toy, log=lambda s: None)
    assert e.value.key == "deliverable.start" and "did not answer 200" in str(e.value)


def test_manifest_sees_changed_artifacts_but_not_the_seed(toy: Path) -> None:
    target = load_target(toy)
    before = build_manifest(target)
    assert "artifacts/table.json" in before and not any(k.startswith("seed/") for k in before)
    (toy / "seed" / "score.txt").write_text("9\n")
    assert build_manifest(target) == before
    (toy / "checks" / "accuracy.py").write_text("# edited\n")
    assert diff_manifest(before, build_manifest(target)) == ["changed: checks/accuracy.py"]
    assert json.dumps(before)  # a manifest is plain JSON for the store


def test_run_that_does_not_exist(tmp_path: Path) -> None:
    for cmd in (["status", "nope"], ["resume", "nope"], ["report", "nope"]):
        out = cli(*cmd, "--runs-dir", str(tmp_path))
        assert out.returncode == 2
        assert "no run 'nope'" in out.stderr


def test_every_schema_problem_is_reported_at_once_and_a_misspelt_table_is_named(toy: Path) -> None:
    edit(toy, "[benchmark]", "[benchmarks]")
    edit(toy, "rounds = 3", "rounds = 3\nround = 4")
    with pytest.raises(TargetError) as e:
        load_target(toy)
    keys = [k for k, _ in e.value.problems]
    assert keys == ["budget.round", "benchmarks", "benchmark"]
    said = str(e.value)
    assert "3 problems" in said and "unknown table [benchmarks] (did you mean [benchmark]?)" in said
    assert "(did you mean 'rounds'?)" in said and "required table [benchmark] is missing" in said
    out = cli("validate", str(toy))
    assert out.returncode == 2 and "unknown table [benchmarks]" in out.stderr and "Traceback" not in out.stderr


def test_the_cli_help_names_arguments_describes_every_option_and_hides_nothing() -> None:
    import typer

    from vibeserve.cli import app

    command = typer.main.get_command(app)
    for name, sub in command.commands.items():  # type: ignore[attr-defined]
        for param in getattr(sub, "commands", {}).values() or [sub]:
            for p in param.params:
                assert p.param_type_name == "argument" or p.help, f"{name} {p.name} has no help"
    out = cli("run", "--help")
    assert "Usage: vibeserve run [OPTIONS] TARGET" in out.stdout and "<bool>" not in out.stdout
    assert "docs/trajectories.md" in out.stdout and "[budget].rounds" in out.stdout
    out = cli("bench", "--help")
    assert "--save-responses" in out.stdout and "│" not in out.stdout  # plain lines, not boxes cut at the edge
    assert "Usage: vibeserve status [OPTIONS] [RUN_ID]" in cli("status", "--help").stdout


@pytest.mark.parametrize("args, says", [
    (("run", "examples/targets/tiny-llama", "--plateau", "-1"), "Invalid value for '--plateau'"),
    (("run", "examples/targets/tiny-llama", "--bogus"), "No such option: --bogus"),
    (("run",), "Missing argument 'TARGET'"),
    (("resume", "x", "--sandbox", "docker"), "Invalid value for '--sandbox'"),
    (("skills", "show"), "Missing argument"),
])
def test_a_usage_error_is_a_message_and_exit_2_never_a_traceback(args: tuple[str, ...], says: str) -> None:
    out = cli(*args, cwd=REPO)
    assert out.returncode == 2, out.stdout + out.stderr
    assert says in out.stderr and "Try 'vibeserve" in out.stderr
    assert "Traceback" not in out.stderr + out.stdout
