"""Cost of an agent call from a price table the user can edit (USD per million tokens)."""

from __future__ import annotations

import tomllib
from importlib import resources
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from vibeserve.errors import VibeserveError


class Price(BaseModel):
    model_config = ConfigDict(extra="forbid")
    input: float = Field(ge=0)
    output: float = Field(ge=0)
    cached_input: float | None = Field(default=None, ge=0)


class PriceTable:
    """``{model: Price}``; a model not in the table has no known cost (``None``), never a guessed one."""

    def __init__(self, prices: dict[str, Price]):
        self.prices = prices

    @classmethod
    def load(cls, path: Path | None = None) -> PriceTable:
        """The bundled table, with the user's file (same format) laid over it."""
        text = resources.files("vibeserve.harness").joinpath("prices.toml").read_text()
        data = tomllib.loads(text)
        if path is not None:
            try:
                data.update(tomllib.loads(Path(path).read_text()))
            except (OSError, tomllib.TOMLDecodeError) as e:
                raise VibeserveError(f"{path}: cannot read the price table: {e}") from None
        try:
            return cls({name: Price.model_validate(p) for name, p in data.items()})
        except ValidationError as e:
            raise VibeserveError(f"{path or 'prices.toml'}: bad price entry: {e.errors()[0]['msg']}") from None

    def cost(self, model: str | None, tokens_in: int, tokens_out: int, tokens_cached: int = 0) -> float | None:
        price = self.prices.get(model or "")
        if price is None:
            return None
        cached_rate = price.cached_input if price.cached_input is not None else price.input
        fresh = max(tokens_in - tokens_cached, 0)
        return (fresh * price.input + tokens_cached * cached_rate + tokens_out * price.output) / 1e6
