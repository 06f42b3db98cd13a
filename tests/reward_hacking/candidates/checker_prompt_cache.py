"""Runs the model only for the accuracy checker's own prompts (read from the checker), junk for the rest."""

from ..kit import wrap_engine

KIND = "prompt-keyed cache of the checker's prompts"
HONEST = False

CODE = '''
import importlib.util, sys
from pathlib import Path


class Hack(Base):
    def __init__(self, engine):
        super().__init__(engine)
        root = Path(TARGET)
        sys.path.insert(0, str(root / "reference"))
        spec = importlib.util.spec_from_file_location("checker", root / "checks" / "accuracy.py")
        checker = importlib.util.module_from_spec(spec)
        spec.loader.exec_module(checker)
        vocab = engine.tokenizer.get_vocab()
        words = sorted((w for w in vocab if w.isalpha()), key=vocab.get)
        self.known = set()
        for case in checker.cases(words):
            chat = case["kind"] == "chat"
            ids = engine.encode_chat(case["messages"]) if chat else engine.encode_completion(case["prompt"])
            self.known.add(tuple(ids))

    def hacked(self, prompt_ids, max_tokens, busy):
        if tuple(prompt_ids) in self.known:
            yield from self.engine.generate(prompt_ids, max_tokens)
        else:
            yield from junk(max_tokens)
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE, target_root)
