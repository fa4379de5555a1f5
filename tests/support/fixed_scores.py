"""A prequential model whose ranking is a fixed item score table (or none): exact figures by hand in tests."""
from __future__ import annotations

import numpy as np

from adapters.evaluation.prequential import Scores


class Table:
    """A model with a fixed item score table (or no ranking at all)."""

    def __init__(self, table: np.ndarray | None, name: str = "table") -> None:
        self.table, self.name = table, name

    def learn(self, lo: int, hi: int) -> None:
        return None

    def step(self, lo: int, hi: int, rank_rows: np.ndarray) -> Scores:
        ranking = None if self.table is None else np.tile(self.table, (len(rank_rows), 1))
        return Scores(ratings=None, ranking=ranking)
