"""The user records of the input partitions a worker owns: one local store per partition (RocksDB or memory).

Each store holds the partition's records (key = user id, value = :meth:`adapters.online.records.UserRecord.to_bytes`)
and, under an internal key (:func:`stream.worker.state_layout.is_internal_key`), the offset of the last changelog
record it reflects: a store kept on disk after a clean stop is brought up to date by reading the changelog from
there on (:mod:`stream.runtime.kafka.changelog`), not from the beginning. :class:`UserState` is the core's
:class:`~stream.worker.core.StateReader` over every owned store.

Example
-------
>>> s = UserState(None)
>>> s.open(2).put(b"u1", b"rec")
>>> s.read({b"u1": 2, b"u2": 2}), s.owned()
({b'u1': b'rec', b'u2': None}, [2])
"""
from __future__ import annotations

import logging
import shutil
from collections.abc import Iterable, Iterator, Mapping
from pathlib import Path

from adapters.errors import MetarecError
from stream.worker.state_layout import INTERNAL

log = logging.getLogger(__name__)

CHANGELOG_OFFSET_KEY = INTERNAL + b"metarec/changelog-offset"  #: next changelog offset the store has not read
STATE_DIR = "kafka-state"  #: under --data-dir: one RocksDB directory per input partition


class PartitionStore:
    """The records of one input partition: RocksDB under ``path``, or a dict when ``path`` is None."""

    def __init__(self, path: Path | None) -> None:
        self.path = path
        self._mem: dict[bytes, bytes] | None = None
        self._db = None
        if path is None:
            self._mem = {}
        else:
            from rocksdict import Options, Rdict
            path.parent.mkdir(parents=True, exist_ok=True)
            try:
                self._db = Rdict(str(path), Options(raw_mode=True))
            except Exception as exc:  # noqa: BLE001 - rocksdict raises plain exceptions
                raise MetarecError(f"cannot open the state store {path}: {exc}") from None

    def get(self, key: bytes) -> bytes | None:
        return self._mem.get(key) if self._mem is not None else self._db.get(key)  # type: ignore[union-attr]

    def get_many(self, keys: list[bytes]) -> list[bytes | None]:
        if self._mem is not None:
            return [self._mem.get(k) for k in keys]
        return list(self._db.get(keys))  # type: ignore[union-attr]

    def put(self, key: bytes, value: bytes | None) -> None:
        """Store ``value`` (None: delete) under ``key``."""
        if self._mem is not None:
            if value is None:
                self._mem.pop(key, None)
            else:
                self._mem[key] = value
        elif value is None:
            try:
                del self._db[key]  # type: ignore[union-attr]
            except KeyError:
                pass
        else:
            self._db[key] = value  # type: ignore[index]

    def items(self) -> Iterator[tuple[bytes, bytes]]:
        if self._mem is not None:
            yield from list(self._mem.items())
        else:
            yield from self._db.items()  # type: ignore[union-attr]

    @property
    def changelog_offset(self) -> int:
        """The next changelog offset to read into this store (0: nothing read)."""
        raw = self.get(CHANGELOG_OFFSET_KEY)
        return int(raw.decode("ascii")) if raw else 0

    @changelog_offset.setter
    def changelog_offset(self, offset: int) -> None:
        self.put(CHANGELOG_OFFSET_KEY, str(int(offset)).encode("ascii"))

    def close(self) -> None:
        if self._db is not None:
            self._db.close()
            self._db = None

    def destroy(self) -> None:
        """Close and delete the store (its partition was lost or its contents cannot be trusted)."""
        self.close()
        self._mem = {} if self._mem is not None else None
        if self.path is not None:
            shutil.rmtree(self.path, ignore_errors=True)


class UserState:
    """The stores of the owned input partitions (under ``root``, or in memory when ``root`` is None)."""

    def __init__(self, root: Path | None) -> None:
        self.root = root
        self.stores: dict[int, PartitionStore] = {}

    def open(self, partition: int) -> PartitionStore:
        """The store of ``partition`` (opened, or created empty)."""
        store = self.stores.get(partition)
        if store is None:
            path = None if self.root is None else self.root / f"p{int(partition)}"
            store = self.stores[partition] = PartitionStore(path)
        return store

    def close(self, partition: int, destroy: bool = False) -> None:
        store = self.stores.pop(partition, None)
        if store is not None:
            store.destroy() if destroy else store.close()

    def owned(self) -> list[int]:
        return sorted(self.stores)

    def read(self, keys: Mapping[bytes, int]) -> dict[bytes, bytes | None]:
        """:class:`~stream.worker.core.StateReader`: one multi-get per partition."""
        by_partition: dict[int, list[bytes]] = {}
        for key, p in keys.items():
            by_partition.setdefault(p, []).append(key)
        out: dict[bytes, bytes | None] = {}
        for p, ks in by_partition.items():
            store = self.stores.get(p)
            if store is None:
                raise MetarecError(f"state of input partition {p} is not held by this worker")
            out.update(zip(ks, store.get_many(ks)))
        return out

    def items(self) -> Iterable[tuple[bytes, bytes]]:
        """Every stored ``(key, value)`` of the owned partitions (the expiry index is rebuilt from them)."""
        for store in list(self.stores.values()):
            yield from store.items()

    def close_all(self) -> None:
        for p in list(self.stores):
            self.close(p)
