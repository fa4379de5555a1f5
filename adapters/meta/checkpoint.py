"""A trained model on disk: weights (safetensors), configuration and vocabularies (JSON). Never pickle.

Directory layout::

    config.json          model, meta-learner, hyper-parameters, rating range, history fraction, dataset spec,
                         dataset fingerprint, training fingerprint, version id, format number
    weights.safetensors  every tensor of the model (parameters and feature buffers), and those the model adapts
                         with that meta-learning owns (:mod:`adapters.meta.rates`): ``rates.log_lr``,
                         ``rates.log_lr_steps`` (MAML++), ``prior.log_prior_prec`` (bayes). A checkpoint written
                         while the model carried them has them at the top level (``log_lr``, ...): still read.
    vocab.json           item ids (row order, row 0 = "<unk>"), titles, genre names; user ids (row order)
    metrics.json         training metrics (loss curve, timings)

Example
-------
>>> import tempfile, torch
>>> from adapters.models import build_model, FeatureTables
>>> m = build_model("mf", n_items=3, tables=FeatureTables.empty(3), config={"dim": 4, "rating_dim": 2})
>>> ck = Checkpoint.from_adapter(m, item_ids=["<unk>", "a", "b"], meta="fomaml")
>>> d = tempfile.mkdtemp()
>>> _ = ck.save(d)
>>> Checkpoint.load(d).item_index["b"]
2
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import time
from dataclasses import asdict, dataclass, field
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from adapters.errors import MetarecError
from adapters.meta.rates import split_weights

if TYPE_CHECKING:
    from adapters.models import AdapterModule, FeatureTables

log = logging.getLogger(__name__)

FORMAT = 1
UNK = "<unk>"
FILES = ("config.json", "weights.safetensors", "vocab.json")


def training_fingerprint(dataset_fingerprint: str, history: float = 1.0, part: str = "all") -> str:
    """What a checkpoint was trained on: dataset fingerprint + history fraction + which part of the users."""
    text = f"{dataset_fingerprint}|history={float(history):.6f}|part={part}"
    return hashlib.sha256(text.encode()).hexdigest()


@dataclass
class Checkpoint:
    adapter: AdapterModule  #: the model, adapting with the rates and prior it was trained with (its ``adaptation``)
    model: str
    meta: str
    item_ids: list[str]
    user_ids: list[str] = field(default_factory=lambda: [UNK])
    item_titles: dict[str, str] = field(default_factory=dict)
    genre_names: list[str] = field(default_factory=list)
    #: item id → feature codes (genre indices, then ``len(genre_names)`` + decade) for every item the dataset
    #: describes, also those absent from training: a new item's row starts from them (adapters.online.items.table)
    item_features: dict[str, list[int]] = field(default_factory=dict)
    config: dict[str, Any] = field(default_factory=dict)
    fingerprint: str = ""
    metrics: dict[str, Any] = field(default_factory=dict)
    version: str = ""

    def __post_init__(self) -> None:
        if not self.item_ids or self.item_ids[0] != UNK:
            raise MetarecError("checkpoint item vocabulary must start with the unknown item '<unk>'")
        self.item_index: dict[str, int] = {i: r for r, i in enumerate(self.item_ids) if r > 0}
        self.user_index: dict[str, int] = {u: r for r, u in enumerate(self.user_ids) if r > 0}
        if not self.version:
            self.version = self._make_version()

    # ---- construction -------------------------------------------------------------------------------
    @staticmethod
    def from_adapter(adapter: AdapterModule, item_ids: list[str], meta: str, user_ids: list[str] | None = None,
                     item_titles: dict[str, str] | None = None, genre_names: list[str] | None = None,
                     item_features: dict[str, list[int]] | None = None,
                     config: dict[str, Any] | None = None, fingerprint: str = "",
                     metrics: dict[str, Any] | None = None) -> Checkpoint:
        """Wrap an in-memory adapter (tests, training) into a checkpoint."""
        cfg = dict(config or {})
        cfg.setdefault("model_config", adapter.config_dict())
        cfg.setdefault("inner", asdict(adapter.inner))
        cfg.setdefault("rating_range", [adapter.rating_min, adapter.rating_max])
        return Checkpoint(adapter=adapter, model=adapter.name, meta=meta, item_ids=list(item_ids),
                          user_ids=list(user_ids) if user_ids else [UNK], item_titles=dict(item_titles or {}),
                          genre_names=list(genre_names or []), item_features=dict(item_features or {}),
                          config=cfg, fingerprint=fingerprint,
                          metrics=dict(metrics or {}))

    def weights(self) -> dict[str, torch.Tensor]:
        """Every tensor the checkpoint saves: the model's state dict and its adaptation's (``rates.``, ``prior.``)."""
        tensors = {**self.adapter.state_dict(), **self.adapter.adaptation.named_tensors()}
        return {k: v.detach().contiguous().clone() for k, v in tensors.items()}

    def _make_version(self) -> str:
        from safetensors.torch import save
        digest = hashlib.sha256(save(self.weights())).hexdigest()[:8]
        stamp = time.strftime("%Y%m%dT%H%M%SZ", time.gmtime())
        return f"{self.model}-{self.meta}-{stamp}-{digest}"

    # ---- disk -------------------------------------------------------------------------------------------
    def save(self, directory: str | Path) -> Path:
        """Write the checkpoint into ``directory`` (created if needed; files replaced atomically)."""
        from safetensors.torch import save_file
        d = Path(directory)
        d.mkdir(parents=True, exist_ok=True)
        cardinalities = {"n_items": self.adapter.n_items, "n_users": len(self.user_ids)}
        config = {"format": FORMAT, "model": self.model, "meta": self.meta, "version": self.version,
                  "fingerprint": self.fingerprint, "state_dim": self.adapter.state_dim, **self.config,
                  "shapes": {**self.adapter.tables_cardinalities(), **cardinalities}}
        vocab = {"items": self.item_ids, "titles": self.item_titles, "genres": self.genre_names,
                 "features": self.item_features,
                 "users": self.user_ids}
        self._write(d / "weights.safetensors", lambda p: save_file(self.weights(), str(p),
                                                                   metadata={"version": self.version}))
        self._write(d / "vocab.json", lambda p: p.write_text(json.dumps(vocab)))
        self._write(d / "metrics.json", lambda p: p.write_text(json.dumps(self.metrics, indent=2)))
        self._write(d / "config.json", lambda p: p.write_text(json.dumps(config, indent=2, sort_keys=True)))
        log.info("saved checkpoint %s to %s", self.version, d)
        return d

    @staticmethod
    def _write(path: Path, writer: Callable[[Path], object]) -> None:
        tmp = path.with_name(path.name + ".tmp")
        writer(tmp)
        tmp.replace(path)

    @staticmethod
    def load(directory: str | Path) -> Checkpoint:
        """Read and validate a checkpoint directory; :class:`MetarecError` if missing or corrupt."""
        from adapters.models import FeatureTables, build_model
        d = Path(directory)
        if not d.is_dir():
            raise MetarecError(f"checkpoint directory {d} does not exist")
        missing = [f for f in FILES if not (d / f).is_file()]
        if missing:
            raise MetarecError(f"{d} is not a metarec checkpoint (missing {', '.join(missing)})")
        try:
            config = json.loads((d / "config.json").read_text())
            vocab = json.loads((d / "vocab.json").read_text())
            metrics = json.loads((d / "metrics.json").read_text()) if (d / "metrics.json").is_file() else {}
        except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise MetarecError(f"checkpoint {d}: unreadable JSON ({exc})") from None
        if not isinstance(config, dict) or config.get("format") != FORMAT:
            raise MetarecError(f"checkpoint {d}: unsupported format {config.get('format') if isinstance(config, dict) else '?'}")
        weights = load_weights(d / "weights.safetensors")
        try:
            shapes = config["shapes"]
            tables = FeatureTables.empty(int(shapes["n_items"]), int(shapes["n_users"]), int(shapes.get("n_genres", 0)))
            tables = _placeholder_tables(tables, shapes)
            adapter = build_model(config["model"], int(shapes["n_items"]), tables, config["model_config"],
                                  config["inner"])
            own, adaptation = split_weights(weights)  # legacy top-level rates and prior go to their owners
            adapter.load_state_dict(own, strict=True)
            adapter.adaptation.load(adaptation)
        except (KeyError, TypeError, ValueError, RuntimeError, MetarecError) as exc:
            raise MetarecError(f"checkpoint {d}: weights do not match its configuration ({str(exc).splitlines()[0]})") from None
        adapter.eval()
        adapter.requires_grad_(False)
        adapter.adaptation.freeze()
        extra = {k: v for k, v in config.items()
                 if k not in ("format", "model", "meta", "version", "fingerprint", "state_dim", "shapes")}
        try:
            ck = Checkpoint(adapter=adapter, model=config["model"], meta=config["meta"], item_ids=list(vocab["items"]),
                            user_ids=list(vocab["users"]), item_titles=dict(vocab.get("titles", {})),
                            genre_names=list(vocab.get("genres", [])),
                            item_features={str(k): [int(c) for c in v] for k, v in vocab.get("features", {}).items()},
                            config=extra,
                            fingerprint=config.get("fingerprint", ""), metrics=metrics, version=config["version"])
        except (KeyError, TypeError) as exc:
            raise MetarecError(f"checkpoint {d}: malformed vocabulary ({exc})") from None
        if len(ck.item_ids) != adapter.n_items:
            raise MetarecError(f"checkpoint {d}: {len(ck.item_ids)} item ids for {adapter.n_items} item rows")
        return ck


#: leading bytes of formats that execute code when loaded: pickle (protocols 2-5 start with ``0x80`` and the
#: protocol number), ``torch.save`` zip archives, and gzip (the legacy compressed torch/pickle layout). Consulted
#: only when the file does not have the safetensors structure (:func:`has_safetensors_structure`): a safetensors
#: file starts with its header length, whose low byte may be any multiple of 8, ``0x80`` included.
_PICKLE_MAGICS = (b"\x80", b"PK\x03\x04", b"\x1f\x8b")


def has_safetensors_structure(head: bytes, file_size: int) -> bool:
    """True when ``head`` (a file's first 9 bytes or more) starts as a safetensors file of ``file_size`` bytes.

    safetensors layout: an unsigned 64-bit little-endian header length ``N``, then ``N`` bytes of JSON that begin
    with ``{``, then the tensor bytes. The structure decides, never the first byte alone.

    >>> has_safetensors_structure((1152).to_bytes(8, "little") + b"{", 8 + 1152)
    True
    >>> has_safetensors_structure(b"\x80\x04\x95\x00\x00\x00\x00\x00{", 10_000)   # a pickle's frame
    False
    """
    if len(head) < 9:
        return False
    n = int.from_bytes(head[:8], "little")
    return 2 <= n <= file_size - 8 and head[8:9] == b"{"


def load_weights(path: Path) -> dict[str, torch.Tensor]:
    """The tensors of a safetensors file; :class:`MetarecError` naming a pickle/zip/gzip file or a corrupt one."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file
    _refuse_pickle(path)
    try:
        return load_file(str(path))
    except (SafetensorError, OSError, ValueError, RuntimeError) as exc:
        raise MetarecError(f"checkpoint {path.parent}: weights are not a valid safetensors file ({exc})") from None


def _refuse_pickle(path: Path) -> None:
    """Refuse, with a clear message, a weights file that is a pickle / ``torch.save`` archive (never loaded).

    A file with the safetensors structure passes (the parser then checks the rest). Otherwise a file that starts
    like a pickle, a zip or a gzip file is named as such; anything else is left to the parser's own error.
    safetensors would reject a pickle anyway (it parses a JSON header and raw tensor bytes, nothing executable);
    this only names the problem instead of a parser error.
    """
    try:
        with open(path, "rb") as fh:
            head = fh.read(9)
            size = os.fstat(fh.fileno()).st_size
    except OSError as exc:
        raise MetarecError(f"checkpoint {path.parent}: cannot read {path.name} ({exc.strerror or exc})") from None
    if has_safetensors_structure(head, size):
        return
    if head.startswith(_PICKLE_MAGICS):
        raise MetarecError(f"checkpoint {path.parent}: {path.name} is a pickle/torch.save file, not safetensors; "
                           f"metarec never unpickles (convert the weights with safetensors.torch.save_file)")


def _placeholder_tables(tables: FeatureTables, shapes: dict[str, Any]) -> FeatureTables:
    """Feature tables of the right cardinalities; their values are overwritten by the saved buffers."""
    def with_card(t: torch.Tensor, n: int) -> torch.Tensor:
        t = t.clone()
        if n > 1 and t.numel():
            t[-1] = n - 1
        return t
    tables.item_year = with_card(tables.item_year, int(shapes.get("n_years", 1)))
    tables.user_age = with_card(tables.user_age, int(shapes.get("n_ages", 1)))
    tables.user_gender = with_card(tables.user_gender, int(shapes.get("n_genders", 1)))
    tables.user_occupation = with_card(tables.user_occupation, int(shapes.get("n_occupations", 1)))
    return tables
