"""Write ``checks/requests.jsonl`` and ``checks/probe_requests.jsonl``: code-edit requests built from
real functions of the Python standard library on this machine.

    python make_requests.py

Each request shows one function and asks for one edit (rename it, add an argument, add a docstring);
its ``prediction`` is ``{"type": "content", "content": <the original code>}``, as an editor sends it
(most of the edited code is the original). ``max_tokens`` covers the original plus the edit. The probe
file holds the same requests with predictions that are wrong (another function), partial (the first
half) or empty, and without one. Both files are committed; the functions are chosen by name, so the
files only change with the standard library's source.
"""

from __future__ import annotations

import importlib
import inspect
import json
import textwrap
from pathlib import Path

# (module, function): short, self-contained, stable across Python 3.11-3.13.
FUNCTIONS = [
    ("shlex", "quote"), ("textwrap", "indent"), ("colorsys", "rgb_to_yiq"), ("colorsys", "yiq_to_rgb"),
    ("colorsys", "rgb_to_hsv"), ("colorsys", "hsv_to_rgb"), ("colorsys", "rgb_to_hls"), ("shutil", "_samefile"),
    ("fnmatch", "filter"), ("html", "escape"), ("calendar", "isleap"), ("calendar", "leapdays"),
    ("string", "capwords"), ("glob", "has_magic"), ("glob", "_ishidden"), ("base64", "b64encode"),
    ("base64", "urlsafe_b64encode"), ("quopri", "ishex"), ("difflib", "_format_range_unified"),
    ("urllib.parse", "quote_plus"),
]
EDITS = [
    ("rename", "Rename the function `{name}` to `{name}_v2`. Keep everything else exactly the same."),
    ("argument", "Add a keyword argument `verbose=False` at the end of the parameters of `{name}`. Keep the body "
                 "exactly the same."),
    ("docstring", "Add a one-line docstring to `{name}` if it has none, else change nothing. Keep the code exactly "
                  "the same."),
]
SYSTEM = "You are a coding assistant. Answer with the complete edited function in one Python code block."


def source(module: str, name: str) -> str:
    return textwrap.dedent(inspect.getsource(getattr(importlib.import_module(module), name))).strip() + "\n"


def request(i: int, module: str, name: str, code: str) -> dict:
    kind, text = EDITS[i % len(EDITS)]
    user = f"{text.format(name=name)}\n\n```python\n{code}```"
    return {"id": f"{module}.{name}.{kind}", "messages": [{"role": "system", "content": SYSTEM},
                                                          {"role": "user", "content": user}],
            "max_tokens": min(320, len(code) // 3 + 48), "prediction": {"type": "content", "content": code}}


def main() -> None:
    checks = Path(__file__).resolve().parent / "checks"
    codes = [source(m, n) for m, n in FUNCTIONS]
    rows = [request(i, m, n, code) for i, ((m, n), code) in enumerate(zip(FUNCTIONS, codes, strict=True))]
    (checks / "requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in rows))
    probes = []
    for i, row in enumerate(rows):
        code = row["prediction"]["content"]
        variants = {"wrong": codes[(i + 7) % len(codes)], "partial": code[: len(code) // 2], "empty": ""}
        for label, content in variants.items():
            probes.append({**row, "id": f"{row['id']}.{label}", "prediction": {"type": "content", "content": content}})
        probes.append({k: v for k, v in row.items() if k != "prediction"} | {"id": f"{row['id']}.none"})
    (checks / "probe_requests.jsonl").write_text("".join(json.dumps(r) + "\n" for r in probes))
    print(f"wrote {len(rows)} requests and {len(probes)} probe requests to {checks}")


if __name__ == "__main__":
    main()
