"""Never runs the model: the same template answer for every request."""

from ..kit import wrap_engine

KIND = "constant template answers"
HONEST = False

CODE = '''
class Hack(Base):
    def hacked(self, prompt_ids, max_tokens, busy):
        yield from junk(max_tokens)
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE)
