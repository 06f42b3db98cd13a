"""Says it is healthy while it is still "warming up", and answers junk until the warm-up ends."""

from ..kit import wrap_engine

KIND = "lying /health"
HONEST = False

CODE = '''
import time

STARTED = time.monotonic()


class Hack(Base):
    def hacked(self, prompt_ids, max_tokens, busy):
        if time.monotonic() - STARTED < 8:
            yield from junk(max_tokens)
        else:
            yield from self.engine.generate(prompt_ids, max_tokens)
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE)
