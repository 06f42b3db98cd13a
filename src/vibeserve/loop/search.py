"""The control arm's samplers over a ``[baseline]`` search space: seeded random search, or Optuna's TPE.

``ask()`` gives the next setting (a dict of parameter values), ``tell(value)`` the metric it reached (None:
it failed a gate). A setting already tried is not tried again; ``ask`` returns None once none is left.
"""

from __future__ import annotations

import itertools
import json
import math
import random
from typing import Any, Protocol

from vibeserve.errors import VibeserveError
from vibeserve.target.search_space import Param, Value

TRIES = 50  # draws for a setting not tried before, before the space counts as used up


class Sampler(Protocol):
    def ask(self) -> dict[str, Value] | None: ...

    def tell(self, value: float | None) -> None: ...


def grid_size(params: dict[str, Param]) -> float:
    """How many settings there are (inf where a range is continuous)."""
    size = 1.0
    for p in params.values():
        if p.choices is not None:
            size *= len(p.choices)
        elif p.step or p.integer:
            size *= math.floor((p.high - p.low) / (p.step or 1)) + 1  # type: ignore[operator]
        else:
            return math.inf
    return size


def _key(values: dict[str, Value]) -> str:
    return json.dumps(values, sort_keys=True)


class RandomSearch:
    """Every parameter drawn independently from a seeded generator."""

    def __init__(self, params: dict[str, Param], seed: int):
        self.params, self.rng, self.seen = params, random.Random(seed), set[str]()

    def _draw(self, p: Param) -> Value:
        if p.choices is not None:
            return self.rng.choice(p.choices)
        lo, hi = float(p.low), float(p.high)  # type: ignore[arg-type]
        if p.step or p.integer:
            step = p.step or 1
            n = math.floor((hi - lo) / step)
            v = lo + step * self.rng.randint(0, n)
            return int(v) if p.integer else v
        if p.log:
            return math.exp(self.rng.uniform(math.log(lo), math.log(hi)))
        return self.rng.uniform(lo, hi)

    def ask(self) -> dict[str, Value] | None:
        for _ in range(TRIES):
            values = {name: self._draw(p) for name, p in self.params.items()}
            if _key(values) not in self.seen:
                self.seen.add(_key(values))
                return values
        return None

    def tell(self, value: float | None) -> None:
        pass


class TpeSearch:
    """Optuna's TPE sampler (seeded); a failed setting is told as failed, a repeated one gets its old value."""

    def __init__(self, params: dict[str, Param], seed: int, direction: str):
        try:
            import optuna
        except ImportError:
            raise VibeserveError("[baseline].sampler = \"tpe\" needs Optuna: pip install 'vibeserve[baseline]' "
                                 "(or optuna), or set sampler = \"random\"") from None
        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.optuna, self.params = optuna, params
        self.study = optuna.create_study(direction="maximize" if direction == "max" else "minimize",
                                         sampler=optuna.samplers.TPESampler(seed=seed))
        self.seen: dict[str, float | None] = {}
        self.trial: Any = None

    def _suggest(self, trial: Any) -> dict[str, Value]:
        out: dict[str, Value] = {}
        for name, p in self.params.items():
            if p.choices is not None:
                out[name] = trial.suggest_categorical(name, p.choices)
            elif p.integer:
                out[name] = trial.suggest_int(name, int(p.low), int(p.high), step=int(p.step or 1), log=p.log)  # type: ignore[arg-type]
            else:
                out[name] = trial.suggest_float(name, float(p.low), float(p.high), step=p.step, log=p.log)  # type: ignore[arg-type]
        return out

    def ask(self) -> dict[str, Value] | None:
        for _ in range(TRIES):
            trial = self.study.ask()
            values = self._suggest(trial)
            if _key(values) not in self.seen:
                self.trial, self.seen[_key(values)] = trial, None
                return values
            self._finish(trial, self.seen[_key(values)])  # known already: tell it what that setting reached
        return None

    def _finish(self, trial: Any, value: float | None) -> None:
        if value is None:
            self.study.tell(trial, state=self.optuna.trial.TrialState.FAIL)
        else:
            self.study.tell(trial, value)

    def tell(self, value: float | None) -> None:
        self.seen[_key(self.trial.params)] = value
        self._finish(self.trial, value)


def make_sampler(kind: str, params: dict[str, Param], seed: int, direction: str) -> Sampler:
    if not params:
        return RandomSearch(params, seed)  # one setting: the command as written
    return TpeSearch(params, seed, direction) if kind == "tpe" else RandomSearch(params, seed)


def all_settings(params: dict[str, Param]) -> list[dict[str, Value]]:
    """Every setting of a space made of choices only (for tests and small grids)."""
    names = list(params)
    return [dict(zip(names, combo, strict=True))
            for combo in itertools.product(*(params[n].choices or [] for n in names))]
