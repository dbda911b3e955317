"""The store's compare-and-set of delivery attempts, which the order desk relies on to never send a unit twice."""

from __future__ import annotations

import asyncio

from xianyu_autoreply.store import DeliveryState, Store


async def test_of_many_concurrent_attempt_starts_exactly_one_wins(store: Store) -> None:
    await store.create_account("a", "unb=2200000001; cookie2=c; _m_h5_tk=abc_1")
    assert await store.claim_delivery("a", "1234567890", 1)
    starts = await asyncio.gather(
        *(
            store.transition_delivery(
                "a",
                "1234567890",
                1,
                from_state=DeliveryState.PENDING,
                from_attempts=0,
                state=DeliveryState.PENDING,
                count_attempt=True,
            )
            for _ in range(10)
        )
    )
    winners = [s for s in starts if s is not None]
    assert len(winners) == 1 and winners[0].attempts == 1
    (delivery,) = await store.get_deliveries("a", "1234567890")
    assert delivery.attempts == 1


async def test_a_stale_expectation_changes_nothing(store: Store) -> None:
    await store.create_account("a", "unb=2200000001; cookie2=c; _m_h5_tk=abc_1")
    await store.claim_delivery("a", "1234567890", 1)
    await store.update_delivery("a", "1234567890", 1, state=DeliveryState.SENT)
    moved = await store.transition_delivery(
        "a", "1234567890", 1, from_state="failed", from_attempts=1, state="pending", count_attempt=True
    )
    assert moved is None
    (delivery,) = await store.get_deliveries("a", "1234567890")
    assert delivery.state is DeliveryState.SENT
