"""Repair of faust's per-message ``wait_first`` in its fetch loop: deliver each message with a plain ``await``.

Defect (faust-streaming 0.15.3, measured here): four asyncio tasks per fetched message, the largest block of the
worker's event-loop thread in the profiles that led to this repair (docs/PERFORMANCE.md, "History"). Pinned by
``tests/stream/runtime/test_wait_first_per_message.py`` (the exact call shape bypassed, and that faust's own
``wait_first`` runs the delivery in another task).

faust-streaming 0.15.3's fetch loop (``Consumer._drain_messages``) hands every fetched message to the streams with

    await self.wait_first(callback(message), self.suspend_flow.wait())

and ``Service.wait_first`` wraps four awaitables in tasks (the delivery, the flow-suspension event, the service's
stopped and crashed events) and ``asyncio.wait``s on them — per message. On the event-loop thread, which bounds the
worker's throughput, that cost more than anything else.

:func:`deliver_directly` replaces ``wait_first`` on one consumer instance by a version that, for exactly that call
(two coroutines, the second waiting on the consumer's ``suspend_flow`` event, no timeout) while the flow is not
suspended, awaits the delivery itself and nothing else. Every other call, and every call made while the flow is
suspended, goes to faust's own ``wait_first``.

What changes: a delivery that has started is no longer abandoned when a rebalance suspends the flow mid-way. faust
abandons it — the message is then marked read but never reaches the stream (the "skipped range" that
:mod:`stream.runtime.faust.skipped_ranges` repairs) — while the direct await finishes it, and faust's stream then skips and acks it as
it does with every message it reads while suspended (what :mod:`stream.runtime.faust.acked_unprocessed` repairs). A stopping consumer still
cancels the fetch loop, and with it the delivery. Tested through kill -9 restarts, rebalances between two workers
and graceful stops (``tests/reliability``, ``tests/stream/worker/test_worker_scaleout.py``, ``test_worker_shutdown.py``).
"""
from __future__ import annotations

import inspect
import logging
from typing import Any

log = logging.getLogger(__name__)


def _waits_on(coro: Any, event: Any) -> bool:
    """True if ``coro`` is an ``event.wait()`` coroutine that has not started."""
    frame = getattr(coro, "cr_frame", None)
    return frame is not None and frame.f_locals.get("self") is event and coro.cr_code.co_name == "wait"


def deliver_directly(consumer: Any) -> bool:
    """Install the direct delivery on faust's ``consumer`` (idempotent); False if its shape is not the expected one."""
    if getattr(consumer, "_metarec_direct_delivery", False):
        return True
    suspend = getattr(consumer, "suspend_flow", None)
    original = getattr(consumer, "wait_first", None)
    if suspend is None or original is None:
        log.warning("faust consumer without suspend_flow/wait_first: keeping its own per-message delivery")
        return False

    async def wait_first(*coros: Any, timeout: Any = None) -> Any:
        if (len(coros) == 2 and timeout is None and not suspend.is_set() and inspect.iscoroutine(coros[0])
                and _waits_on(coros[1], suspend)):
            coros[1].close()  # never started: nothing to cancel
            return await coros[0]  # the fetch loop ignores the result
        return await original(*coros, timeout=timeout)

    consumer.wait_first = wait_first
    consumer._metarec_direct_delivery = True
    log.info("faust fetch loop: direct per-message delivery (--delivery direct)")
    return True
