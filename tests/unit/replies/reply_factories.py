"""Factories for the reply tests: messages as the push decoder hands them over, and a clock in milliseconds."""

from __future__ import annotations

import itertools

from xianyu_autoreply.protocol.events import BuyerMessage, ContentType, SellerMessage

NOW = 1_700_000_000_000
_ids = itertools.count(1)


def buyer(
    text: str,
    *,
    chat_id: str = "c1",
    message_id: str | None = None,
    created_ms: int = NOW,
    item_id: str | None = "item1",
    nick: str = "小王",
) -> BuyerMessage:
    """A buyer's text message with a fresh message id unless one is given."""
    return BuyerMessage(
        message_id=message_id if message_id is not None else f"m{next(_ids)}",
        chat_id=chat_id,
        sender_id="buyer1",
        sender_nick=nick,
        item_id=item_id,
        text=text,
        content_type=int(ContentType.TEXT),
        created_ms=created_ms,
    )


def seller(text: str, *, chat_id: str = "c1", message_id: str | None = None, created_ms: int = NOW) -> SellerMessage:
    """A message from the seller's own id: our echo or the seller typing elsewhere."""
    return SellerMessage(
        message_id=message_id if message_id is not None else f"m{next(_ids)}",
        chat_id=chat_id,
        sender_id="seller1",
        sender_nick="卖家",
        item_id="item1",
        text=text,
        content_type=int(ContentType.TEXT),
        created_ms=created_ms,
    )
