"""Pins of the faust-streaming 0.15.3 behaviour that the repairs in :mod:`stream.runtime.faust` rely on.

Each repair module names its defect; these tests fail when faust changes what the repair builds on (a private
attribute, a call shape, a hard-coded value), so an upgrade cannot silently turn a repair into a no-op or a crash.
Where a private method can be run on a stand-in object, the test runs it rather than reading its source.
"""
from __future__ import annotations

import asyncio
import inspect
from collections import defaultdict
from types import SimpleNamespace

import faust
import mode
from faust.tables.base import Collection
from faust.transport.consumer import Consumer
from faust.transport.drivers import aiokafka as driver
from faust.types import TP
from intervaltree import IntervalTree

from stream.runtime.faust.fetch_max_wait import set_fetch_max_wait
from stream.runtime.faust.table import PartitionEvent, current_event


def test_faust_version_is_the_one_the_repairs_were_measured_on():
    assert faust.__version__ == "0.15.3"


def test_skipped_ranges_add_gap_registers_a_range_above_the_committed_offset():
    """skipped_ranges: ``Consumer._add_gap(tp, from, to)`` marks [from, to] done, starting after the commit."""
    tp = TP("in", 0)
    fake = SimpleNamespace(_committed_offset=defaultdict(lambda: None), _gap=defaultdict(IntervalTree))
    fake._committed_offset[tp] = 6
    asyncio.run(Consumer._add_gap(fake, tp, 3, 9))
    assert sorted((i.begin, i.end) for i in fake._gap[tp]) == [(7, 10)]


def test_committed_offsets_and_commit_path_exist():
    """skipped_ranges, acked_unprocessed, lost_acks: ``_committed_offset`` (TP → offset, None when unknown) and the
    coroutine ``_commit_offsets(offsets)``."""
    init = inspect.getsource(Consumer.__init__)
    assert "self._committed_offset = defaultdict(lambda: None)" in init
    assert "self._unacked_messages = WeakSet()" in init  # drain_before_stop waits until it is empty
    assert inspect.iscoroutinefunction(Consumer._commit_offsets)
    assert list(inspect.signature(Consumer._commit_offsets).parameters)[:2] == ["self", "offsets"]


def test_fetch_loop_delivers_each_message_through_wait_first_with_the_suspend_event():
    """wait_first_per_message bypasses exactly this call; skipped_ranges exists because of its read offset."""
    src = inspect.getsource(Consumer._drain_messages)
    assert "await self.wait_first(\n                                callback(message), self.suspend_flow.wait()" in src
    assert src.index("self.wait_first(") < src.index("set_read_offset(tp, offset)")  # read even if abandoned


def test_table_writes_go_to_the_partition_of_the_current_event():
    """table: faust sends a table change to the changelog partition of the current event, via send_changelog."""
    sent = []
    fake = SimpleNamespace(send_changelog=lambda *a: sent.append(a))
    Collection._send_changelog(fake, PartitionEvent("in", 3), b"k", b"v")
    assert sent == [(3, b"k", b"v", None, None)]
    with current_event(PartitionEvent("in", 5)):
        assert faust.current_event().message.partition == 5
    assert faust.current_event() is None


def test_fetch_max_wait_is_hard_coded_and_the_wrapper_sets_it():
    """fetch_max_wait: faust passes 1500 ms; aiokafka reads ``_fetch_max_wait_ms`` when it starts its fetcher."""
    import aiokafka

    original = getattr(driver.AIOKafkaConsumerThread._create_worker_consumer, "__wrapped__",
                       driver.AIOKafkaConsumerThread._create_worker_consumer)
    assert "fetch_max_wait_ms=1500" in inspect.getsource(original)
    assert "self._fetch_max_wait_ms = fetch_max_wait_ms" in inspect.getsource(aiokafka.AIOKafkaConsumer.__init__)
    try:
        set_fetch_max_wait(30)
        set_fetch_max_wait(40)  # idempotent: wraps faust's factory, not the previous wrapper
        assert driver.AIOKafkaConsumerThread._create_worker_consumer.__wrapped__ is original
        made = SimpleNamespace(_fetch_max_wait_ms=1500)
        driver.AIOKafkaConsumerThread._create_worker_consumer = lambda self, transport: made  # a stand-in factory
        set_fetch_max_wait(30)
        assert driver.AIOKafkaConsumerThread._create_worker_consumer(None, None) is made
        assert made._fetch_max_wait_ms == 30
    finally:
        driver.AIOKafkaConsumerThread._create_worker_consumer = original


def test_graceful_stop_hooks_exist():
    """drain_before_stop: ``Consumer.stop_flow`` and mode's ``Worker._on_sigterm`` / ``_on_sigint``."""
    assert callable(Consumer.stop_flow)
    assert callable(mode.Worker._on_sigterm) and callable(mode.Worker._on_sigint)
