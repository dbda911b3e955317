"""The control API under `/_sim/`: JSON in and out, a thin shell around `Simulator`'s methods.

Bodies are validated by pydantic models that forbid unknown fields, so a typo is a 400 naming the field rather
than a silently ignored option. Errors are `{"error": "..."}`: 400 for a bad body or a reference to something the
world does not have, 404 for an unknown seller in a query string. Nothing a caller sends can produce a 500.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import TYPE_CHECKING, Annotated, Literal, TypeVar

import orjson
from aiohttp import web
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from .faults import FaultKind
from .responses import error_response, json_response
from .world import UnknownSeller, WorldError

if TYPE_CHECKING:
    from .app import Simulator

Digits = Annotated[str, Field(pattern=r"^\d+$", max_length=32)]
Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]
M = TypeVar("M", bound=BaseModel)


class _Body(BaseModel):
    model_config = ConfigDict(extra="forbid", coerce_numbers_to_str=True, frozen=True)


class SellerBody(_Body):
    unb: Digits | None = None
    nick: str | None = Field(default=None, min_length=1, max_length=64)
    cookie: str | None = None


class LoadBody(_Body):
    rate: float = Field(gt=0, le=100_000)
    seconds: float = Field(gt=0, le=86_400)
    sellers: list[Digits] | None = None


class ItemBody(_Body):
    seller: Digits
    title: str = Field(min_length=1, max_length=200)
    price: str
    item_id: Digits | None = None
    desc: str | None = None
    quantity: int = Field(default=1, ge=0)


class MessageFields(_Body):
    text: str = Field(min_length=1, max_length=10_000)
    buyer: Digits | None = None
    buyer_nick: str | None = Field(default=None, max_length=64)
    item_id: Digits | None = None
    chat_id: Digits | None = None
    message_id: str | None = Field(default=None, min_length=1, max_length=64)
    created_ms: int | None = Field(default=None, ge=0)
    from_seller: bool = False


class MessageBody(MessageFields):
    seller: Digits


class BatchBody(_Body):
    seller: Digits
    batch: list[MessageFields] = Field(min_length=1, max_length=100)


class OrderBody(_Body):
    seller: Digits
    status: Literal["created", "paid", "shipped", "completed", "closed", "refunded"]
    buyer: Digits | None = None
    item_id: Digits | None = None
    order_id: Digits | None = None


class TypingBody(_Body):
    seller: Digits
    chat_id: Digits


class NoticeBody(_Body):
    seller: Digits
    text: str = Field(min_length=1)


class PushBody(_Body):
    seller: Digits
    payloads: list[str] = Field(min_length=1, max_length=100)


class FaultBody(_Body):
    kind: FaultKind
    seller: Digits | None = None
    seconds: float | None = Field(default=None, gt=0, le=86_400)
    code: int | None = None
    delay: float | None = Field(default=None, ge=0, le=600)


class EchoBody(_Body):
    enabled: bool
    seller: Digits | None = None


class AiBody(_Body):
    reply: str | None = None
    delay: float = Field(default=0.0, ge=0, le=600)
    status: int = Field(default=200, ge=200, le=599)
    api_key: str | None = None
    model: str | None = None


class _BadBody(Exception):
    pass


async def _body(request: web.Request, model: type[M]) -> M:
    raw = await request.read()
    try:
        doc = orjson.loads(raw) if raw.strip() else {}
    except orjson.JSONDecodeError as exc:
        raise _BadBody(f"body is not JSON: {exc}") from exc
    if not isinstance(doc, dict):
        raise _BadBody("body must be a JSON object")
    return model.model_validate(doc)


def _describe(exc: ValidationError) -> str:
    parts = []
    for error in exc.errors(include_url=False):
        where = ".".join(str(p) for p in error["loc"]) or "body"
        parts.append(f"{where}: {error['msg']}")
    return "; ".join(parts)


def _endpoint(handler: Handler) -> Handler:
    """Turn every way a request can be wrong into a JSON error."""

    async def wrapped(request: web.Request) -> web.StreamResponse:
        try:
            return await handler(request)
        except ValidationError as exc:
            return error_response(_describe(exc))
        except UnknownSeller as exc:
            return error_response(str(exc), status=404 if request.method == "GET" else 400)
        except (_BadBody, WorldError) as exc:
            return error_response(str(exc))

    return wrapped


def routes(sim: Simulator) -> list[web.RouteDef]:
    """The control API's routes, bound to one simulator."""

    def seller_query(request: web.Request) -> str | None:
        return request.query.get("seller") or None

    async def index(request: web.Request) -> web.Response:
        return json_response({**sim.urls(), "stats": sim.stats()})

    async def stats(request: web.Request) -> web.Response:
        return json_response(sim.stats())

    async def load_start(request: web.Request) -> web.Response:
        body = await _body(request, LoadBody)
        return json_response(sim.start_load(rate=body.rate, seconds=body.seconds, sellers=body.sellers))

    async def load_status(request: web.Request) -> web.Response:
        return json_response(sim.load_status())

    async def load_stop(request: web.Request) -> web.Response:
        sim.stop_load()
        return json_response({"stopped": True})

    async def latency(request: web.Request) -> web.Response:
        # `since=N`: only the samples after the first N of this window (a reader polling a long load pays for
        # the new ones, not the whole list each time); `total` is the window's count.
        reset = request.query.get("reset", "") in ("1", "true", "yes")
        since = request.query.get("since", "0")
        if not since.isdigit():
            raise _BadBody(f"since: a non-negative integer, not {since!r}")
        kind = request.query.get("kind", "reply")
        if kind not in ("reply", "ack"):
            raise _BadBody(f"kind: 'reply' or 'ack', not {kind!r}")
        samples = sim.reply_latencies(reset=reset) if kind == "reply" else sim.ack_latencies(reset=reset)
        return json_response({"samples_ms": samples[int(since) :], "total": len(samples)})

    async def create_seller(request: web.Request) -> web.Response:
        body = await _body(request, SellerBody)
        return json_response(sim.create_seller(unb=body.unb, nick=body.nick, cookie=body.cookie))

    async def list_sellers(request: web.Request) -> web.Response:
        return json_response(sim.sellers())

    async def create_item(request: web.Request) -> web.Response:
        body = await _body(request, ItemBody)
        item = sim.create_item(
            body.seller,
            title=body.title,
            price=body.price,
            item_id=body.item_id,
            desc=body.desc,
            quantity=body.quantity,
        )
        return json_response(item)

    async def list_items(request: web.Request) -> web.Response:
        return json_response(sim.items(seller_query(request)))

    async def list_chats(request: web.Request) -> web.Response:
        return json_response(sim.chats(seller_query(request)))

    async def push_messages(request: web.Request) -> web.Response:
        raw = await request.read()
        try:
            doc = orjson.loads(raw)
        except orjson.JSONDecodeError as exc:
            raise _BadBody(f"body is not JSON: {exc}") from exc
        if isinstance(doc, dict) and "batch" in doc:
            batch = BatchBody.model_validate(doc)
            specs = [m.model_dump() for m in batch.batch]
            return json_response(sim.push_messages(batch.seller, specs))
        if not isinstance(doc, dict):
            raise _BadBody("body must be a JSON object")
        one = MessageBody.model_validate(doc)
        fields = one.model_dump(exclude={"seller", "text"})
        return json_response(sim.push_message(one.seller, one.text, **fields))

    async def push_order(request: web.Request) -> web.Response:
        body = await _body(request, OrderBody)
        order = sim.push_order(
            body.seller, status=body.status, buyer=body.buyer, item_id=body.item_id, order_id=body.order_id
        )
        return json_response(order)

    async def list_orders(request: web.Request) -> web.Response:
        return json_response(sim.orders(seller_query(request)))

    async def push_typing(request: web.Request) -> web.Response:
        body = await _body(request, TypingBody)
        return json_response({"delivered": sim.push_typing(body.seller, chat_id=body.chat_id)})

    async def push_notice(request: web.Request) -> web.Response:
        body = await _body(request, NoticeBody)
        return json_response({"delivered": sim.push_notice(body.seller, body.text)})

    async def push_raw(request: web.Request) -> web.Response:
        body = await _body(request, PushBody)
        return json_response({"delivered": sim.push_raw(body.seller, body.payloads)})

    async def sent(request: web.Request) -> web.Response:
        return json_response(sim.sent(seller_query(request), request.query.get("chat_id") or None))

    async def rejected(request: web.Request) -> web.Response:
        return json_response(sim.rejected(seller_query(request)))

    async def connections(request: web.Request) -> web.Response:
        return json_response(sim.connections(seller_query(request)))

    async def shipments(request: web.Request) -> web.Response:
        return json_response(sim.shipments(seller_query(request)))

    async def uploads(request: web.Request) -> web.Response:
        return json_response(sim.uploads(seller_query(request)))

    async def set_fault(request: web.Request) -> web.Response:
        body = await _body(request, FaultBody)
        fault = sim.set_fault(body.kind, seller=body.seller, seconds=body.seconds, code=body.code, delay=body.delay)
        return json_response(fault)

    async def list_faults(request: web.Request) -> web.Response:
        return json_response(sim.active_faults())

    async def clear_faults(request: web.Request) -> web.Response:
        seller = seller_query(request)
        if seller is not None:
            sim.world.seller(seller)
        return json_response({"cleared": sim.clear_faults(seller)})

    async def set_echo(request: web.Request) -> web.Response:
        body = await _body(request, EchoBody)
        return json_response(sim.set_echo(body.enabled, seller=body.seller))

    async def set_ai(request: web.Request) -> web.Response:
        body = await _body(request, AiBody)
        return json_response(sim.set_ai(**body.model_dump()))

    async def list_ai_rules(request: web.Request) -> web.Response:
        return json_response([rule.to_json() for rule in sim.ai.rules()])

    async def reset_ai(request: web.Request) -> web.Response:
        sim.reset_ai()
        return json_response({"reset": True})

    async def ai_requests(request: web.Request) -> web.Response:
        query = request.query
        return json_response(sim.ai_requests(api_key=query.get("api_key") or None, model=query.get("model") or None))

    async def not_found(request: web.Request) -> web.Response:
        return error_response(f"no control endpoint {request.method} {request.path}", status=404)

    table: list[tuple[str, str, Handler]] = [
        ("GET", "/_sim/", index),
        ("GET", "/_sim/stats", stats),
        ("GET", "/_sim/latency", latency),
        ("POST", "/_sim/load", load_start),
        ("GET", "/_sim/load", load_status),
        ("DELETE", "/_sim/load", load_stop),
        ("POST", "/_sim/sellers", create_seller),
        ("GET", "/_sim/sellers", list_sellers),
        ("POST", "/_sim/items", create_item),
        ("GET", "/_sim/items", list_items),
        ("GET", "/_sim/chats", list_chats),
        ("POST", "/_sim/messages", push_messages),
        ("POST", "/_sim/orders", push_order),
        ("GET", "/_sim/orders", list_orders),
        ("POST", "/_sim/typing", push_typing),
        ("POST", "/_sim/notices", push_notice),
        ("POST", "/_sim/push", push_raw),
        ("GET", "/_sim/sent", sent),
        ("GET", "/_sim/rejected", rejected),
        ("GET", "/_sim/connections", connections),
        ("GET", "/_sim/shipments", shipments),
        ("GET", "/_sim/uploads", uploads),
        ("POST", "/_sim/faults", set_fault),
        ("GET", "/_sim/faults", list_faults),
        ("DELETE", "/_sim/faults", clear_faults),
        ("POST", "/_sim/echo", set_echo),
        ("POST", "/_sim/ai", set_ai),
        ("GET", "/_sim/ai", list_ai_rules),
        ("DELETE", "/_sim/ai", reset_ai),
        ("GET", "/_sim/ai/requests", ai_requests),
        ("*", "/_sim/{tail:.*}", not_found),
    ]
    return [web.route(method, path, _endpoint(handler)) for method, path, handler in table]
