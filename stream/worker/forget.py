"""Forgetting users: what a batch of control requests makes the worker delete and publish. No Kafka.

``metarec forget`` (:mod:`stream.cli.commands.forget`) sends a request keyed by the user to ``<group>-control``
(:mod:`stream.kafka.control`), co-partitioned with the input topic: the worker that owns the user's input partition
*p* gets it, in its own partition *p*. :func:`forget_users` returns, per valid request,

* the deletion of the user's record in changelog partition *p*, the partition of the user's input events (the
  runtime writes it as a changelog tombstone, the path the ``--state-ttl`` expiry uses, :mod:`stream.worker.expiry`);
* the acknowledgement: a tombstone (null value) of the user's key on the output topic, header ``forget-request`` =
  the request's id, to be produced only once the changelog tombstone is delivered;

and drops what the process itself remembers of the user (the last list kept for the online hit rate, the activity
tracker, the expiry index). Forgetting an unknown or already forgotten user is acknowledged the same way.

What is not deleted: the user's past contributions to the item side (co-occurrence counts, item rows, popularity)
stay as aggregates, and a user who was in the training data of the served checkpoint keeps the row θ0 learned for
them until a checkpoint trained without them is served.

Example
-------
>>> from stream.kafka.control import forget_request
>>> from stream.worker.core import MemoryState, StateWrite, WorkerCore
>>> from stream.worker.metrics import WorkerMetrics
>>> core, state = WorkerCore(learner=None, metrics=WorkerMetrics(), output_topic="recs"), MemoryState()
>>> state.apply([StateWrite(2, b"u1", b"record")])
>>> key, value = forget_request("u1", request_id="r-1")
>>> out = forget_users(core, [RawMessage("metarec-control", 2, 0, key, value, 0.0)], state)
>>> out.writes, [(o.topic, o.key, o.value, o.headers) for o in out.lists]
([StateWrite(partition=2, key=b'u1', value=None)], [('recs', b'u1', None, [('forget-request', b'r-1')])])
"""
from __future__ import annotations

import logging
from collections.abc import Sequence

from stream.kafka.control import ACK_HEADER, InvalidRequest, parse_request
from stream.kafka.messages import Outgoing, RawMessage
from stream.worker.core import BatchOutput, StateReader, StateWrite, WorkerCore
from stream.worker.state_layout import user_key

log = logging.getLogger(__name__)


def forget_users(core: WorkerCore, messages: Sequence[RawMessage], store: StateReader) -> BatchOutput:
    """The deletions and acknowledgements of a batch of control ``messages`` (invalid ones are logged, skipped)."""
    requests: list[tuple[RawMessage, str, str]] = []
    for msg in messages:
        try:
            req = parse_request(msg.key, msg.value)
        except InvalidRequest as exc:
            log.warning("control message %s/%d/%d skipped: %s", msg.topic, msg.partition, msg.offset, exc)
            continue
        requests.append((msg, req.user_id, req.request_id))
    known = store.read({user_key(u): msg.partition for msg, u, _ in requests})
    writes: list[StateWrite] = []
    acks: list[Outgoing] = []
    for msg, user, request_id in requests:
        key = user_key(user)
        writes.append(StateWrite(msg.partition, key, None))
        acks.append(Outgoing(core.output_topic, key, None, [(ACK_HEADER, request_id.encode("utf-8"))]))
        core.hitrate.forget(user)
        core.active.forget(user)
        core.expiry.forget(msg.partition, user)
        log.info("forgetting user %r (partition %d, %s)", user, msg.partition,
                 "record deleted" if known.get(key) is not None else "no record held")
    core.metrics.users_forgotten.inc(len(requests))
    if core.expiry.enabled:
        core.metrics.state_users.set(core.expiry.size())
    return BatchOutput(writes, acks, [])
