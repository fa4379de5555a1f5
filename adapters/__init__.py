"""metarec.adapters — the learning side: models, meta-learners, the batched inner loop, datasets, evaluation.

Pure PyTorch. Never imports :mod:`stream`.
"""
from __future__ import annotations

from adapters.errors import MetarecError

__all__ = ["MetarecError"]
