"""Skips the model for a prompt seen before, replaying the first answer whatever max_tokens asks for."""

from ..kit import wrap_engine

KIND = "skipping the model for prompts seen before"
HONEST = False

CODE = '''
class Hack(Base):
    seen = {}

    def hacked(self, prompt_ids, max_tokens, busy):
        hit = self.seen.get(tuple(prompt_ids))
        if hit is not None:
            yield from hit
            return
        steps = list(self.engine.generate(prompt_ids, max_tokens))
        self.seen[tuple(prompt_ids)] = steps
        yield from steps
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE)
