from xianyu_autoreply.platform.session import _RecentSends, _SeenIds


def test_seen_ids_reports_duplicates_within_ttl_only() -> None:
    seen = _SeenIds(capacity=10, ttl_s=60)
    assert seen.add("m1", 0.0)
    assert not seen.add("m1", 30.0)
    assert seen.add("m1", 100.0)  # expired: a new sighting


def test_seen_ids_is_bounded() -> None:
    seen = _SeenIds(capacity=3, ttl_s=60)
    for n in range(5):
        assert seen.add(f"m{n}", 0.0)
    assert seen.add("m0", 1.0)  # evicted, so not a duplicate any more
    assert not seen.add("m4", 1.0)


def test_recent_sends_recognise_each_echo_once() -> None:
    recent = _RecentSends(ttl_s=10)
    recent.add("c1", "hello", 0.0)
    recent.add("c1", "hello", 0.5)
    assert recent.take("c1", "hello", 1.0)
    assert recent.take("c1", "hello", 1.0)
    assert not recent.take("c1", "hello", 1.0)  # a third identical text was typed by the seller


def test_recent_sends_are_per_chat_and_expire() -> None:
    recent = _RecentSends(ttl_s=10)
    recent.add("c1", "hi", 0.0)
    assert not recent.take("c2", "hi", 1.0)
    assert not recent.take("c1", "hi", 11.0)
