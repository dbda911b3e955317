from xianyu_autoreply.replies.memory import SeenMessages, SentTexts


def test_seen_message_is_remembered_within_ttl() -> None:
    seen = SeenMessages(ttl_ms=1000)
    seen.remember("m1", now_ms=0)
    assert seen.contains("m1", now_ms=999)
    assert not seen.contains("m1", now_ms=1000)


def test_seen_messages_forget_the_oldest_over_capacity() -> None:
    seen = SeenMessages(capacity=3, ttl_ms=10_000)
    for n in range(5):
        seen.remember(f"m{n}", now_ms=n)
    assert len(seen) == 3
    assert not seen.contains("m0", now_ms=5)
    assert seen.contains("m4", now_ms=5)


def test_seen_messages_drop_expired_entries_when_adding() -> None:
    seen = SeenMessages(ttl_ms=100)
    seen.remember("old", now_ms=0)
    seen.remember("new", now_ms=500)
    assert len(seen) == 1


def test_reading_seen_messages_changes_nothing() -> None:
    seen = SeenMessages(ttl_ms=100)
    seen.remember("m1", now_ms=0)
    assert not seen.contains("m1", now_ms=1000)
    assert len(seen) == 1


def test_sent_text_is_recognised_as_an_echo_once() -> None:
    sent = SentTexts(ttl_ms=10_000)
    sent.record("c1", text="在的", uuid=None, now_ms=0)
    echo = sent.find_echo("c1", text="在的", message_id="x", now_ms=10)
    assert echo is not None
    sent.consume("c1", echo, now_ms=10)
    assert sent.find_echo("c1", text="在的", message_id="y", now_ms=20) is None


def test_echo_ignores_white_space_differences() -> None:
    sent = SentTexts()
    sent.record("c1", text="你好\n 在的 ", uuid=None, now_ms=0)
    assert sent.find_echo("c1", text="你好 在的", message_id=None, now_ms=1) is not None


def test_echo_is_recognised_by_message_id() -> None:
    sent = SentTexts()
    sent.record("c1", text="[图片]", uuid="-17000001", now_ms=0)
    assert sent.find_echo("c1", text="something else", message_id="-17000001", now_ms=1) is not None


def test_echo_is_per_chat() -> None:
    sent = SentTexts()
    sent.record("c1", text="在的", uuid=None, now_ms=0)
    assert sent.find_echo("c2", text="在的", message_id=None, now_ms=1) is None


def test_sent_texts_expire() -> None:
    sent = SentTexts(ttl_ms=100)
    sent.record("c1", text="在的", uuid=None, now_ms=0)
    assert sent.find_echo("c1", text="在的", message_id=None, now_ms=100) is None
    sent.record("c2", text="x", uuid=None, now_ms=200)
    assert len(sent) == 1


def test_sent_texts_are_bounded_per_chat_and_in_chats() -> None:
    sent = SentTexts(per_chat=2, max_chats=2)
    for n in range(3):
        sent.record("c1", text=f"t{n}", uuid=None, now_ms=n)
    assert sent.find_echo("c1", text="t0", message_id=None, now_ms=3) is None
    sent.record("c2", text="a", uuid=None, now_ms=4)
    sent.record("c3", text="b", uuid=None, now_ms=5)
    assert sent.find_echo("c1", text="t2", message_id=None, now_ms=6) is None
    assert len(sent) == 2
