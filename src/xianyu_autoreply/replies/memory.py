"""Bounded memories the reply policy reads: message ids already handled, and what we sent recently per chat.

Both are plain data structures with an explicit `now_ms` on every call (no clock inside), bounded in size and in
age so that an account that runs for months keeps a constant footprint. Reads never change them; only the
`remember`/`record`/`consume` calls do, and the reply state calls those from `ReplyState.apply` alone.

Why a time limit is safe for de-duplication: a message is not answered once it is older than the expiry window
(`message_expire`). A message id remembered for at least that window (plus clock slack) is therefore either still
remembered when the platform delivers it again, or the second delivery is expired anyway. `ReplyState` sizes the
time limit from the settings accordingly.
"""

from __future__ import annotations

import contextlib
from collections import OrderedDict
from dataclasses import dataclass


class SeenMessages:
    """Keys of messages already handled, forgotten after `ttl_ms` or when more than `capacity` are held."""

    __slots__ = ("_seen", "capacity", "ttl_ms")

    def __init__(self, *, capacity: int = 50_000, ttl_ms: int = 3_600_000) -> None:
        self.capacity = capacity
        self.ttl_ms = ttl_ms
        # key -> when it was remembered; insertion order is time order, so the oldest are at the front.
        self._seen: OrderedDict[str, int] = OrderedDict()

    def __len__(self) -> int:
        return len(self._seen)

    def contains(self, key: str, *, now_ms: int) -> bool:
        """True when `key` was remembered less than `ttl_ms` ago."""
        at = self._seen.get(key)
        return at is not None and now_ms - at < self.ttl_ms

    def remember(self, key: str, *, now_ms: int) -> None:
        """Remember `key` as handled now, dropping what is too old or over capacity."""
        self._seen[key] = now_ms
        self._seen.move_to_end(key)
        self._prune(now_ms)

    def _prune(self, now_ms: int) -> None:
        seen = self._seen
        while seen and (len(seen) > self.capacity or now_ms - next(iter(seen.values())) >= self.ttl_ms):
            seen.popitem(last=False)


@dataclass(frozen=True, slots=True)
class SentText:
    """One message we sent into a chat, kept to recognise the platform's echo of it."""

    text: str
    uuid: str | None
    sent_ms: int


class SentTexts:
    """What we sent recently, per chat: the platform echoes it back from our own id (PROTOCOL §13.1).

    An echo is recognised by the message id (when the platform keeps our `uuid`) or by the same text in the same
    chat within `ttl_ms`. Each sent message accounts for one echo only, so the seller typing the bot's last
    sentence again by hand still counts as a takeover.
    """

    __slots__ = ("_chats", "max_chats", "per_chat", "ttl_ms")

    def __init__(self, *, per_chat: int = 20, max_chats: int = 10_000, ttl_ms: int = 600_000) -> None:
        self.per_chat = per_chat
        self.max_chats = max_chats
        self.ttl_ms = ttl_ms
        # A list per chat, not a `deque(maxlen=...)`: most chats hold one or two sends, and an empty deque is
        # ~760 bytes against a one-item list's 64 (the soak keeps ~100,000 chats of replies alive; docs/performance.md).
        self._chats: OrderedDict[str, list[SentText]] = OrderedDict()

    def __len__(self) -> int:
        return sum(len(sent) for sent in self._chats.values())

    def find_echo(self, chat_id: str, *, text: str, message_id: str | None, now_ms: int) -> SentText | None:
        """The sent message that an incoming own message echoes, or None (then the seller typed it)."""
        wanted = _echo_form(text)
        for sent in self._chats.get(chat_id, ()):
            if now_ms - sent.sent_ms >= self.ttl_ms:
                continue
            if (message_id is not None and sent.uuid == message_id) or sent.text == wanted:
                return sent
        return None

    def record(self, chat_id: str, *, text: str, uuid: str | None, now_ms: int) -> None:
        """Remember that we sent `text` into `chat_id` now."""
        sent = self._chats.get(chat_id)
        if sent is None:
            sent = self._chats[chat_id] = []
        self._chats.move_to_end(chat_id)
        sent.append(SentText(_echo_form(text), uuid, now_ms))
        if len(sent) > self.per_chat:
            del sent[0]
        self._prune(now_ms)

    def consume(self, chat_id: str, echo: SentText, *, now_ms: int) -> None:
        """Forget a sent message whose echo has arrived."""
        sent = self._chats.get(chat_id)
        if sent is not None:
            with contextlib.suppress(ValueError):
                sent.remove(echo)
            if not sent:
                del self._chats[chat_id]
        self._prune(now_ms)

    def _prune(self, now_ms: int) -> None:
        while len(self._chats) > self.max_chats:
            self._chats.popitem(last=False)
        # Chats are ordered by their last send, so the stale ones are at the front.
        while self._chats:
            chat_id, sent = next(iter(self._chats.items()))
            if sent and now_ms - sent[-1].sent_ms < self.ttl_ms:
                break
            del self._chats[chat_id]


def _echo_form(text: str) -> str:
    # The platform may trim or re-wrap what we sent; compare on collapsed white space.
    return " ".join(text.split())
