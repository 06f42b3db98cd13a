"""Write ``checks/requests.jsonl`` from ``checks/schemas.py``: one chat request per schema.

    python make_requests.py

Each line is what the benchmark sends (``python -m vibeserve.bench --requests``): the messages, a
``max_tokens`` that covers the longest object the schema allows on this model, and
``response_format = {"type": "json_schema", "json_schema": {"name", "schema", "strict": true}}``.
The file is committed; run this again only after changing the schemas.
"""

from __future__ import annotations

import json
from pathlib import Path

from checks.schemas import SCHEMAS

SYSTEM = "You are a helpful assistant that answers with one JSON object and nothing else."
MAX_TOKENS = 160


def requests() -> list[dict]:
    return [{"id": name,
             "messages": [{"role": "system", "content": SYSTEM}, {"role": "user", "content": prompt}],
             "max_tokens": MAX_TOKENS,
             "response_format": {"type": "json_schema",
                                 "json_schema": {"name": name.replace("-", "_"), "schema": schema, "strict": True}}}
            for name, prompt, schema in SCHEMAS]


def main() -> None:
    out = Path(__file__).resolve().parent / "checks" / "requests.jsonl"
    out.write_text("".join(json.dumps(r) + "\n" for r in requests()))
    print(f"wrote {len(SCHEMAS)} requests to {out}")


if __name__ == "__main__":
    main()
