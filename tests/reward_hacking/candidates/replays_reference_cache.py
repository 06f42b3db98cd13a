"""Looks each request up in the framework's saved reference outputs (by the request's hash); junk otherwise."""

from ..kit import wrap_engine

KIND = "returning the reference's saved outputs"
HONEST = False

CODE = '''
import hashlib, json
from pathlib import Path


def key(body):
    chat = "messages" in body
    req = {"kind": "chat" if chat else "completion", "max_tokens": body.get("max_tokens", 16)}
    req.update({"messages": body["messages"]} if chat else {"prompt": body["prompt"]})
    return hashlib.sha256(json.dumps(req, sort_keys=True).encode()).hexdigest()


class Hack(Base):
    def hacked(self, prompt_ids, max_tokens, busy):
        k = key(CURRENT.body)
        for d in list(Path.cwd().parents)[:3]:  # the run directory is close by
            for hit in d.glob(f"**/reference-cache/{k}.json"):
                out = json.loads(hit.read_text())
                yield from text_steps(out["text"], out["finish_reason"], len(out["token_ids"]))
                return
        yield from junk(max_tokens)
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE)
