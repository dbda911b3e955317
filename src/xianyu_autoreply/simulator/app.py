"""`Simulator`: the whole local platform on one port, and the in-process API that tests and benchmarks drive.

One aiohttp application serves the IM WebSocket at `/`, MTOP under `/h5/`, passport, image upload, an
OpenAI-compatible endpoint under `/v1/` and the control API under `/_sim/`. The control API is a thin JSON shell
around the methods of this class, so a test in the same process can call them directly and get the same answers
(plain dicts, as the control API serialises them). Methods that change the world are synchronous: frames they
push are queued in order and written by the event loop right after; `await sim.drain()` waits for that.
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, fields
from types import TracebackType
from typing import Any, Self

from aiohttp import web

from ..protocol import OrderStatus, encode_system_notice, encode_typing, now_ms
from ..protocol.notices import TEXT_BY_ORDER_STATUS
from . import control
from .ai import AiBackend, AiRule
from .faults import EVENT_KINDS, ONCE_ONLY, Fault, FaultKind, FaultTable
from .im import Hub, ImServer
from .load import LoadRun, run_load
from .mtop import MtopGateway
from .options import Options
from .pushes import chat_payload, order_payload
from .responses import json_response
from .site import LoopbackSite, http_url
from .world import Seller, World, WorldError

ORDER_STATUSES = tuple(status.value for status in TEXT_BY_ORDER_STATUS)  # the statuses an order card exists for
_CLOSE_CODES = frozenset({1000, 1001, 1002, 1003, *range(1007, 1015), *range(3000, 5000)})
_MAX_BODY = 16 * 1024 * 1024  # image uploads


@dataclass(frozen=True, slots=True)
class MessageSpec:
    """One message to push: the fields of `POST /_sim/messages` without `seller`."""

    text: str
    buyer: str | None = None
    buyer_nick: str | None = None
    item_id: str | None = None
    chat_id: str | None = None
    message_id: str | None = None
    created_ms: int | None = None
    from_seller: bool = False  # the seller typed it elsewhere (a SellerMessage that is not our echo)

    @classmethod
    def of(cls, value: MessageSpec | Mapping[str, Any]) -> MessageSpec:
        if isinstance(value, MessageSpec):
            return value
        unknown = set(value) - {f.name for f in fields(cls)}
        if unknown:
            raise WorldError(f"unknown message fields: {', '.join(sorted(unknown))}")
        if not isinstance(value.get("text"), str):
            raise WorldError("a message needs a `text` string")
        return cls(**value)


class Simulator:
    """The platform on loopback. `await start()`, drive it, `await stop()`; or `async with Simulator() as sim`."""

    def __init__(
        self,
        *,
        echo_sends: bool = True,
        verify_sign: bool = True,
        idle_timeout: float | None = 300.0,
        slow_delay: float = 1.0,
        compress: bool = False,
        token_ttl: float = 86_400.0,
        seed: int | None = None,
        redeliver_unacked: bool = True,
    ) -> None:
        self.options = Options(
            redeliver_unacked=redeliver_unacked,
            echo_sends=echo_sends,
            verify_sign=verify_sign,
            slow_delay=slow_delay,
            idle_timeout=idle_timeout,
            compress=compress,
        )
        self.world = World(seed=seed, token_ttl_ms=int(token_ttl * 1000))
        self.faults = FaultTable()
        self.hub = Hub(self.options)
        self.ai = AiBackend()
        self._im = ImServer(world=self.world, hub=self.hub, faults=self.faults, options=self.options)
        self._mtop = MtopGateway(world=self.world, faults=self.faults, options=self.options)
        self._runner: web.AppRunner | None = None
        self._sweeper: asyncio.Task[None] | None = None
        self._load: tuple[LoadRun, asyncio.Task[None]] | None = None
        self._url: str | None = None
        self._port: int | None = None

    # --- lifecycle ---------------------------------------------------------------------------------------------

    def _app(self) -> web.Application:
        app = web.Application(client_max_size=_MAX_BODY)
        app.router.add_get("/", self._root)
        for path in ("/h5/{api}/1.0/", "/h5/{api}/1.0"):
            app.router.add_route("POST", path, self._mtop.mtop)
            app.router.add_route("GET", path, self._mtop.mtop)
        app.router.add_get("/h5/{api}/1.0/_____tmd_____/punish", self._mtop.captcha)
        app.router.add_post("/newlogin/hasLogin.do", self._mtop.has_login)
        app.router.add_post("/api/upload.api", self._mtop.upload)
        app.router.add_get("/_sim/images/{name}", self._mtop.image)
        app.router.add_post("/v1/chat/completions", self.ai.chat_completions)
        app.router.add_get("/v1/models", self.ai.models)
        app.add_routes(control.routes(self))
        return app

    async def start(self, host: str = "127.0.0.1", port: int = 0, *, ssl_context: ssl.SSLContext | None = None) -> None:
        """Listen on `host:port` (0 = a free port); the URLs are known once this returns.

        With a server `ssl_context` every URL is `https://` / `wss://`, as the real platform's: for the client's
        TLS path (one verified context shared by every connection, platform/session.py).
        """
        if self._runner is not None:
            raise RuntimeError("the simulator is already running")
        runner = web.AppRunner(self._app(), access_log=None, handle_signals=False, shutdown_timeout=2.0)
        await runner.setup()
        site = LoopbackSite(runner, host, port, ssl_context=ssl_context)
        try:
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self._url, self._port = http_url(host, site.port, tls=ssl_context is not None), site.port
        self._sweeper = asyncio.get_running_loop().create_task(self._im.sweep_idle())

    async def stop(self) -> None:
        """Close every connection (1001) and stop listening; safe to call twice."""
        self.stop_load()
        runner, self._runner = self._runner, None
        if runner is None:
            return
        if self._sweeper is not None:
            self._sweeper.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._sweeper
        await self.hub.shutdown(timeout=self.options.close_timeout)
        await runner.cleanup()

    async def __aenter__(self) -> Self:
        await self.start()
        return self

    async def __aexit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self.stop()

    async def drain(self) -> None:
        """Wait until every frame pushed so far is written to its socket (and background closes are done)."""
        await self.hub.drain()

    async def _root(self, request: web.Request) -> web.StreamResponse:
        if request.headers.get("Upgrade", "").lower() == "websocket":
            return await self._im.handle(request)
        return json_response({"simulator": "xianyu-autoreply", **self.urls()})

    # --- URLs --------------------------------------------------------------------------------------------------

    @property
    def base_url(self) -> str:
        """`http://host:port` (no trailing slash)."""
        if self._url is None:
            raise RuntimeError("the simulator is not running; await start() first")
        return self._url

    @property
    def port(self) -> int:
        if self._port is None:
            raise RuntimeError("the simulator is not running; await start() first")
        return self._port

    @property
    def ws_url(self) -> str:
        return "ws" + self.base_url.removeprefix("http") + "/"  # http -> ws, https -> wss

    @property
    def mtop_url(self) -> str:
        return f"{self.base_url}/h5/"

    @property
    def passport_url(self) -> str:
        return f"{self.base_url}/"

    @property
    def openai_url(self) -> str:
        return f"{self.base_url}/v1"

    @property
    def control_url(self) -> str:
        return f"{self.base_url}/_sim/"

    def urls(self) -> dict[str, str]:
        return {
            "ws_url": self.ws_url,
            "mtop_url": self.mtop_url,
            "passport_url": self.passport_url,
            "openai_url": self.openai_url,
            "control_url": self.control_url,
        }

    # --- world -------------------------------------------------------------------------------------------------

    def create_seller(
        self, *, unb: str | None = None, nick: str | None = None, cookie: str | None = None
    ) -> dict[str, Any]:
        """A seller and a cookie the simulator accepts -> `{"unb", "nick", "cookie"}`; an existing `unb` is reused."""
        return self.world.add_seller(unb=unb, nick=nick, cookie=cookie).to_json()

    def sellers(self) -> list[dict[str, Any]]:
        return [seller.to_json() for seller in self.world.sellers.values()]

    def create_item(
        self,
        seller: str,
        *,
        title: str,
        price: str | int | float,
        item_id: str | None = None,
        desc: str | None = None,
        quantity: int = 1,
    ) -> dict[str, Any]:
        """An item of the seller (ids of >= 10 digits) -> the item."""
        owner = self.world.seller(seller)
        return self.world.add_item(
            owner, title=title, price=price, item_id=item_id, desc=desc, quantity=quantity
        ).to_json()

    def items(self, seller: str | None = None) -> list[dict[str, Any]]:
        self._check(seller)
        return [i.to_json() for i in self.world.items.values() if seller is None or i.seller == seller]

    def chats(self, seller: str | None = None) -> list[dict[str, Any]]:
        self._check(seller)
        return [c.to_json() for c in self.world.chats.values() if seller is None or c.seller == seller]

    def orders(self, seller: str | None = None) -> list[dict[str, Any]]:
        self._check(seller)
        return [o.to_json() for o in self.world.orders.values() if seller is None or o.seller == seller]

    def _check(self, seller: str | None) -> None:
        if seller is not None:
            self.world.seller(seller)

    # --- pushes ------------------------------------------------------------------------------------------------

    def _message(self, seller: Seller, spec: MessageSpec) -> tuple[str, dict[str, Any]]:
        if not spec.text:
            raise WorldError("text must not be empty")
        if spec.chat_id is not None:
            chat = self.world.chat_of(seller, spec.chat_id)
            if spec.buyer is not None and spec.buyer != chat.buyer:
                raise WorldError(f"chat {chat.chat_id} is with buyer {chat.buyer}, not {spec.buyer}")
            if spec.item_id is not None and spec.item_id != chat.item_id:
                raise WorldError(f"chat {chat.chat_id} is about item {chat.item_id}, not {spec.item_id}")
            buyer = self.world.buyer(chat.buyer, spec.buyer_nick)
        else:
            buyer = self.world.buyer(spec.buyer, spec.buyer_nick)
            chat = self.world.chat_for(seller, buyer, self.world.item_of(seller, spec.item_id))
        message_id = spec.message_id or self.world.new_message_id()
        if spec.from_seller:
            sender, nick, receiver = seller.unb, seller.nick, buyer.uid
        else:
            sender, nick, receiver = buyer.uid, buyer.nick, seller.unb
        payload = chat_payload(
            chat,
            sender=sender,
            sender_nick=nick,
            receiver=receiver,
            text=spec.text,
            message_id=message_id,
            created_ms=spec.created_ms if spec.created_ms is not None else now_ms(),
        )
        return payload, {"message_id": message_id, "chat_id": chat.chat_id, "buyer": buyer.uid, "item_id": chat.item_id}

    def push_message(
        self,
        seller: str,
        text: str,
        *,
        buyer: str | None = None,
        buyer_nick: str | None = None,
        item_id: str | None = None,
        chat_id: str | None = None,
        message_id: str | None = None,
        created_ms: int | None = None,
        from_seller: bool = False,
    ) -> dict[str, Any]:
        """Push one chat message now -> `{"message_id", "chat_id", "buyer", "item_id", "delivered"}`.

        Without `buyer` or `chat_id` a new buyer writes; without `item_id` the seller's first item is meant.
        `delivered` counts the registered connections the push went to (0: nobody is online to receive it).
        """
        spec = MessageSpec(text, buyer, buyer_nick, item_id, chat_id, message_id, created_ms, from_seller)
        return self.push_messages(seller, [spec])[0]

    def push_messages(self, seller: str, messages: Sequence[MessageSpec | Mapping[str, Any]]) -> list[dict[str, Any]]:
        """Push several messages in ONE sync package (one frame, one `data[]` item each); nothing is pushed on error."""
        owner = self.world.seller(seller)
        if not messages:
            raise WorldError("no messages to push")
        specs = [MessageSpec.of(m) for m in messages]
        built = [self._message(owner, spec) for spec in specs]
        delivered = self.hub.push(owner.unb, [payload for payload, _ in built])
        if delivered:
            for spec, (_, info) in zip(specs, built, strict=True):
                if not spec.from_seller:
                    self.hub.latency.pushed(info["chat_id"])
        return [{**info, "delivered": delivered} for _, info in built]

    def start_load(self, *, rate: float, seconds: float, sellers: Sequence[str] | None = None) -> dict[str, Any]:
        """Push `rate` buyer messages a second for `seconds`, each to a new chat of the next seller in turn."""
        if not 0 < rate <= 100_000 or not 0 < seconds <= 86_400:
            raise WorldError("rate must be in (0, 100000] and seconds in (0, 86400]")
        chosen = list(sellers) if sellers else [unb for unb in self.world.sellers if self.hub.registered_of(unb)]
        if not chosen:
            raise WorldError("no seller to send load to (none given and none connected)")
        for unb in chosen:
            self.world.seller(unb)
        self.stop_load()
        run = LoadRun(rate=rate, seconds=seconds, sellers=chosen)

        def push(seller: str, text: str) -> int:
            return int(self.push_message(seller, text)["delivered"])

        self._load = (run, asyncio.get_running_loop().create_task(run_load(run, push)))
        return run.to_json()

    def load_status(self) -> dict[str, Any] | None:
        return self._load[0].to_json() if self._load is not None else None

    def stop_load(self) -> None:
        if self._load is not None:
            self._load[1].cancel()
            self._load = None

    def reply_latencies(self, *, reset: bool = False) -> list[float]:
        """Milliseconds from pushing a buyer message to receiving the first send into its chat (one clock)."""
        return self.hub.latency.samples(reset=reset)

    def ack_latencies(self, *, reset: bool = False) -> list[float]:
        """Milliseconds from queueing a push to receiving its ACK (every push, one clock)."""
        return self.hub.latency.ack_samples(reset=reset)

    def push_order(
        self,
        seller: str,
        *,
        status: str,
        buyer: str | None = None,
        item_id: str | None = None,
        order_id: str | None = None,
    ) -> dict[str, Any]:
        """Create an order (or move `order_id` on) and push the buyer's order card for `status`."""
        owner = self.world.seller(seller)
        if status not in ORDER_STATUSES:
            raise WorldError(f"status must be one of {', '.join(ORDER_STATUSES)}, got {status!r}")
        new = order_id is None or order_id not in self.world.orders
        who = self.world.buyer(buyer) if buyer is not None or new else None
        item = self.world.item_of(owner, item_id) if item_id is not None else None
        order = self.world.set_order(owner, status=OrderStatus(status), buyer=who, item=item, order_id=order_id)
        message_id = self.world.new_message_id()
        payload = order_payload(order, buyer=self.world.buyers[order.buyer], message_id=message_id, created_ms=now_ms())
        delivered = self.hub.push(owner.unb, [payload])
        return {**order.to_json(), "message_id": message_id, "delivered": delivered}

    def push_typing(self, seller: str, *, chat_id: str) -> int:
        """Push "the buyer is typing" for a chat; returns the connections reached."""
        owner = self.world.seller(seller)
        chat = self.world.chat_of(owner, chat_id)
        return self.hub.push(owner.unb, [encode_typing(user_id=chat.buyer, chat_id=chat.chat_id)])

    def push_notice(self, seller: str, text: str) -> int:
        """Push a plain-JSON platform notice (`chatType`, never to be answered); returns the connections reached."""
        owner = self.world.seller(seller)
        return self.hub.push(owner.unb, [encode_system_notice(text)])

    def push_raw(self, seller: str, payloads: Sequence[str]) -> int:
        """Push any base64 payloads as one sync package (e.g. built with `protocol.encode_payload`)."""
        owner = self.world.seller(seller)
        if not payloads or not all(isinstance(p, str) for p in payloads):
            raise WorldError("payloads must be a non-empty list of base64 strings")
        return self.hub.push(owner.unb, list(payloads))

    # --- records -----------------------------------------------------------------------------------------------

    def sent(self, seller: str | None = None, chat_id: str | None = None) -> list[dict[str, Any]]:
        """Accepted sends: `[{"chat_id", "to", "text", "content_type", "uuid", "at_ms", ...}]`, oldest first."""
        self._check(seller)
        return [m.to_json() for m in self.world.sent(seller, chat_id)]

    def rejected(self, seller: str | None = None) -> list[dict[str, Any]]:
        """Send frames answered with an error, and why."""
        self._check(seller)
        return [r.to_json() for r in self.world.rejected(seller)]

    def connections(self, seller: str | None = None) -> list[dict[str, Any]]:
        """`[{"did", "registered", "heartbeats", "acks", "opened_ms", "closed_ms", ...}]`, live and recently closed."""
        self._check(seller)
        return self.hub.records(seller)

    def shipments(self, seller: str | None = None) -> list[dict[str, Any]]:
        """Confirm-shipment calls received, successful or not."""
        self._check(seller)
        return [s.to_json() for s in self.world.shipments(seller)]

    def uploads(self, seller: str | None = None) -> list[dict[str, Any]]:
        self._check(seller)
        return [u.to_json() for u in self.world.uploads(seller)]

    def stats(self) -> dict[str, int]:
        """Counters, cheap enough to poll from a benchmark."""
        return {
            "sellers": len(self.world.sellers),
            "buyers": len(self.world.buyers),
            "items": len(self.world.items),
            "chats": len(self.world.chats),
            "orders": len(self.world.orders),
            "connections": len(self.hub.live()),
            "registered": self.hub.registered_count,
            "frames_pushed": self.hub.frames_pushed,
            "redelivered": self.hub.redelivered,
            "sent": self.world.sent_total,
            "faults": len(self.faults.listing()),
        }

    # --- faults and switches -----------------------------------------------------------------------------------

    def set_fault(
        self,
        kind: str,
        *,
        seller: str | None = None,
        seconds: float | None = None,
        code: int | None = None,
        delay: float | None = None,
    ) -> dict[str, Any]:
        """Inject a fault for one seller or all, for `seconds` or until cleared (see `faults.py` and the README)."""
        try:
            fault_kind = FaultKind(kind)
        except ValueError:
            raise WorldError(f"kind must be one of {', '.join(k.value for k in FaultKind)}, got {kind!r}") from None
        self._check(seller)
        if seconds is not None and not seconds > 0:
            raise WorldError("seconds must be positive")
        if seconds is not None and fault_kind in ONCE_ONLY:
            raise WorldError(f"{fault_kind.value} acts once; it takes no seconds")
        if code is not None and (fault_kind is not FaultKind.CLOSE or code not in _CLOSE_CODES):
            raise WorldError("code is for kind close only: 1000-1003, 1007-1014 or 3000-4999")
        if delay is not None and (fault_kind is not FaultKind.SLOW or not 0 <= delay <= 600):
            raise WorldError("delay is for kind slow only: 0-600 seconds")
        until = time.monotonic() + seconds if seconds is not None else None
        fault = Fault(fault_kind, seller, until, code, delay)
        affected = self._act(fault) if fault_kind in EVENT_KINDS else 0
        lasting = fault_kind not in EVENT_KINDS or seconds is not None
        if lasting:
            self.faults.add(fault)
        return {**fault.to_json(), "affected": affected, "lasting": lasting}

    def _act(self, fault: Fault) -> int:
        """Apply an event fault to the live connections it names; how many it hit."""
        conns = self.hub.live(fault.seller)
        match fault.kind:
            case FaultKind.DROP:
                for conn in conns:
                    self.hub.abort(conn)
            case FaultKind.CLOSE:
                for conn in conns:
                    self.hub.close(conn, fault.code or 1000, "simulated fault")
            case FaultKind.GARBAGE:
                conns = [c for c in conns if c.registered]
                for conn in conns:
                    self.hub.garbage(conn)
            case FaultKind.EXPIRE_TOKEN:
                sellers = [self.world.seller(fault.seller)] if fault.seller else list(self.world.sellers.values())
                for seller in sellers:
                    self.world.revoke_tokens(seller)
                    self.world.rotate_h5_token(seller)
                for conn in conns:
                    self.hub.close(conn, 1008, "token expired")
        return len(conns)

    def clear_faults(self, seller: str | None = None) -> int:
        """End every fault (or one seller's); returns how many were in force."""
        return self.faults.clear(seller)

    def active_faults(self) -> list[dict[str, Any]]:
        return [f.to_json() for f in self.faults.listing()]

    def set_echo(self, enabled: bool, *, seller: str | None = None) -> dict[str, Any]:
        """Switch the echo of accepted sends, for everyone or for one seller (a seller's own setting wins)."""
        if seller is None:
            self.options.echo_sends = enabled
        else:
            self.world.seller(seller).echo = enabled
        return {"enabled": enabled, "seller": seller}

    # --- AI endpoint -------------------------------------------------------------------------------------------

    def set_ai(
        self,
        *,
        reply: str | None = None,
        delay: float = 0.0,
        status: int = 200,
        api_key: str | None = None,
        model: str | None = None,
    ) -> dict[str, Any]:
        """How `/v1/chat/completions` answers requests with this key/model (None = any): text, delay, HTTP status."""
        if not 0 <= delay <= 600:
            raise WorldError("delay must be 0-600 seconds")
        if not 200 <= status <= 599:
            raise WorldError("status must be an HTTP status 200-599")
        return self.ai.configure(AiRule(api_key, model, reply, delay, status)).to_json()

    def ai_requests(self, *, api_key: str | None = None, model: str | None = None) -> list[dict[str, Any]]:
        """Chat-completion requests received, oldest first, with the messages the client sent."""
        return [r.to_json() for r in self.ai.requests(api_key=api_key, model=model)]

    def reset_ai(self) -> None:
        self.ai.reset()
