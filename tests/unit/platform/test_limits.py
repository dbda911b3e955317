import asyncio

import pytest

from xianyu_autoreply.platform.limits import SlotLimiter, SlotTimeout


async def test_slot_limiter_never_exceeds_capacity_and_serves_in_order() -> None:
    limiter = SlotLimiter(2)
    order: list[int] = []
    peak = 0

    async def worker(n: int) -> None:
        nonlocal peak
        async with limiter.slot(timeout=5):
            order.append(n)
            peak = max(peak, limiter.in_use)
            await asyncio.sleep(0.01)

    tasks = []
    for n in range(8):
        tasks.append(asyncio.create_task(worker(n)))
        await asyncio.sleep(0)  # queue them in a known order
    await asyncio.gather(*tasks)
    assert peak == 2
    assert order == list(range(8))
    assert limiter.in_use == 0 and limiter.waiting == 0


async def test_slot_limiter_times_out_waiters_and_releases_nothing_it_did_not_take() -> None:
    limiter = SlotLimiter(1)
    async with limiter.slot():
        with pytest.raises(SlotTimeout):
            async with limiter.slot(timeout=0.05):
                pass
        assert limiter.waiting == 0
    assert limiter.in_use == 0
    async with limiter.slot(timeout=0.05):
        assert limiter.in_use == 1


def test_slot_limiter_needs_a_slot() -> None:
    with pytest.raises(ValueError):
        SlotLimiter(0)
