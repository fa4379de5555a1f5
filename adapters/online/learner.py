"""The online adaptation path: windows, micro-batches, warm-started batched adaptation, top-K lists.

One implementation, three users: the stream worker (on Kafka), the prequential evaluation (offline, same code)
and the benchmark. Nothing here knows about Kafka: events come in as :class:`Interaction` values carrying their
input position (partition, offset), and per-user durable state goes in and out as
:class:`~adapters.online.records.UserRecord` values that the caller stores wherever it likes.

For each micro-batch, :meth:`OnlineLearner.process`:

1. applies each event to its user's record (a redelivered ``(partition, offset)`` is skipped: idempotent);
2. trims every touched window to the last ``window`` events, none older than ``max_age`` seconds;
3. measures the pre-update loss of the current states on the incoming events (the drift signal);
4. adapts all touched users in ONE batched :meth:`Adapter.adapt` call, warm-started from each user's previous
   state (θ0 for a new user), ``steps`` gradient steps on the window, pulled toward θ0 by ``prox`` (both the
   checkpoint's unless the :class:`OnlineConfig` sets them);
5. turns the batch's new events into item contributions (:func:`adapters.online.items.rule.contribute`), which its
   in-process owner merges into its item table (:mod:`adapters.online.items.owner`; at once, or one micro-batch
   later to simulate a group's round trip) or which the caller sends to the group's owners (``owner_delay`` None);
6. ranks the catalog for every touched user (also one whose events were all redeliveries, so that a list lost
   in a crash is published again) (excluding row 0 and every item the user ever interacted with) and
   returns one top-K :class:`Recommendation` per user, ``as_of`` the newest event of that user in the batch.

Example
-------
>>> from adapters.online.learner import OnlineLearner, OnlineConfig, Interaction
>>> learner = OnlineLearner(checkpoint, OnlineConfig(top_k=5))            # doctest: +SKIP
>>> out = learner.process([Interaction("u1", "50", 5.0, 8.8e8, 0, 0)], {}) # doctest: +SKIP
>>> out.recommendations[0].items                                          # doctest: +SKIP
['181', '100', '258', '127', '286']
"""
from __future__ import annotations

import logging
import math
import time
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import TYPE_CHECKING, Any

import numpy as np
import torch

from adapters.errors import MetarecError
from adapters.meta.warmstart import descends_from
from adapters.online.batch import apply_events
from adapters.online.carryover import Carried, carry_over, new_item_table
from adapters.online.items.contributions import Contributions
from adapters.online.items.owner import InProcessOwner
from adapters.online.items.rows import ItemRow
from adapters.online.items.rule import BatchItems, contribute, layout_of
from adapters.online.items.table import ItemTable
from adapters.online.explain import explain
from adapters.online.tasklearner import TaskLearner, support_batch
from adapters.online.config import AppliedBatch, BatchResult, Interaction, OnlineConfig, Recommendation
from adapters.online.records import UserRecord, vocab_hash

if TYPE_CHECKING:
    from adapters.meta.checkpoint import Checkpoint

__all__ = ["BatchResult", "Interaction", "OnlineConfig", "OnlineLearner", "Recommendation"]

log = logging.getLogger(__name__)


class OnlineLearner:
    """Windowed, micro-batched, warm-started adaptation over a :class:`~adapters.meta.checkpoint.Checkpoint`."""

    def __init__(self, checkpoint: Checkpoint, config: OnlineConfig | None = None) -> None:
        self.config = config or OnlineConfig()
        self._vocabs: dict[int, list[str]] = {}
        self.carried: Carried | None = None  #: what the last switch carried over (None: no switch yet)
        #: merges this learner's item contributions into its own table (None: the group's owners do, shared mode)
        self.owner = None if self.config.owner_delay is None else InProcessOwner(self.config.owner_delay)
        self.batches = 0  #: micro-batches processed (seeds the ranking step's negatives)
        self._serve(checkpoint, None)

    # -- model versions --------------------------------------------------------------------------------
    def switch(self, checkpoint: Checkpoint) -> None:
        """Serve ``checkpoint`` from now on.

        Records written by another version keep their window and seen items (remapped to the new item rows when
        the vocabulary differs) but not their adapted state: at their next event they are re-adapted from the new
        θ0 on their window (:meth:`readapt` does it at once). The item side carries over
        (:mod:`adapters.online.carryover`): an item the new checkpoint knows uses its rows; an item it does not know
        (first seen online, or no longer in its training data) keeps a row, with the embeddings and biases learned
        online when the new version descends from the one served (a warm start), rebuilt from its co-occurring items
        otherwise; co-occurrences, counts and rating corrections follow their items.
        """
        self._serve(checkpoint, self.items)

    def _serve(self, checkpoint: Checkpoint, old: ItemTable | None) -> None:
        """Serve ``checkpoint``, carrying over the item table ``old`` of the version served so far (None: the first)."""
        if len(checkpoint.item_ids) != checkpoint.adapter.n_items:
            raise MetarecError(f"checkpoint vocabulary has {len(checkpoint.item_ids)} items but the model "
                               f"{checkpoint.adapter.n_items}")
        vocab = vocab_hash(list(checkpoint.item_ids))
        adapter, items = new_item_table(checkpoint, self.config)
        if old is not None:
            if self.owner is not None:
                self.owner.flush(old)  # contributions still waiting belong to the version they were computed in
            self.carried = carry_over(old, items, copy_rows=descends_from(checkpoint, self.model_version),
                                      keep_rows=vocab == self.vocab)
        self.checkpoint = checkpoint
        self.model_version: str = checkpoint.version
        #: inner-loop steps per micro-batch: the config's, else the checkpoint's (what it was trained with)
        self.steps: int = int(checkpoint.adapter.inner.steps if self.config.steps is None else self.config.steps)
        self.user_index: dict[str, int] = dict(checkpoint.user_index)
        self.vocab = vocab
        self.adapter, self.items = adapter, items
        cfg = self.config
        self.task = TaskLearner(adapter, cfg.task_learner or adapter.inner.task_learner, cfg.explore,
                                cfg.explore_scale, cfg.explore_seed, cfg.persistence)
        self.item_ids = items.ids  # grows online (the same list object)
        self.item_index = items.index
        self.layout = layout_of(adapter) if items.rows is not None else None
        self._vocabs[self.vocab] = self.item_ids
        self._candidates = self._retrieval_candidates()

    @property
    def n_items(self) -> int:
        """Rows of the item table (row 0, the checkpoint's items, items added online, free rows)."""
        return self.items.capacity

    def _retrieval_candidates(self) -> torch.Tensor | None:
        """Rows to re-rank when the catalog is larger than ``max_catalog`` (top-M by θ0 score), else None."""
        if self.n_items - 1 <= self.config.max_catalog:
            return None
        with torch.no_grad():
            users = torch.zeros(1, dtype=torch.long)
            prior = self.adapter.score(self.adapter.init_states(users), users)[0]
        prior[0] = -math.inf
        return torch.topk(prior, self.config.retrieval_m).indices.sort().values

    # -- lookups ---------------------------------------------------------------------------------------
    def item_row(self, item_id: str) -> int:
        """The item's row (0: not known yet)."""
        return self.items.row(item_id)

    def user_row(self, user_id: str) -> int:
        return self.user_index.get(user_id, 0)

    def _current(self, record: UserRecord | None) -> UserRecord:
        """``record`` in this model's vocabulary and item-table size (a fresh record for None)."""
        if record is not None and record.vocab == self.vocab:  # online rows by name, then this table's size
            record = record.in_table(self.item_ids, self.item_index)
            record = record.resized(self.n_items) if record.n_items != self.n_items else record
        if record is None:
            return UserRecord.empty(self.n_items, self.vocab)
        if record.vocab != self.vocab:
            old = self._vocabs.get(record.vocab)
            if old is None:
                log.warning("user record from an unknown item vocabulary: seen items and window reset")
                fresh = UserRecord.empty(self.n_items, self.vocab)
                fresh.partition, fresh.last_offset = record.partition, record.last_offset
                return fresh
            return record.remap(old, self.item_index, self.n_items, self.vocab)
        return replace(record, items=record.items.copy(), ratings=record.ratings.copy(),
                       timestamps=record.timestamps.copy(), offsets=record.offsets.copy(), seen=record.seen.copy())

    def _states(self, records: Sequence[UserRecord | None], users: torch.Tensor) -> torch.Tensor:
        """Current states: the stored one when it comes from this model version (and vocabulary), else θ0."""
        states = self.task.init_states(users)
        for n, r in enumerate(records):
            if (r is not None and r.state is not None and r.model_version == self.model_version
                    and r.vocab == self.vocab and r.state.shape[0] == states.shape[1]):
                states[n] = torch.from_numpy(r.state)
        return states

    # -- score before learn (prequential evaluation) ------------------------------------------------------
    def _event_states(self, events: Sequence[Interaction], records: Mapping[str, UserRecord | None]
                      ) -> tuple[torch.Tensor, torch.Tensor]:
        users = torch.tensor([self.user_row(e.user_id) for e in events], dtype=torch.long)
        # only the stored states are read: no need for _current's copies and vocabulary remaps
        return self._states([records.get(e.user_id) for e in events], users), users

    @torch.no_grad()
    def ranking_scores(self, events: Sequence[Interaction], records: Mapping[str, UserRecord | None]) -> torch.Tensor:
        """``[n, n_items]`` ranking scores of each event's user's current state (column 0: unknown item)."""
        states, users = self._event_states(events, records)
        return self._scores(states, users, windows=[self._window(records.get(e.user_id)) for e in events])

    def _window(self, record: UserRecord | None) -> np.ndarray:
        """The rows of ``record``'s window in this learner's item table (empty when they are another's)."""
        if record is None or record.vocab != self.vocab:
            return np.zeros(0, np.int64)
        rows = record.items
        return rows[rows < self.n_items]

    def _scores(self, states: torch.Tensor, users: torch.Tensor, candidates: torch.Tensor | None = None,
                windows: Sequence[np.ndarray] | None = None) -> torch.Tensor:
        """Ranking scores: the model's, the item-popularity bonus, the co-occurrence prior of each user's window."""
        scores = self.task.scores(states, users, candidates)
        bonus = self.items.bonus(self.items.stream_time)
        if bonus is not None:
            scores = scores + (bonus if candidates is None else bonus[candidates])
        if windows is not None and self.items.config.prior_weight > 0:
            prior = torch.from_numpy(self.items.prior(windows))
            scores = scores + (prior if candidates is None else torch.gather(prior, 1, candidates))
        return scores

    def _predict(self, states: torch.Tensor, users: torch.Tensor, rows: torch.Tensor) -> torch.Tensor:
        """``[n]`` predicted ratings of item ``rows[n]`` by state ``n`` (with the online item-bias corrections)."""
        pred = self.adapter.predict(self.task.model_states(states), users, rows[:, None])[:, 0]
        if self.items.config.bias_lr > 0:
            ad = self.adapter
            pred = (pred + torch.from_numpy(self.items.rating_delta)[rows]).clamp(ad.rating_min, ad.rating_max)
        return pred

    @torch.no_grad()
    def predict_ratings(self, events: Sequence[Interaction], records: Mapping[str, UserRecord | None]) -> np.ndarray:
        """``[n]`` predicted rating of each event's item by its user's current state."""
        states, users = self._event_states(events, records)
        items = torch.tensor([self.item_row(e.item_id) for e in events], dtype=torch.long)
        return self._predict(states, users, items).numpy()

    # -- learn ---------------------------------------------------------------------------------------------
    def process(self, events: Sequence[Interaction], records: Mapping[str, UserRecord | None], *,
                publish: bool = True, measure_loss: bool = True) -> BatchResult:
        """Apply one micro-batch: windows, one batched adaptation, one top-K list per touched user.

        ``publish=False`` skips the lists and ``measure_loss=False`` the drift signal (``support_loss`` is then
        NaN): an offline evaluation that scores before learning needs neither. States and records are the same.
        """
        t0 = time.perf_counter()
        cfg = self.config
        if events and not math.isfinite(self.items.stream_time):  # counts stored without a time start here
            self.items.anchor(min(ev.timestamp for ev in events))
        batch = self._apply(events, records)
        if not batch.touched:
            return BatchResult({}, [], math.nan, batch.duplicates, batch.unknown, 0.0)
        # Every touched user gets a list, also one whose events were all redeliveries: its state may have been
        # stored before the crash that lost its list, so the list is published again (at-least-once output).
        user_ids = list(batch.touched)
        recs = [batch.touched[u] for u in user_ids]
        users = torch.tensor([self.user_row(u) for u in user_ids], dtype=torch.long)
        adapted = [n for n, u in enumerate(user_ids) if u in batch.fresh]
        t1 = time.perf_counter()
        with torch.no_grad():
            states = self._states(recs, users)
            support_loss = (self._support_loss(states, users, [recs[n] for n in adapted], adapted,
                                               [batch.fresh[user_ids[n]] for n in adapted])
                            if adapted and measure_loss else math.nan)
            contributions = self._contribute(user_ids, self.task.model_states(states), users, batch)
        for n in adapted:
            recs[n].trim(cfg.window, cfg.max_age)
        t2 = time.perf_counter()
        if adapted:
            states = self._adapt(states, users, recs, adapted)
        t3 = time.perf_counter()
        recommendations = self._rank(user_ids, recs, users, states, batch.newest) if publish else []
        t4 = time.perf_counter()
        out: dict[str, UserRecord] = {}
        state_np = states.numpy()
        for n in adapted:
            r = recs[n]
            r.state, r.model_version = state_np[n].copy(), self.model_version
            out[user_ids[n]] = r.name_online_rows(self.items.n_base, self.item_ids, self.items.online)
        return BatchResult(out, recommendations, support_loss, batch.duplicates, int(batch.unknown), t3 - t2,
                           {"apply": t1 - t0, "loss": t2 - t1, "adapt": t3 - t2, "rank": t4 - t3}, contributions)

    # -- the item state (adapters.online.items) ----------------------------------------------------------------
    def _contribute(self, user_ids: list[str], states: torch.Tensor, users: torch.Tensor,
                    batch: AppliedBatch) -> Contributions:
        """The batch's item contributions; merged by the in-process owner when there is one (then returned empty)."""
        self.batches += 1
        if not batch.new_rows:
            self.items.vocab.pending = []
            return Contributions.empty(self.model_version)
        rows = np.asarray(batch.new_rows, dtype=np.int64)
        ratings = np.asarray(batch.new_ratings, dtype=np.float64)
        pos = {u: n for n, u in enumerate(user_ids)}
        idx = torch.tensor([pos[u] for u in batch.new_users], dtype=torch.long)
        mine = states[idx]
        errors = np.full(len(rows), np.nan)
        if np.isfinite(ratings).any():
            errors = self._predict(mine, users[idx], torch.from_numpy(rows)).numpy().astype(np.float64) - ratings
        learns = self.layout is not None
        items = BatchItems(rows, batch.new_windows, np.asarray(batch.new_times, np.float64),
                           self.adapter.ranking_vectors(mine) if learns else None,
                           self.adapter.rating_vectors(mine) if learns else None, errors)
        out = contribute(self.items, self.model_version, items, seed=self.config.item_seed * 1_000_003 + self.batches,
                         layout=self.layout)
        self.items.vocab.pending = []  # the batch's new rows are learned: evictable from now on
        if self.owner is not None:
            self.owner.settle(self.items, out)
            return Contributions.empty(self.model_version)
        return out

    def merge_items(self, contributions: Contributions, offset: int = -1) -> np.ndarray:
        """Merge the group's contributions to the items this learner's process owns (shared mode); the rows
        changed (publish them with ``self.items.publish``)."""
        return self.items.merge(contributions, offset)

    def apply_items(self, updates: Sequence[tuple[str, bytes | None, float]]) -> int:
        """Apply published item rows ``(item id, row bytes or None: deleted, record time)``; how many."""
        if not updates:
            return 0
        return self.items.apply([(i, None if v is None else ItemRow.from_bytes(v), ts) for i, v, ts in updates],
                                self.model_version)

    def item_state(self, item_id: str) -> dict[str, Any] | None:
        """What this learner holds about ``item_id`` (None: no row), JSON-ready."""
        return self.items.describe(item_id)

    def item_vectors(self, item_ids: Sequence[str]) -> np.ndarray:
        """``[n, e]`` embeddings of ``item_ids`` (:meth:`~adapters.base.Adapter.item_embeddings`; no row: row 0's),
        for list diversity."""
        rows = np.fromiter(map(self.items.index.get, item_ids, [0] * len(item_ids)), np.int64)
        return self.adapter.item_embeddings().detach().numpy()[rows]

    def shared_newest_update(self) -> float:
        """Record time of the newest published item row applied (NaN: none, or local mode)."""
        return self.items.newest_update

    def _apply(self, events: Sequence[Interaction], records: Mapping[str, UserRecord | None]) -> AppliedBatch:
        """Apply the batch's events to copies of their users' records (redeliveries skipped), in input order."""
        return apply_events(self.items, self._current, events, records)

    def readapt(self, records: Mapping[str, UserRecord | None], batch: int = 512) -> dict[str, UserRecord]:
        """The records of another version re-expressed in this one, without waiting for their users' next event.

        Each is remapped to this version's item rows and its state re-adapted from this θ0 on its window (as
        :meth:`process` would at the user's next event, before it); ``batch`` users per batched call. Records
        already of this version (and vocabulary) are left out; one with an empty window comes back without a state.
        """
        todo = [u for u, r in records.items() if r is not None and (
            r.vocab != self.vocab or r.model_version != self.model_version and len(r.items))]
        out: dict[str, UserRecord] = {}
        for s in range(0, len(todo), batch):
            ids = todo[s:s + batch]
            recs = [self._current(records[u]) for u in ids]
            users = torch.tensor([self.user_row(u) for u in ids], dtype=torch.long)
            with torch.no_grad():
                states = self._states(recs, users)
            windowed = [n for n, r in enumerate(recs) if len(r.items)]
            if windowed:
                states = self._adapt(states, users, recs, windowed)
            for n, (u, r) in enumerate(zip(ids, recs)):
                r.state, r.model_version = None, ""
                out[u] = r.name_online_rows(self.items.n_base, self.item_ids, self.items.online)
            for n in windowed:
                recs[n].state, recs[n].model_version = states[n].numpy().copy(), self.model_version
        return out

    def _support_loss(self, states: torch.Tensor, users: torch.Tensor, recs: list[UserRecord], adapted: list[int],
                      fresh: list[list[int]]) -> float:
        """Pre-update loss of ``states[adapted]`` on the incoming events (window indices ``fresh``): drift signal."""
        sub = torch.tensor(adapted, dtype=torch.long)
        incoming = [UserRecord(n_items=r.n_items, vocab=r.vocab, items=r.items[f], ratings=r.ratings[f])
                    for r, f in zip(recs, fresh)]
        return float(self.adapter.loss(self.task.model_states(states[sub]), support_batch(incoming, users[sub])).mean())

    def _adapt(self, states: torch.Tensor, users: torch.Tensor, recs: list[UserRecord],
               adapted: list[int]) -> torch.Tensor:
        """``states`` with the users ``adapted`` adapted on their (trimmed) windows, in one batched call."""
        sub = torch.tensor(adapted, dtype=torch.long)
        support = support_batch([recs[n] for n in adapted], users[sub])
        states = states.clone()
        with torch.no_grad():  # the global parameters stay fixed online (torch.func transforms ignore this)
            states[sub] = self.task.adapt(states[sub], support, self.steps, self.config.prox)
        return states

    @torch.no_grad()
    def _rank(self, user_ids: list[str], recs: list[UserRecord], users: torch.Tensor, states: torch.Tensor,
              newest: dict[str, Interaction]) -> list[Recommendation]:
        k = self.config.top_k
        windows = [self._window(r) for r in recs]
        if self._candidates is None:
            scores = self._scores(states, users, windows=windows)
            seen = torch.from_numpy(np.stack([r.seen for r in recs]))
            scores = scores.masked_fill(seen, -math.inf)
            scores[:, torch.from_numpy(~self.items.active())] = -math.inf  # row 0 and free rows
            rows = None
        else:
            rows = self._candidates
            cand = rows.unsqueeze(0).expand(len(user_ids), -1)
            scores = self._scores(states, users, cand, windows=windows)
            seen = torch.from_numpy(np.stack([r.seen[rows.numpy()] for r in recs]))
            scores = scores.masked_fill(seen, -math.inf)
        top = torch.topk(scores, min(k, scores.shape[1]), dim=1)
        values, index = top.values.numpy(), top.indices.numpy()
        if rows is not None:
            index = rows.numpy()[index]
        because = (explain(self.adapter, self.items, windows, self.task.model_states(states), users, index)
                   if self.config.explain else None)
        std = self.task.score_std(states, torch.from_numpy(index))
        result = []
        for n, u in enumerate(user_ids):
            ok = np.isfinite(values[n])  # fewer than k candidates left: a shorter list
            ev = newest.get(u)
            partition, offset, ts = ((ev.partition, ev.offset, ev.timestamp) if ev is not None else
                                     (recs[n].partition, recs[n].last_offset, recs[n].last_timestamp))
            result.append(Recommendation(
                user_id=u, items=[self.item_ids[i] for i in index[n][ok]], scores=values[n][ok].tolist(),
                partition=partition, offset=offset, event_timestamp=ts,
                because=None if because is None else [because[n][j] for j in np.flatnonzero(ok)],
                uncertainty=None if std is None else std[n][torch.from_numpy(ok)].tolist()))
        return result
