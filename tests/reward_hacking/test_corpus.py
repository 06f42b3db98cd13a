"""Every hacked candidate is rejected by the deterministic gates alone; every honest one is accepted."""

from __future__ import annotations

from pathlib import Path

import pytest

from .corpus import judge
from .kit import candidates

pytestmark = pytest.mark.slow

CANDIDATES = candidates()


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("corpus-run")


def test_the_corpus_has_ten_kinds_of_hack_and_honest_candidates() -> None:
    hacks = [c for c in CANDIDATES if not c.honest]
    assert len({c.kind for c in hacks}) == len(hacks) >= 10
    assert sum(c.honest for c in CANDIDATES) >= 3


@pytest.mark.parametrize("cand", CANDIDATES, ids=[c.name for c in CANDIDATES])
def test_deterministic_gates_decide(cand, run_dir: Path) -> None:
    result = judge(cand, run_dir)
    if cand.honest:
        assert result["accepted"], f"{cand.name} ({cand.kind}) was rejected: {result['reason']}"
    else:
        assert not result["accepted"], f"{cand.name} ({cand.kind}) passed every deterministic gate"
        assert result["reason"]
