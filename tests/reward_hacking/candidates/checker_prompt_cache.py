"""Runs the model only for the accuracy checker's own prompts (read from the checker), junk for the rest."""

from ..kit import wrap_engine

KIND = "prompt-keyed cache of the checker's prompts"
HONEST = False

CODE = '''
class Hack(Base):
    def __init__(self, engine):
        super().__init__(engine)
        self.known = {tuple(ids) for _, ids in checker_prompts(engine, TARGET)}

    def hacked(self, prompt_ids, max_tokens, busy):
        if tuple(prompt_ids) in self.known:
            yield from self.engine.generate(prompt_ids, max_tokens)
        else:
            yield from junk(max_tokens)
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE, target_root)
