"""stream.runtime.faust.wait_first_per_message: the fetch loop's per-message delivery becomes a plain await, and nothing else changes.

Uses a real ``mode.Service`` (faust's consumer is one) with a ``suspend_flow`` event like faust's consumer. The
whole worker runs with direct delivery in every broker test (it is the default); these tests pin the exact call
shape that is bypassed.
"""
from __future__ import annotations

import asyncio

import mode
from mode.utils.locks import Event

from stream.runtime.faust.wait_first_per_message import deliver_directly


class _Consumer(mode.Service):
    def __init__(self) -> None:
        super().__init__()
        self.suspend_flow = Event()


def _run(coro):
    return asyncio.run(coro)


def test_fetch_loop_delivery_runs_in_the_callers_task_without_new_tasks():
    async def main() -> tuple[bool, int]:
        c = _Consumer()
        assert deliver_directly(c) and deliver_directly(c)  # idempotent
        caller = asyncio.current_task()
        before = len(asyncio.all_tasks())
        seen: list[int] = []

        async def deliver() -> bool:
            seen.append(len(asyncio.all_tasks()))
            return asyncio.current_task() is caller

        same = await c.wait_first(deliver(), c.suspend_flow.wait())
        return same, seen[0] - before

    same_task, extra_tasks = _run(main())
    assert same_task is True
    assert extra_tasks == 0


def test_without_the_bypass_faust_runs_the_delivery_in_another_task():
    async def main() -> bool:
        c = _Consumer()
        caller = asyncio.current_task()

        async def deliver() -> bool:
            return asyncio.current_task() is caller

        res = await c.wait_first(deliver(), c.suspend_flow.wait())
        return res.results[0]

    assert _run(main()) is False  # what the bypass saves: a task (and three more) per message


def test_while_the_flow_is_suspended_faust_own_wait_first_decides():
    async def main() -> tuple[bool, list]:
        c = _Consumer()
        deliver_directly(c)
        c.suspend_flow.set()
        started = asyncio.Event()

        async def deliver() -> None:
            started.set()
            await asyncio.sleep(10)  # a delivery blocked on a full stream buffer

        res = await asyncio.wait_for(c.wait_first(deliver(), c.suspend_flow.wait()), timeout=5)
        return started.is_set(), res.done

    _started, done = _run(main())
    assert len(done) == 1  # the suspension won; the blocked delivery was abandoned, as faust does


def test_other_calls_go_to_faust_wait_first():
    async def main() -> tuple[bool, bool]:
        c = _Consumer()
        deliver_directly(c)
        caller = asyncio.current_task()

        async def work() -> bool:
            return asyncio.current_task() is caller

        single = await c.wait_first(work())  # one coroutine (Service.wait's shape)
        other = Event()
        two_other = await c.wait_first(work(), other.wait())  # second coroutine not the suspend_flow event
        return single.results[0], two_other.results[0]

    assert _run(main()) == (False, False)
