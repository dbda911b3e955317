"""Orders: order tracking and the auto-delivery of virtual goods, exactly once, for every account of an engine.

Owns: the order status machine and the delivery decisions (machine.py, pure), the desk that tracks orders and
claims their units (desk.py), the courier that carries one unit to the buyer (courier.py), and the seller's
webhook behind a `GoodsWebhook` seam (webhook.py). Imports platform, store and replies; the scheduler wires it.

Tracking: each order event (PROTOCOL §12) goes through `next_status`, a pure status machine (created -> paid ->
shipped -> completed, closed, refunding -> refunded or back), and the store appends each change to the order's
history with the buyer, item and chat.

Delivery, on "paid" (one unit per item bought):
1. `choose_rule` picks the rule (item id beats title keyword beats a general rule); no rule: nothing to deliver.
2. `claim_delivery` inserts (account, order, unit) under a unique key. Only the inserting worker owns the unit: a
   re-sent paid event, a reconnect, a restart or a second engine finds the row and stops there.
3. The rule's delay is counted from the claim (so a restart does not restart the wait).
4. Each attempt starts with a compare-and-set (`transition_delivery`: pending/failed at attempt n -> pending at
   n+1): of two workers that both see a unit due, one sends.
5. The goods: `text` (a template), `image` (a URL), `webhook` (POST to the seller's URL, deliver its answer) or
   `batch` (reserve a stock line -> send -> commit; released when the send provably failed). A webhook URL goes
   through the outbound policy (outbound.py) at every connection, redirects included: one it refuses ends the
   unit in `delivery_failed` at once, with the reason, and nothing reaches its target.
6. A failure that provably sent nothing is retried with backoff, then ends in `delivery_failed` with the reason.
   A send that may have reached the buyer (unconfirmed) is never retried: `delivery_failed` at once, its batch
   line kept reserved, so the goods are neither given twice nor handed to another buyer. Which is which is read
   from types (`NotSent`, `Permanent`, `WebhookError`, `Sent.outcome`), never from an error's text.
7. All units sent and the account's `auto_confirm` on (read at that moment, so a change applies at once): the
   shipment is confirmed through MTOP (§5.3) and the order moves to shipped.

Restart (the documented choice): a unit claimed but never attempted, or failed with a retry time, is resumed
(`sweep`, at start and every `sweep_interval`). An attempt is `pending` while it prepares the goods (rule, stock
line, webhook) and `sending` from just before the send: an attempt found stale in `pending` provably sent nothing
and is retried; one stale in `sending` cannot be known to be unsent, so it becomes `delivery_failed`
("interrupted"), never re-sent blindly, and the owner is notified. Paid orders without any claim (the process died
between the two writes) are picked up by the first sweep that sees their account connected.
Quantity: order events carry none, so an order's `quantity` is what the store holds (1 unless set there).
"""

from .desk import OrderDesk
from .machine import DeliveryOptions, choose_rule, needs_title, next_status
from .webhook import GoodsWebhook, HttpGoodsWebhook, WebhookBlocked, WebhookError, webhook_answer

__all__ = [
    "DeliveryOptions",
    "GoodsWebhook",
    "HttpGoodsWebhook",
    "OrderDesk",
    "WebhookBlocked",
    "WebhookError",
    "choose_rule",
    "needs_title",
    "next_status",
    "webhook_answer",
]
