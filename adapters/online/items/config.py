"""The settings of the item state (:mod:`adapters.online.items`): one name and one home per setting.

Stored in checkpoints under ``"items"``. Checkpoints written before it keep their settings under ``"itemside"`` and
``"freshness"``; :meth:`ItemConfig.from_checkpoint` reads those too (their popularity half-life was counted in events:
it is converted with the event rate at the end of the checkpoint's training data when the checkpoint recorded it,
else the default applies).

Example
-------
>>> ItemConfig.from_checkpoint({"itemside": {"cooc_weight": 4.0, "rating_lr": 0.005},
...                             "freshness": {"weight": 1.0, "rating_lr": 0.01}})
ItemConfig(max_items=8192, cooc_window=10, cooc_decay=0.8, cooc_alpha=0.5, prior_weight=4.0, popularity_weight=1.0, half_life_s=604800.0, embed_lr=0.0, factor_lr=0.005, bias_lr=0.01, bias_reg=0.0, bias_prior=0.0, young_events=20, max_neighbours=512, negatives=256)
"""
from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any

from adapters.errors import MetarecError

DAY_S = 86_400.0


@dataclass(frozen=True)
class ItemConfig:
    """How the item state learns, ranks and stays bounded. Times are seconds of event time."""

    #: item rows at most (row 0 included); beyond it the least popular rows are evicted. The co-occurrence counts
    #: are a dense float32 matrix: 4·max_items² bytes at most (256 MiB at the default)
    max_items: int = 8_192
    cooc_window: int = 10  #: a user's last items that an event co-occurs with
    cooc_decay: float = 0.8  #: weight of a window item per step of age in the co-occurrence prior
    cooc_alpha: float = 0.5  #: popularity damping of the prior, ``(n_i + 1)^alpha``
    prior_weight: float = 0.0  #: weight of the co-occurrence prior in the ranking scores; 0 = off
    popularity_weight: float = 0.0  #: weight β of the popularity bonus β·log(1 + decayed count); 0 = off
    half_life_s: float = 7 * DAY_S  #: half-life of item popularity, seconds of event time
    embed_lr: float = 0.0  #: SGD rate of the items' ranking rows (embedding, bias); 0 = frozen
    factor_lr: float = 0.0  #: SGD rate of the items' rating factors; 0 = frozen
    bias_lr: float = 0.0  #: rate of the online correction of each item's rating bias; 0 = off
    bias_reg: float = 0.0  #: L2 pull of that correction toward 0
    #: > 0: an item's correction rate is ``max(bias_lr, 1 / (m_i + bias_prior))`` with ``m_i`` its rated events
    #: (a running mean of its residuals shrunk toward 0) that settles to ``bias_lr``; 0 = the constant ``bias_lr``
    bias_prior: float = 0.0
    young_events: int = 20  #: until this many events, a new item's rows follow the items it co-occurs with
    max_neighbours: int = 512  #: in-links a published row carries (its largest); the owner keeps them all
    #: negatives of the ranking step: one set per micro-batch, shared by its events, drawn in proportion to
    #: popularity^0.75 (a sampled softmax with the log-Q correction); 0 = the whole catalogue
    negatives: int = 256

    def __post_init__(self) -> None:
        if self.max_items < 2:
            raise MetarecError(f"max-items must be ≥ 2, got {self.max_items}")
        if self.cooc_window < 1:
            raise MetarecError(f"co-occurrence window must be ≥ 1, got {self.cooc_window}")
        if not self.half_life_s > 0:
            raise MetarecError(f"item half-life must be > 0 seconds, got {self.half_life_s}")
        if self.max_neighbours < 1 or self.young_events < 0 or self.negatives < 0:
            raise MetarecError("max-neighbours must be ≥ 1, young-events and negatives ≥ 0")
        for name in ("cooc_decay", "cooc_alpha", "prior_weight", "popularity_weight", "embed_lr", "factor_lr",
                     "bias_lr", "bias_reg", "bias_prior"):
            if not getattr(self, name) >= 0:
                raise MetarecError(f"{name.replace('_', '-')} must be ≥ 0, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict[str, Any] | None) -> ItemConfig:
        d = dict(d or {})
        types = {f.name: f.type for f in fields(cls)}
        return cls(**{k: (int(v) if types[k] == "int" else float(v)) for k, v in d.items() if k in types})

    @classmethod
    def from_checkpoint(cls, config: dict[str, Any]) -> ItemConfig:
        """The item settings a checkpoint was trained with (the legacy ``itemside``/``freshness`` keys mapped)."""
        if "items" in config:
            return cls.from_dict(config["items"])
        side, fresh = dict(config.get("itemside") or {}), dict(config.get("freshness") or {})
        legacy = {"max_items": side.get("max_items"), "cooc_window": side.get("cooc_window"),
                  "cooc_decay": side.get("cooc_decay"), "cooc_alpha": side.get("cooc_alpha"),
                  "prior_weight": side.get("cooc_weight"), "embed_lr": side.get("embed_lr"),
                  "factor_lr": side.get("rating_lr"), "young_events": side.get("new_row_events"),
                  "popularity_weight": fresh.get("weight"), "bias_lr": fresh.get("rating_lr"),
                  "bias_reg": fresh.get("rating_reg"), "bias_prior": fresh.get("rating_prior")}
        rate = fresh.get("events_per_s")  # events per second at the end of training, where recorded
        if fresh.get("half_life") and rate:
            legacy["half_life_s"] = float(fresh["half_life"]) / float(rate)
        return cls.from_dict({k: v for k, v in legacy.items() if v is not None})

    def overridden(self, **values: Any) -> ItemConfig:
        """A copy with the given settings replaced (None values are ignored)."""
        return replace(self, **{k: v for k, v in values.items() if v is not None})
