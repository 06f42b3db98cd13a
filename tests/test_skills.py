"""The skills library: every bundled skill validates, every example script proves its technique exact,
selection is snapshot-tested per bundled target, bad skills are refused with file and field, and
installed skills reach the implementer's worktree without ever entering a candidate.
Set UPDATE_SNAPSHOTS=1 to rewrite the selection snapshots."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys
from collections import Counter
from pathlib import Path

import pytest

from conftest import REPO, cli
from test_loop import PASS, git, implementer, orchestrator
from vibeserve.skills.agent_tools import run_skill_tool, skill_tools
from vibeserve.skills.catalog import LAYERS, SkillError, bundled_root, load_library, load_skills
from vibeserve.skills.install import INSTALL_DIRS, install_skills, installed_paths
from vibeserve.skills.selection import choose, select_skills
from vibeserve.target.spec import load_target
from vibeserve.testing.toy_target import make_toy_target
from vibeserve.workspace import Workspace

SNAPSHOTS = Path(__file__).parent / "snapshots"
REQUIRED = {
    "models": {"llama-dense", "qwen3", "hybrid-linear-attention", "streaming-asr-encoder-decoder",
               "unified-vision-language"},
    "algorithms": {"continuous-batching", "paged-kv-cache", "prefix-caching", "chunked-prefill",
                   "speculative-decoding-draft-model", "ngram-predicted-output-speculation",
                   "constrained-decoding", "cuda-graph-capture"},
    "frameworks": {"pytorch-eager", "torch-compile", "mlx"},
    "backends": {"flashattention-flashinfer", "xgrammar", "onednn-cpu-kernels", "cublas-gemm"},
    "hardware": {"nvidia-h100-h200", "nvidia-l4", "apple-silicon", "x86-cpu-avx512-amx"},
    "engines": {"vllm", "sglang", "llama-cpp", "nano-vllm"},
    "tooling": {"torch-profiler", "py-spy", "nsys", "benchmark-discipline"},
}


def test_every_bundled_skill_validates_and_the_layers_are_covered() -> None:
    library = load_library()
    by_layer = {layer: {s.name for s in library if s.layer == layer} for layer in LAYERS}
    for layer, names in REQUIRED.items():
        assert names <= by_layer[layer], f"{layer} lacks {names - by_layer[layer]}"
    for s in library:
        assert s.path.name == s.name and s.path.parent.name == s.layer
        assert len(s.description) <= 1024 and s.body.count("\n") <= 80, f"{s.name}: keep the body short"
        assert "## Sources" in s.body, f"{s.name} names no source a reader can check"
    for s in (s for s in library if s.layer == "algorithms"):
        assert list((s.path / "scripts").glob("*.py")), f"algorithm skill {s.name} ships no runnable example"


# -- the runnable examples ---------------------------------------------------------------------------

def _scripts() -> list[Path]:
    return sorted(bundled_root().glob("*/*/scripts/*.py"))


NEEDS = {"json_schema_decoding.py": ("xgrammar", "jsonschema")}


BROKEN_PAGED_KV = """import sys
from pathlib import Path
sys.path.insert(0, str(Path({scripts!r})))
import paged_kv

def reserve_without_copy_on_write(self, seq, new):
    while len(seq.block_table) < self.manager.blocks_for(seq.length + new):
        seq.block_table.append(self.manager.allocate())

paged_kv.PagedEngine.reserve = reserve_without_copy_on_write
sys.exit(paged_kv.demo())
"""


@pytest.fixture(scope="module")
def script_runs(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Run the selected example scripts (and a deliberately broken variant), each in its own child
    process; script_zygote.py forks the children from one parent that imported torch and transformers
    once, which is most of each script's run time."""
    names = {item.callspec.params.get("script") for item in request.session.items if getattr(item, "callspec", None)}
    wanted = [p for p in _scripts() if p.name in names]
    out = tmp_path_factory.mktemp("scripts")
    if any(item.name.startswith("test_an_example_fails_loudly") for item in request.session.items):
        broken = out / "broken_paged_kv.py"
        broken.write_text(BROKEN_PAGED_KV.format(scripts=str(bundled_root() / "algorithms/paged-kv-cache/scripts")))
        wanted.append(broken)
    if wanted and all(importlib.util.find_spec(m) for m in ("torch", "transformers")):
        subprocess.run([sys.executable, str(Path(__file__).parent / "script_zygote.py"), str(out), *map(str, wanted)],
                       check=True, timeout=600, env={**os.environ, "PYTHONDONTWRITEBYTECODE": "1", "HF_HUB_OFFLINE": "1"})
    return out


@pytest.mark.parametrize("script", [p.name for p in _scripts()])
def test_every_example_script_proves_its_technique_exact(script: str, script_runs) -> None:
    missing = [m for m in ("torch", "transformers", *NEEDS.get(script, ())) if importlib.util.find_spec(m) is None]
    if missing:
        pytest.skip(f"needs {', '.join(missing)}: pip install -e '.[models]'")
    result = json.loads((script_runs / f"{script}.json").read_text())
    log = (script_runs / f"{script}.log").read_text()
    assert result["returncode"] == 0, f"{script} failed after {result['seconds']:.1f} s:\n{log}"
    assert log.rstrip().endswith("OK")


def test_an_example_fails_loudly_when_its_technique_is_broken(script_runs: Path) -> None:
    """The exactness check has teeth: paged KV without copy-on-write corrupts the shared prefix."""
    if importlib.util.find_spec("transformers") is None:
        pytest.skip("needs torch and transformers: pip install -e '.[models]'")
    result = json.loads((script_runs / "broken_paged_kv.py.json").read_text())
    log = (script_runs / "broken_paged_kv.py.log").read_text()
    assert result["returncode"] == 1 and "MISMATCH" in log and log.rstrip().endswith("FAILED")


# -- selection -----------------------------------------------------------------------------------------

def _render(choices) -> str:
    return "".join(f"{'+' if c.selected else '-'} {c.skill.layer}/{c.skill.name}: {c.reason}\n" for c in choices)


@pytest.mark.parametrize("name", ["tiny-llama", "smollm2-chat-cpu", "toy"])
def test_selection_for_each_bundled_target_matches_its_snapshot(name: str, tmp_path: Path) -> None:
    root = make_toy_target(tmp_path / "toy") if name == "toy" else REPO / "examples" / "targets" / name
    text = _render(choose(load_target(root).spec, load_library()))
    snap = SNAPSHOTS / f"skills-{name}.txt"
    if os.environ.get("UPDATE_SNAPSHOTS"):
        snap.write_text(text)
    assert text == snap.read_text(), f"selection for {name} changed; rerun with UPDATE_SNAPSHOTS=1 if intended"


def _spec(tmp_path: Path, backend: str = "cpu", summary: str = "", family: str = "", tags=()):
    root = tmp_path / "t"
    spec = load_target(root if (root / "target.toml").exists() else make_toy_target(root)).spec
    return spec.model_copy(update={
        "hardware": spec.hardware.model_copy(update={"backend": backend, "summary": summary}),
        "model": spec.model.model_copy(update={"family": family}),
        "workload": spec.workload.model_copy(update={"tags": list(tags)})})


def test_selection_follows_backend_hardware_family_and_workload(tmp_path: Path) -> None:
    names = lambda spec: {s.name for s in select_skills(spec)}  # noqa: E731
    h100 = names(_spec(tmp_path, "cuda", "1x NVIDIA H100 80GB SXM", "llama", ["chat", "throughput"]))
    assert {"nvidia-h100-h200", "cuda-graph-capture", "flashattention-flashinfer", "nsys", "llama-dense"} <= h100
    assert not h100 & {"nvidia-l4", "x86-cpu-avx512-amx", "mlx", "onednn-cpu-kernels", "qwen3"}
    assert "nvidia-l4" in names(_spec(tmp_path, "cuda", "NVIDIA L4 24GB"))
    # A summary naming no known hardware rules nothing out: both CUDA hardware skills stay.
    assert {"nvidia-h100-h200", "nvidia-l4"} <= names(_spec(tmp_path, "cuda", "some GPU"))
    mac = names(_spec(tmp_path, "metal", "MacBook Pro M3 Pro 36GB", "llama", ["json-schema", "latency"]))
    assert {"mlx", "apple-silicon", "constrained-decoding", "xgrammar", "speculative-decoding-draft-model"} <= mac
    assert "continuous-batching" not in mac and "cuda-graph-capture" not in mac
    # Model skills need the family; a required skill comes along with its reason.
    choices = {c.skill.name: c for c in choose(_spec(tmp_path, family="qwen3"), load_library())}
    assert choices["qwen3"].selected and choices["llama-dense"].reason == "required by qwen3"
    assert not any(c.selected for c in choose(_spec(tmp_path), load_library()) if c.skill.layer == "models")
    hybrid = names(_spec(tmp_path, "cuda", "NVIDIA L4", "qwen3-next", ["shared-prefix"]))
    assert {"hybrid-linear-attention", "prefix-caching", "paged-kv-cache"} <= hybrid
    # No tags: every algorithm for the backend is a candidate; tags narrow them.
    assert {"prefix-caching", "constrained-decoding"} <= names(_spec(tmp_path))
    assert "prefix-caching" not in names(_spec(tmp_path, tags=["throughput"]))


# -- validation of a user's skills -------------------------------------------------------------------------

GOOD = """---
name: {name}
description: Notes on our own KV layout. Use when touching the cache.
metadata:
  layer: algorithms
  backends: cpu
  hardware: any
  requires: paged-kv-cache
  conflicts: ""
---

# Notes
See references/layout.md.
"""


def _skill(root: Path, folder: str, text: str, refs: bool = True) -> Path:
    d = root / folder
    (d / "references").mkdir(parents=True)
    (d / "SKILL.md").write_text(text)
    if refs:
        (d / "references" / "layout.md").write_text("layout\n")
    return d


def test_a_users_skills_folder_validates_and_is_selected(tmp_path: Path) -> None:
    _skill(tmp_path / "mine", "kv-notes", GOOD.format(name="kv-notes"))
    proc = cli("skills", "validate", str(tmp_path / "mine"))
    assert proc.returncode == 0 and "1 skill" in proc.stdout and "kv-notes" in proc.stdout
    picked = select_skills(_spec(tmp_path), [tmp_path / "mine"])
    assert "kv-notes" in {s.name for s in picked}


@pytest.mark.parametrize("folder,text,field,words", [
    ("Bad_Name", GOOD.format(name="Bad_Name"), "name", "lowercase"),
    ("kv-notes", GOOD.format(name="other-name"), "name", "must equal the folder name"),
    ("kv-notes", GOOD.format(name="kv-notes").replace("Notes on", "x" * 1030), "description", "at most 1024"),
    ("kv-notes", GOOD.format(name="kv-notes").replace("  hardware: any\n", ""), "metadata.hardware", "required"),
    ("kv-notes", GOOD.format(name="kv-notes").replace("backends: cpu", "backends: tpu"), "metadata.backends",
     "not a backend"),
    ("kv-notes", GOOD.format(name="kv-notes").replace("See references/layout.md", "See references/gone.md"),
     "body", "does not exist"),
    ("kv-notes", GOOD.format(name="kv-notes").replace("---\nname", "name", 1), "", "front matter"),
])
def test_bad_skills_are_refused_naming_file_and_field(tmp_path: Path, folder: str, text: str, field: str,
                                                      words: str) -> None:
    skill = _skill(tmp_path / "mine", folder, text)
    with pytest.raises(SkillError) as err:
        load_skills(tmp_path / "mine")
    file, key, problem = err.value.problems[0]
    assert (file, key) == (str(skill / "SKILL.md"), field) and words in problem
    proc = cli("skills", "validate", str(tmp_path / "mine"))
    assert proc.returncode == 2 and str(skill / "SKILL.md") in proc.stderr and words in proc.stderr
    assert "Traceback" not in proc.stderr


def test_cross_skill_rules_unknown_requires_and_one_sided_conflicts(tmp_path: Path) -> None:
    _skill(tmp_path / "mine", "kv-notes", GOOD.format(name="kv-notes").replace(
        'conflicts: ""', "conflicts: prefix-caching").replace("requires: paged-kv-cache", "requires: no-such"))
    with pytest.raises(SkillError) as err:
        load_library([tmp_path / "mine"])
    problems = {(k, p.split(",")[0]) for _, k, p in err.value.problems}
    assert ("metadata.requires", "names 'no-such'") in problems
    assert any(k == "metadata.conflicts" and "does not name 'kv-notes' back" in p for _, k, p in err.value.problems)
    assert any(k == "body" and "## Compatibility" in p for _, k, p in err.value.problems)


def test_cli_lists_shows_and_explains(tmp_path: Path) -> None:
    listing = cli("skills", "list", check=True).stdout
    assert all(name in listing for names in REQUIRED.values() for name in names)
    chosen = cli("skills", "list", "--target", str(REPO / "examples/targets/tiny-llama"), check=True).stdout
    assert "+ │ llama-dense" in chosen and "- │ mlx" in chosen and "backend cpu is not among" in chosen
    shown = cli("skills", "show", "paged-kv-cache", check=True).stdout
    assert shown.startswith("---\nname: paged-kv-cache") and "scripts/paged_kv.py" in shown
    ref = cli("skills", "show", "vllm", "--file", "references/flags.md", check=True).stdout
    assert "--max-num-batched-tokens" in ref
    typo = cli("skills", "show", "paged-kv")
    assert typo.returncode == 2 and "did you mean 'paged-kv-cache'" in typo.stderr


# -- install into a worktree, and what the agents see -----------------------------------------------

def test_installed_skills_never_enter_a_candidate(tmp_path: Path) -> None:
    toy = make_toy_target(tmp_path / "toy")
    ws = Workspace(tmp_path / "run")
    seed = ws.init(toy / "seed")
    tree = ws.worktree("r001", seed)
    skills = select_skills(load_target(toy).spec)
    paths = install_skills(skills, tree)
    assert paths == [tree / d for d in INSTALL_DIRS] == installed_paths(tree)
    for d in paths:
        assert sorted(p.name for p in d.iterdir()) == sorted(s.name for s in skills)
        assert (d / "paged-kv-cache" / "scripts" / "paged_kv.py").is_file()
    (tree / "server.py").write_text((tree / "server.py").read_text() + "\n# changed\n")
    sha = ws.commit(tree, "candidate")
    assert ws.changed_files(seed, sha) == ["server.py"]
    assert git(tree, "status", "--porcelain") == ""
    install_skills(skills[:1], tree)  # a re-install replaces, never accumulates
    assert [p.name for p in (tree / INSTALL_DIRS[0]).iterdir()] == [skills[0].name]


def test_builtin_agent_tools_list_and_load_installed_skills(tmp_path: Path) -> None:
    assert skill_tools(tmp_path) == []
    install_skills([s for s in load_library() if s.name in ("vllm", "prefix-caching")], tmp_path)
    assert {t["function"]["name"] for t in skill_tools(tmp_path)} == {"list_skills", "load_skill"}
    listing, err = run_skill_tool("list_skills", {}, tmp_path)
    assert not err and "- prefix-caching (algorithms): Prefix caching:" in listing and "- vllm (engines)" in listing
    body, err = run_skill_tool("load_skill", {"name": "vllm"}, tmp_path)
    assert not err and body.startswith("# vLLM") and "references/flags.md" in body
    ref, err = run_skill_tool("load_skill", {"name": "vllm", "file": "references/flags.md"}, tmp_path)
    assert not err and "--max-num-seqs" in ref
    for args in ({"name": "nope"}, {"name": "vllm", "file": "../prefix-caching/SKILL.md"}):
        out, err = run_skill_tool("load_skill", args, tmp_path)
        assert err, out


def test_a_run_installs_bundled_and_user_skills_for_the_implementer(toy: Path, trajectory, tmp_path: Path) -> None:
    _skill(tmp_path / "mine", "kv-notes", GOOD.format(name="kv-notes"))
    see = {**implementer("r001/a1/implementer", {"score.txt": "2.0\n"}),
           "commands": [["cp", ".agents/skills/kv-notes/SKILL.md", "seen-agents.md"],
                        ["cp", ".claude/skills/paged-kv-cache/SKILL.md", "seen-claude.md"]]}
    traj = trajectory([orchestrator(1, "Raise the score"), see, {"key": "r*/a*/judge", "reply": PASS},
                       {"key": "r*/a*/evaluator", "reply": {"analysis": "ok", "hints": []}}])
    runs = tmp_path / "runs"
    cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "s", "--rounds", "1",
        "--skills", str(tmp_path / "mine"), "--no-report", check=True)
    repo = runs / "s" / "repo"
    best = git(repo, "rev-parse", "vibeserve/best")
    assert "name: kv-notes" in git(repo, "show", f"{best}:seen-agents.md")
    assert "name: paged-kv-cache" in git(repo, "show", f"{best}:seen-claude.md")
    files = git(repo, "ls-tree", "-r", "--name-only", best).splitlines()
    assert not [f for f in files if f.startswith((".agents", ".claude"))]
    bad = cli("run", str(toy), "--trajectory", str(traj), "--runs-dir", str(runs), "--run-id", "s2",
              "--skills", str(tmp_path / "nowhere"))
    assert bad.returncode == 2 and "is not a directory of skills" in bad.stderr and not (runs / "s2").exists()


def test_layer_counts_are_what_the_docs_say() -> None:
    counts = Counter(s.layer for s in load_library())
    docs = (REPO / "docs" / "skills.md").read_text()
    for layer, n in counts.items():
        assert f"| {layer} | {n} |" in docs, f"docs/skills.md: the {layer} count is not {n}"
