"""The simulated platform's world: sellers with their cookies and tokens, buyers, items, chats, orders, records.

Pure state, no I/O. Ids have the platform's shapes (digit strings of the usual lengths, 32-hex message ids) and are
drawn at random, so a restarted simulator never reuses a message id a client may have stored as answered; pass a
`seed` for reproducible runs. What sellers send, the shipments they confirm and the images they upload are kept
in bounded logs so a long demo does not grow without end.
"""

from __future__ import annotations

import enum
import random
import re
from collections import OrderedDict, deque
from collections.abc import Container
from dataclasses import asdict, dataclass, field, replace
from decimal import Decimal, InvalidOperation
from typing import Any

from ..protocol import InvalidCookie, OrderStatus, now_ms, parse_cookie, render_cookie

DAY_MS = 86_400_000
_TOKENS_PER_SELLER = 16  # older access tokens of a seller are forgotten (a client refreshes hourly)
_SENT_PER_SELLER = 10_000
_LOG_LIMIT = 10_000
_UPLOAD_LIMIT = 200
_H5_TK = re.compile(r"^[0-9a-f]{32}_\d+$")


class WorldError(ValueError):
    """A request that refers to something the world does not have, or that would make it inconsistent."""


class UnknownSeller(WorldError):
    """No seller with this `unb`."""


class H5Check(enum.Enum):
    """How the `_m_h5_tk` a request was signed with compares with the seller's current one."""

    OK = "ok"
    EMPTY = "empty"  # no _m_h5_tk cookie at all
    STALE = "stale"  # an older or foreign one, or the current one has expired


@dataclass(frozen=True, slots=True)
class Buyer:
    uid: str
    nick: str


@dataclass(frozen=True, slots=True)
class Item:
    item_id: str
    seller: str
    title: str
    price: str  # yuan with two decimals, as the platform shows it
    desc: str
    quantity: int

    @property
    def price_cents(self) -> int:
        return int(Decimal(self.price) * 100)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Chat:
    chat_id: str
    seller: str
    buyer: str
    item_id: str

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Order:
    order_id: str
    seller: str
    buyer: str
    item_id: str
    chat_id: str
    status: OrderStatus
    updated_ms: int

    def to_json(self) -> dict[str, Any]:
        return {**asdict(self), "status": self.status.value}


@dataclass(frozen=True, slots=True)
class AccessToken:
    token: str
    unb: str
    did: str
    expires_ms: int


@dataclass(frozen=True, slots=True)
class SentMessage:
    """A message a seller's client sent that the platform accepted."""

    seller: str
    chat_id: str
    to: str
    text: str | None
    image_url: str | None
    content_type: int
    uuid: str
    message_id: str
    at_ms: int
    connection: int | None = None  # the id of the connection it came on (`/_sim/connections`)

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class RejectedSend:
    """A send frame the platform refused, with the reason it answered."""

    seller: str
    reason: str
    at_ms: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Shipment:
    """A confirm-shipment call and whether it succeeded."""

    seller: str
    order_id: str
    ok: bool
    reason: str | None
    at_ms: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(frozen=True, slots=True)
class Upload:
    seller: str
    name: str
    size: int
    content_type: str
    at_ms: int

    def to_json(self) -> dict[str, Any]:
        return asdict(self)


@dataclass(slots=True)
class Seller:
    """A seller account: its identity, the cookie jar the platform would accept, and its live access tokens."""

    unb: str
    nick: str
    cookies: dict[str, str]
    tokens: deque[str] = field(default_factory=lambda: deque(maxlen=_TOKENS_PER_SELLER))
    items: list[str] = field(default_factory=list)
    echo: bool | None = None  # None = the simulator-wide setting

    @property
    def cookie(self) -> str:
        return render_cookie(self.cookies)

    def to_json(self) -> dict[str, Any]:
        return {"unb": self.unb, "nick": self.nick, "cookie": self.cookie}


def normalize_price(value: str | int | float | Decimal) -> str:
    """A price in yuan as the platform writes it ("12.50"); raises WorldError for anything else."""
    try:
        price = Decimal(str(value).strip())
    except InvalidOperation as exc:
        raise WorldError(f"price must be a number of yuan, got {value!r}") from exc
    if not price.is_finite() or price < 0 or price > Decimal("100000000"):
        raise WorldError(f"price must be between 0 and 100000000 yuan, got {value!r}")
    return f"{price.quantize(Decimal('0.01'))}"


class World:
    """Everything the platform knows; every method is synchronous and cheap."""

    def __init__(self, *, seed: int | None = None, token_ttl_ms: int = DAY_MS, h5_ttl_ms: int = DAY_MS) -> None:
        self._rng = random.Random(seed)
        self.token_ttl_ms = token_ttl_ms
        self.h5_ttl_ms = h5_ttl_ms
        self.sellers: dict[str, Seller] = {}
        self.buyers: dict[str, Buyer] = {}
        self.items: dict[str, Item] = {}
        self.chats: dict[str, Chat] = {}
        self.orders: dict[str, Order] = {}
        self._chat_index: dict[tuple[str, str, str], str] = {}
        self._user_ids: set[str] = set()  # sellers and buyers share one id space
        self._tokens: dict[str, AccessToken] = {}
        self._sent: dict[str, deque[SentMessage]] = {}
        self._sent_total = 0
        self._rejected: deque[RejectedSend] = deque(maxlen=_LOG_LIMIT)
        self._shipments: deque[Shipment] = deque(maxlen=_LOG_LIMIT)
        self._uploads: OrderedDict[str, tuple[Upload, bytes]] = OrderedDict()

    # --- ids ---------------------------------------------------------------------------------------------------

    def _digits(self, length: int, taken: Container[str], *, first: str = "123456789") -> str:
        while True:
            candidate = self._rng.choice(first) + "".join(self._rng.choices("0123456789", k=length - 1))
            if candidate not in taken:
                return candidate

    def _hex(self, length: int) -> str:
        return f"{self._rng.getrandbits(4 * length):0{length}x}"

    def new_message_id(self) -> str:
        """A 32-hex message id, as in `reminderUrl` and `bizTag`."""
        return self._hex(32)

    def _new_user_id(self, *, first: str) -> str:
        uid = self._digits(13, self._user_ids, first=first)
        self._user_ids.add(uid)
        return uid

    # --- sellers and their credentials -------------------------------------------------------------------------

    def _h5_tk(self) -> str:
        return f"{self._hex(32)}_{now_ms() + self.h5_ttl_ms}"

    def _fresh_cookies(self, unb: str) -> dict[str, str]:
        return {
            "cna": "".join(self._rng.choices("ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789", k=24)),
            "t": self._hex(32),
            "cookie2": self._hex(32),
            "_m_h5_tk": self._h5_tk(),
            "_m_h5_tk_enc": self._hex(32),
            "XSRF-TOKEN": f"{self._hex(8)}-{self._hex(4)}-4{self._hex(3)}-a{self._hex(3)}-{self._hex(12)}",
            "sgcookie": "E100" + self._hex(60),
            "unb": unb,
        }

    def add_seller(self, *, unb: str | None = None, nick: str | None = None, cookie: str | None = None) -> Seller:
        """Create a seller, or return the existing one with this `unb` (renamed, and adopting `cookie` if given).

        A `cookie` lets a restarted simulator accept a client's stored cookie: its values are kept as they are.
        """
        given: dict[str, str] = {}
        if cookie is not None:
            try:
                given = parse_cookie(cookie)
            except InvalidCookie as exc:
                raise WorldError(f"cookie: {exc}") from exc
            if unb is not None and given["unb"] != unb:
                raise WorldError(f"cookie is for unb {given['unb']}, not {unb}")
            unb = given["unb"]
        if unb is not None and not (unb.isdigit() and 5 <= len(unb) <= 20):
            raise WorldError(f"unb must be 5-20 digits, got {unb!r}")
        if unb is not None and unb in self.buyers:
            raise WorldError(f"user {unb} is a buyer here")
        seller = self.sellers.get(unb) if unb is not None else None
        if seller is None:
            unb = unb or self._new_user_id(first="2")
            seller = Seller(unb=unb, nick=nick or f"卖家{unb[-4:]}", cookies=self._fresh_cookies(unb))
            self.sellers[unb] = seller
            self._user_ids.add(unb)
        elif nick:
            seller.nick = nick
        if given:
            if not _H5_TK.match(given.get("_m_h5_tk", "")):
                given.pop("_m_h5_tk", None)
            seller.cookies = {**seller.cookies, **given}
        return seller

    def seller(self, unb: str) -> Seller:
        try:
            return self.sellers[unb]
        except KeyError:
            raise UnknownSeller(f"unknown seller {unb!r}; create it with POST /_sim/sellers") from None

    def check_session(self, cookies: dict[str, str]) -> Seller | None:
        """The seller whose login this cookie carries (`unb` known and `cookie2` current), else None."""
        seller = self.sellers.get(cookies.get("unb", ""))
        if seller is None or cookies.get("cookie2") != seller.cookies.get("cookie2"):
            return None
        return seller

    def check_h5_token(self, seller: Seller, presented: str) -> H5Check:
        """Compare the signing token of a request with the seller's current `_m_h5_tk` (renewed when expired)."""
        current, _, expiry = seller.cookies["_m_h5_tk"].partition("_")
        if not expiry.isdigit() or int(expiry) <= now_ms():
            self.rotate_h5_token(seller)
            return H5Check.EMPTY if not presented else H5Check.STALE
        if not presented:
            return H5Check.EMPTY
        return H5Check.OK if presented == current else H5Check.STALE

    def rotate_h5_token(self, seller: Seller) -> None:
        """Issue a new `_m_h5_tk`/`_m_h5_tk_enc`: requests signed with the old one get "令牌过期" plus Set-Cookie."""
        seller.cookies["_m_h5_tk"] = self._h5_tk()
        seller.cookies["_m_h5_tk_enc"] = self._hex(32)

    def h5_set_cookies(self, seller: Seller) -> list[str]:
        """Set-Cookie of the current `_m_h5_tk` and `_m_h5_tk_enc`; host-only, so that any cookie jar keeps them."""
        max_age = self.h5_ttl_ms // 1000
        return [f"{name}={seller.cookies[name]}; Path=/; Max-Age={max_age}" for name in ("_m_h5_tk", "_m_h5_tk_enc")]

    def issue_token(self, seller: Seller, device_id: str) -> AccessToken:
        """A new IM access token bound to (unb, deviceId)."""
        if len(seller.tokens) == seller.tokens.maxlen:
            self._tokens.pop(seller.tokens[0], None)
        token = AccessToken(
            token=f"{self._hex(32)}{self._hex(32)}",
            unb=seller.unb,
            did=device_id,
            expires_ms=now_ms() + self.token_ttl_ms,
        )
        self._tokens[token.token] = token
        seller.tokens.append(token.token)
        return token

    def token_problem(self, token: str, *, unb: str, did: str) -> str | None:
        """Why `token` does not register (unb, did), or None when it does."""
        found = self._tokens.get(token) if token else None
        if found is None:
            return "unknown or revoked token"
        if found.unb != unb:
            return "token belongs to another user"
        if found.did != did:
            return "token was issued for another device id"
        if found.expires_ms <= now_ms():
            return "token expired"
        return None

    def revoke_tokens(self, seller: Seller) -> int:
        """Invalidate every access token of the seller; returns how many there were."""
        count = 0
        while seller.tokens:
            count += self._tokens.pop(seller.tokens.popleft(), None) is not None
        return count

    # --- buyers, items, chats, orders --------------------------------------------------------------------------

    def buyer(self, uid: str | None = None, nick: str | None = None) -> Buyer:
        """The buyer with this id (created on first use), or a new one."""
        if uid is not None and not (uid.isdigit() and 5 <= len(uid) <= 20):
            raise WorldError(f"buyer must be 5-20 digits, got {uid!r}")
        if uid is not None and uid in self.sellers:
            raise WorldError(f"user {uid} is a seller here")
        found = self.buyers.get(uid) if uid is not None else None
        if found is not None:
            if nick and nick != found.nick:
                found = self.buyers[found.uid] = replace(found, nick=nick)
            return found
        uid = uid or self._new_user_id(first="3")
        created = self.buyers[uid] = Buyer(uid, nick or f"买家{uid[-4:]}")
        self._user_ids.add(uid)
        return created

    def add_item(
        self,
        seller: Seller,
        *,
        title: str,
        price: str | int | float | Decimal,
        item_id: str | None = None,
        desc: str | None = None,
        quantity: int = 1,
    ) -> Item:
        """Create an item of the seller (or update it, when `item_id` is already the seller's)."""
        if not title.strip():
            raise WorldError("title must not be empty")
        if item_id is not None:
            if not (item_id.isdigit() and len(item_id) >= 10):
                raise WorldError(f"item_id must be at least 10 digits, got {item_id!r}")
            owner = self.items.get(item_id)
            if owner is not None and owner.seller != seller.unb:
                raise WorldError(f"item {item_id} belongs to seller {owner.seller}")
        if quantity < 0:
            raise WorldError("quantity must not be negative")
        item_id = item_id or self._digits(12, self.items)
        item = Item(item_id, seller.unb, title, normalize_price(price), desc if desc is not None else title, quantity)
        if item_id not in self.items:
            seller.items.append(item_id)
        self.items[item_id] = item
        return item

    def item_of(self, seller: Seller, item_id: str | None) -> Item:
        """The seller's item `item_id`; without one, the seller's first item (a default one is made if needed)."""
        if item_id is None:
            if not seller.items:
                return self.add_item(seller, title="闲置宝贝", price="10.00")
            return self.items[seller.items[0]]
        item = self.items.get(item_id)
        if item is None or item.seller != seller.unb:
            raise WorldError(f"item {item_id} is not an item of seller {seller.unb}; create it with POST /_sim/items")
        return item

    def chat_for(self, seller: Seller, buyer: Buyer, item: Item) -> Chat:
        """The one conversation of (seller, buyer, item), created on first use."""
        key = (seller.unb, buyer.uid, item.item_id)
        chat_id = self._chat_index.get(key)
        if chat_id is not None:
            return self.chats[chat_id]
        chat = Chat(self._digits(11, self.chats), seller.unb, buyer.uid, item.item_id)
        self.chats[chat.chat_id] = chat
        self._chat_index[key] = chat.chat_id
        return chat

    def chat_of(self, seller: Seller, chat_id: str) -> Chat:
        chat = self.chats.get(chat_id)
        if chat is None or chat.seller != seller.unb:
            raise WorldError(f"chat {chat_id} is not a chat of seller {seller.unb}")
        return chat

    def set_order(
        self,
        seller: Seller,
        *,
        status: OrderStatus,
        buyer: Buyer | None = None,
        item: Item | None = None,
        order_id: str | None = None,
    ) -> Order:
        """Create an order, or move an existing one (`order_id`) to `status`."""
        existing = self.orders.get(order_id) if order_id is not None else None
        if existing is not None:
            if existing.seller != seller.unb:
                raise WorldError(f"order {order_id} belongs to seller {existing.seller}")
            if buyer is not None and buyer.uid != existing.buyer:
                raise WorldError(f"order {order_id} is of buyer {existing.buyer}, not {buyer.uid}")
            if item is not None and item.item_id != existing.item_id:
                raise WorldError(f"order {order_id} is for item {existing.item_id}, not {item.item_id}")
            order = replace(existing, status=status, updated_ms=now_ms())
        else:
            if order_id is not None and not (order_id.isdigit() and len(order_id) >= 10):
                raise WorldError(f"order_id must be at least 10 digits, got {order_id!r}")
            if buyer is None:
                raise WorldError("a new order needs a buyer")
            item = item or self.item_of(seller, None)
            chat = self.chat_for(seller, buyer, item)
            order_id = order_id or self._digits(19, self.orders, first="4")
            order = Order(order_id, seller.unb, buyer.uid, item.item_id, chat.chat_id, status, now_ms())
        self.orders[order.order_id] = order
        return order

    # --- records -----------------------------------------------------------------------------------------------

    def record_sent(self, message: SentMessage) -> None:
        log = self._sent.get(message.seller)
        if log is None:
            log = self._sent[message.seller] = deque(maxlen=_SENT_PER_SELLER)
        log.append(message)
        self._sent_total += 1

    @property
    def sent_total(self) -> int:
        return self._sent_total

    def sent(self, seller: str | None = None, chat_id: str | None = None) -> list[SentMessage]:
        """Accepted sends, oldest first, optionally of one seller and/or one chat."""
        if seller is not None:
            found = list(self._sent.get(seller, ()))
        else:
            found = sorted((m for log in self._sent.values() for m in log), key=lambda m: m.at_ms)
        return [m for m in found if m.chat_id == chat_id] if chat_id is not None else found

    def record_rejected(self, rejected: RejectedSend) -> None:
        self._rejected.append(rejected)

    def rejected(self, seller: str | None = None) -> list[RejectedSend]:
        return [r for r in self._rejected if seller is None or r.seller == seller]

    def record_shipment(self, shipment: Shipment) -> None:
        self._shipments.append(shipment)

    def shipments(self, seller: str | None = None) -> list[Shipment]:
        return [s for s in self._shipments if seller is None or s.seller == seller]

    def add_upload(self, seller: Seller, data: bytes, content_type: str) -> Upload:
        upload = Upload(seller.unb, f"{self._hex(32)}.jpg", len(data), content_type, now_ms())
        self._uploads[upload.name] = (upload, data)
        while len(self._uploads) > _UPLOAD_LIMIT:
            self._uploads.popitem(last=False)
        return upload

    def upload(self, name: str) -> tuple[Upload, bytes] | None:
        return self._uploads.get(name)

    def uploads(self, seller: str | None = None) -> list[Upload]:
        return [u for u, _ in self._uploads.values() if seller is None or u.seller == seller]
