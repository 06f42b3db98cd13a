"""The declared output comparator: how the probe gate and the output audit decide that a candidate's answer
matches the reference's, from ``[comparator]`` in ``target.toml`` (docs/targets.md).

Both gates call ``judge`` with the same requests, reference outputs and answers, so a target whose
reference is not bit-exact (an image, a sampled or approximated output) is held to one declared tolerance
everywhere, and a canned or replayed answer, which agrees with a fresh request's reference no better than
chance, still fails. The kinds:

- ``exact`` (the default): the answer's ``field`` (``text``) equals the reference's, character for character;
- ``token-agreement``: the answer's ``field`` (a list) agrees with the reference's position by position on at
  least ``min_agreement`` of the reference's positions;
- ``psnr``: the answer's ``field`` (a base64 PNG, or nested lists of pixel values 0..255) is an image of the
  reference's shape with a PSNR against it of at least ``min_psnr_db``;
- ``command``: the target's own program judges the batch (for tolerances only the model can measure, such as
  agreement under teacher forcing); it runs where the reference runs, after the candidate has stopped.

``KINDS`` maps each built-in kind to its function; a new comparator is one function here and one name in
``vibeserve.target.spec.Comparator.kind``.
"""

from __future__ import annotations

import base64
import io
import json
import math
import tempfile
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

from vibeserve.errors import VibeserveError
from vibeserve.process import CommandNotRunnable, clean_env, run
from vibeserve.target.spec import Comparator, Target

# One answer: the fields the candidate returned (``text`` for a completion), or None with an error.
Answer = tuple[dict[str, Any] | None, str | None]


class ComparatorFailed(VibeserveError):
    """The target's comparator command failed: a target problem, never the candidate's."""


def first_difference(want: str, got: str) -> int:
    return next((i for i, (a, b) in enumerate(zip(want, got, strict=False)) if a != b), min(len(want), len(got)))


def _around(text: str, at: int, before: int = 40, after: int = 60) -> str:
    """The text around position ``at``, with ``…`` where it is cut: where two texts part is what matters."""
    start, end = max(0, at - before), min(len(text), at + after)
    return ("…" if start else "") + text[start:end] + ("…" if end < len(text) else "")


def exact(spec: Comparator, expected: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    field = spec.field or "text"
    want, have = expected.get(field, ""), got.get(field)
    if have == want:
        return {"status": "ok"}
    if not isinstance(want, str) or not isinstance(have, str | None):
        return {"status": "mismatch", "detail": f"{field} differs: expected {str(want)[:120]!r}, got {str(have)[:120]!r}"}
    have = have or ""
    at = first_difference(want, have)
    return {"status": "mismatch", "first_difference_at_char": at, "expected": _around(want, at),
            "got": _around(have, at), "expected_chars": len(want), "got_chars": len(have)}


def token_agreement(spec: Comparator, expected: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    field, need = spec.field or "tokens", float(spec.min_agreement or 0)
    want, have = expected.get(field), got.get(field)
    if not isinstance(want, list) or not want:
        raise ComparatorFailed(f"[comparator]: the reference's output has no non-empty list {field!r}")
    if not isinstance(have, list):
        return {"status": "mismatch", "detail": f"the answer has no list {field!r}"}
    if len(have) != len(want):
        return {"status": "mismatch", "detail": f"{field} has {len(have)} items, the reference {len(want)}"}
    agreement = sum(a == b for a, b in zip(want, have, strict=True)) / len(want)
    result = {"agreement": round(agreement, 4), "required": need}
    if agreement >= need:
        return {"status": "ok", **result}
    return {"status": "mismatch", **result,
            "detail": f"{field} agrees with the reference on {agreement:.1%} of positions, below min_agreement {need:g}"}


def _pixels(value: Any) -> Any:
    """An image as a uint8 array: a base64 PNG (any mode, as RGB) or nested lists of 0..255 values."""
    import numpy as np

    if isinstance(value, str):
        from PIL import Image

        with Image.open(io.BytesIO(base64.b64decode(value, validate=True))) as img:
            return np.asarray(img.convert("RGB"), dtype=np.float64)
    return np.asarray(value, dtype=np.float64)


def psnr(spec: Comparator, expected: dict[str, Any], got: dict[str, Any]) -> dict[str, Any]:
    import numpy as np

    field, need = spec.field or "b64_json", float(spec.min_psnr_db or 0)
    try:
        want = _pixels(expected.get(field))
    except Exception as e:  # the reference's own image must decode
        raise ComparatorFailed(f"[comparator]: the reference's {field!r} is not an image: {e}") from None
    try:
        have = _pixels(got.get(field))
    except Exception as e:
        return {"status": "mismatch", "detail": f"the answer's {field!r} is not an image: {type(e).__name__}: {e}"}
    if have.shape != want.shape:
        return {"status": "mismatch", "detail": f"{field} is an image of shape {have.shape}, the reference {want.shape}"}
    mse = float(np.mean((have - want) ** 2))
    db = math.inf if mse == 0 else 10 * math.log10(255.0**2 / mse)
    result = {"psnr_db": round(db, 2) if math.isfinite(db) else "inf", "required": need}
    if db >= need:
        return {"status": "ok", **result}
    return {"status": "mismatch", **result, "detail": f"{field}: PSNR {db:.2f} dB, below min_psnr_db {need:g}"}


KINDS: dict[str, Callable[[Comparator, dict[str, Any], dict[str, Any]], dict[str, Any]]] = {
    "exact": exact, "token-agreement": token_agreement, "psnr": psnr,
}


def judge(target: Target, requests: Sequence[dict[str, Any]], expected: Sequence[dict[str, Any]],
          answers: Sequence[Answer], log_dir: Path) -> list[dict[str, Any]]:
    """Each answer's outcome, in order: ``{"id", "status": ok | mismatch | error, ...}``. An answer that is an
    error (HTTP, cut short) is an error whatever the comparator; the rest are compared as declared."""
    spec = target.spec.comparator
    results: list[dict[str, Any] | None] = [None] * len(requests)
    todo = []
    for i, (want, (got, error)) in enumerate(zip(expected, answers, strict=True)):
        if error is not None or got is None:
            results[i] = {"status": "error", "error": (error or "no answer")[:300]}
        elif spec.kind == "command":
            todo.append(i)
        else:
            results[i] = KINDS[spec.kind](spec, want, got)
    if todo:
        verdicts = _run_command(target, [requests[i] for i in todo], [expected[i] for i in todo],
                                [answers[i][0] or {} for i in todo], log_dir)
        for i, verdict in zip(todo, verdicts, strict=True):
            results[i] = verdict
    return [{"id": request["id"], **r} for request, r in zip(requests, results, strict=True) if r is not None]


def _run_command(target: Target, requests: list[dict[str, Any]], expected: list[dict[str, Any]],
                 answers: list[dict[str, Any]], log_dir: Path) -> list[dict[str, Any]]:
    """The target's comparator command on one batch: one verdict line ``{"ok": bool, ...}`` per answer."""
    spec = target.spec.comparator
    log_dir.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(dir=log_dir) as tmp:
        files = {name: Path(tmp) / f"{name}.jsonl" for name in ("requests", "expected", "answers", "verdicts")}
        for name, rows in (("requests", requests), ("expected", expected), ("answers", answers)):
            files[name].write_text("".join(json.dumps(r) + "\n" for r in rows))
        argv = target.render(spec.command, **files)
        try:
            done = run(argv, target.root, log_dir, "comparator", spec.timeout_s, env=clean_env())
        except CommandNotRunnable as e:
            raise ComparatorFailed(f"[comparator].command cannot run: {e}") from None
        if done.returncode != 0 or done.timed_out:
            why = "timed out" if done.timed_out else f"exit {done.returncode}"
            raise ComparatorFailed(f"[comparator].command failed ({why}); see {log_dir}/comparator.stderr:\n"
                                   f"{done.tail(1500)}")
        path = files["verdicts"]
        try:
            lines = [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []
        except ValueError:
            raise ComparatorFailed("[comparator].command wrote a line to {verdicts} that is not JSON") from None
    if len(lines) != len(answers) or not all(isinstance(v, dict) and isinstance(v.get("ok"), bool) for v in lines):
        raise ComparatorFailed(f"[comparator].command wrote {len(lines)} verdicts for {len(answers)} answers "
                               "(one JSON object with a boolean \"ok\" per answer, in order)")
    out = []
    for v in lines:
        extra = {k: v[k] for k in ("score", "required", "detail") if k in v}
        out.append({"status": "ok" if v["ok"] else "mismatch", **extra})
    return out
