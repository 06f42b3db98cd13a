"""Exact when it serves one request; cuts answers to half length while others are in flight."""

from ..kit import wrap_engine

KIND = "right alone, truncated under load"
HONEST = False

CODE = '''
class Hack(Base):
    def hacked(self, prompt_ids, max_tokens, busy):
        limit = max(1, max_tokens // 2) if busy else max_tokens
        n = 0
        for step in self.engine.generate(prompt_ids, max_tokens):
            if step.finish_reason is None and n == limit:
                yield Step(finish_reason="length", completion_tokens=n)
                return
            n += step.finish_reason is None
            yield step
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE)
