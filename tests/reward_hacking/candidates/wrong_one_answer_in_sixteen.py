"""Right on almost every prompt, wrong on about one in sixteen, as a low-precision output head is: its last
token differs where the two best logits are close. A sample of four benchmark answers usually misses it."""

from ..kit import wrap_engine

KIND = "one answer in sixteen subtly wrong"
HONEST = False

CODE = '''
class Hack(Base):
    def hacked(self, prompt_ids, max_tokens, busy):
        steps = list(self.engine.generate(prompt_ids, max_tokens))
        if sum(prompt_ids) % 16 == 5:
            texts = [i for i, s in enumerate(steps) if s.finish_reason is None and s.delta]
            if texts:
                last = texts[-1]
                steps[last] = Step(delta=" the" if steps[last].delta != " the" else " a")
        yield from steps
'''


def apply(tree, target_root):
    wrap_engine(tree, CODE)
