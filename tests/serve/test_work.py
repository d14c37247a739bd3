"""The bounded work pool: admission limit, deadlines, and what happens to late work."""

from __future__ import annotations

import asyncio
import threading

import pytest

from imgclass.serve.predictor import BadInput
from imgclass.serve.work import WorkPool


def test_work_runs_off_the_calling_thread_and_returns_its_result():
    pool = WorkPool(threads=2, max_queue=4, timeout=5)
    result = asyncio.run(pool.run(lambda deadline: threading.current_thread().name))
    assert result.startswith("imgclass-work") and pool.admitted == 0


def test_a_full_queue_is_refused_at_once_with_retry_after():
    pool = WorkPool(threads=1, max_queue=1, timeout=5)
    release = threading.Event()

    async def scenario() -> BadInput:
        first = asyncio.ensure_future(pool.run(lambda d: release.wait(5)))
        await asyncio.sleep(0.05)
        with pytest.raises(BadInput) as refused:
            await pool.run(lambda d: "never")
        release.set()
        assert await first is True
        return refused.value

    refused = asyncio.run(scenario())
    assert refused.status == 503 and refused.headers == {"Retry-After": "1"}
    assert "IMGCLASS_MAX_QUEUE=1" in str(refused)
    assert pool.admitted == 0


def test_work_that_cannot_start_in_time_never_starts():
    pool = WorkPool(threads=1, max_queue=2, timeout=0.2)
    release, ran = threading.Event(), []

    async def scenario() -> None:
        blocker = asyncio.ensure_future(pool.run(lambda d: release.wait(5)))
        await asyncio.sleep(0.02)
        with pytest.raises(BadInput) as late:
            await pool.run(lambda d: ran.append(1))
        assert late.value.status == 503 and "could not start" in str(late.value)
        release.set()
        with pytest.raises(BadInput):  # the blocker itself ran past its deadline
            await blocker

    asyncio.run(scenario())
    pool.shutdown()
    assert ran == []


def test_a_batch_past_its_deadline_answers_504_and_stops_between_items():
    pool = WorkPool(threads=1, max_queue=2, timeout=0.2)
    done, counted, stopped = [], [], threading.Event()

    def batch(deadline) -> None:
        try:
            for item in range(100):
                deadline.check()
                threading.Event().wait(0.05)  # one item's work
                done.append(item)
        finally:
            counted.append(pool.admitted)  # still counted after its deadline passed
            stopped.set()

    with pytest.raises(BadInput) as late:
        asyncio.run(pool.run(batch))
    assert late.value.status == 504 and "did not finish within 0.2 s" in str(late.value)
    assert stopped.wait(5) and len(done) < 10 and counted == [1]
    for _ in range(100):  # released once the work stopped, not before
        if pool.admitted == 0:
            break
        threading.Event().wait(0.01)
    assert pool.admitted == 0


def test_the_pool_works_again_after_a_shutdown():
    """An app's lifespan may end and start again (test clients do): new threads then."""
    pool = WorkPool(threads=1, max_queue=1, timeout=5)
    assert asyncio.run(pool.run(lambda d: 1)) == 1
    pool.shutdown()
    assert asyncio.run(pool.run(lambda d: 2)) == 2
    pool.shutdown()
