"""The MTOP gateway, passport and image upload over HTTP (PROTOCOL.md §2-§5, §19.3-§19.6).

Every MTOP call passes the same gate, in the platform's order: the login (a known `unb` with its current `cookie2`),
the injected faults, the `_m_h5_tk` (missing or stale: "令牌过期" plus Set-Cookie of the current one, which is how
a client recovers), then the sign over the raw `data` string. Only then is the API looked up. Failures are HTTP 200
with a `ret` saying why, as on the platform.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from typing import Any

import orjson
from aiohttp import web

from ..protocol import InvalidCookie, OrderStatus, mtop_token, now_ms, parse_cookie, sign
from ..protocol.mtop import API_CONFIRM_SHIPMENT, API_ITEM_DETAIL, API_TOKEN, IM_APP_KEY, SUCCESS_MARK
from .faults import FaultKind, FaultTable, slow_delay
from .options import Options
from .responses import json_response
from .world import H5Check, Seller, Shipment, World

API_ITEM_LIST = "mtop.idle.web.xyh.item.list"
API_FREE_SHIPPING = "mtop.idle.groupon.activity.seller.freeshipping"

SESSION_EXPIRED = "FAIL_SYS_SESSION_EXPIRED::Session过期"
TOKEN_EMPTY = "FAIL_SYS_TOKEN_EMPTY::令牌为空"
TOKEN_EXPIRED = "FAIL_SYS_TOKEN_EXOIRED::令牌过期"  # sic: the platform's spelling (PROTOCOL §3.3)
ILLEGAL_SIGN = "FAIL_SYS_ILLEGAL_ACCESS::非法请求"
PARAM_ERROR = "FAIL_BIZ_PARAM_ERROR::参数错误"
API_NOT_FOUND = "FAIL_SYS_API_NOT_FOUNDED::请求API不存在"
RISK_CONTROL = ("FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::SM::哎哟喂,被挤爆啦,请稍后重试")
ITEM_NOT_FOUND = "FAIL_BIZ_ITEM_NOT_EXIST::宝贝不存在"
ORDER_NOT_FOUND = "FAIL_BIZ_ORDER_NOT_EXIST::订单不存在"
ORDER_STATUS_ERROR = "FAIL_BIZ_ORDER_STATUS_ERROR::订单状态不允许发货"

# An API handler: (seller, parsed data) -> (ret, data).
_Api = Callable[[Seller, dict[str, Any]], tuple[list[str], dict[str, Any]]]


def _cookies(request: web.Request) -> dict[str, str]:
    try:
        return parse_cookie("; ".join(request.headers.getall("Cookie", [])))
    except InvalidCookie:
        return {}


class MtopGateway:
    """`POST /h5/<api>/1.0/`, `POST /newlogin/hasLogin.do`, `POST /api/upload.api` and their support pages."""

    def __init__(self, *, world: World, faults: FaultTable, options: Options) -> None:
        self._world = world
        self._faults = faults
        self._options = options
        self._apis: dict[str, _Api] = {
            API_TOKEN: self._token,
            API_ITEM_DETAIL: self._item_detail,
            API_CONFIRM_SHIPMENT: self._confirm_shipment,
            API_ITEM_LIST: self._item_list,
            API_FREE_SHIPPING: lambda seller, data: ([SUCCESS_MARK], {}),
        }

    async def _slow(self, seller: str | None) -> None:
        delay = slow_delay(self._faults, seller, self._options.slow_delay)
        if delay:
            await asyncio.sleep(delay)

    # --- MTOP --------------------------------------------------------------------------------------------------

    async def mtop(self, request: web.Request) -> web.Response:
        api = request.match_info["api"]
        cookies = _cookies(request)
        seller = self._world.check_session(cookies)
        await self._slow(seller.unb if seller else None)
        form = await request.post() if request.method == "POST" else {}
        raw = form.get("data", request.query.get("data", ""))
        data = raw if isinstance(raw, str) else ""
        if seller is None or self._faults.active(FaultKind.SESSION_EXPIRED, seller.unb):
            return _envelope(api, [SESSION_EXPIRED])
        if self._faults.active(FaultKind.RISK_CONTROL, seller.unb):
            return _envelope(api, list(RISK_CONTROL), {"url": _captcha_url(request, api)})
        presented = mtop_token(cookies)
        check = self._world.check_h5_token(seller, presented)
        if check is not H5Check.OK:
            failure = TOKEN_EMPTY if check is H5Check.EMPTY else TOKEN_EXPIRED
            return _envelope(api, [failure], set_cookies=self._world.h5_set_cookies(seller))
        if self._options.verify_sign and not _sign_ok(request.query, presented, data):
            return _envelope(api, [ILLEGAL_SIGN])
        handler = self._apis.get(api)
        if handler is None:
            return _envelope(api, [API_NOT_FOUND])
        try:
            parsed = orjson.loads(data)
        except orjson.JSONDecodeError:
            parsed = None
        if not isinstance(parsed, dict):
            return _envelope(api, [PARAM_ERROR])
        ret, answer = handler(seller, parsed)
        return _envelope(api, ret, answer)

    def _token(self, seller: Seller, data: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        device_id = data.get("deviceId")
        if data.get("appKey") != IM_APP_KEY or not isinstance(device_id, str) or not device_id:
            return [PARAM_ERROR], {}
        token = self._world.issue_token(seller, device_id)
        answer = {
            "accessToken": token.token,
            "accessTokenExpiredTime": str(self._world.token_ttl_ms),
            "refreshToken": self._world.new_message_id(),
        }
        return [SUCCESS_MARK], answer

    def _item_detail(self, seller: Seller, data: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        item = self._world.items.get(str(data.get("itemId", "")))
        if item is None:
            return [ITEM_NOT_FOUND], {}
        owner = self._world.sellers[item.seller]
        sku = {"price": item.price_cents, "quantity": item.quantity, "propertyList": [{"valueText": "默认"}]}
        item_do = {
            "itemId": item.item_id,
            "title": item.title,
            "desc": item.desc,
            "soldPrice": item.price,
            "quantity": item.quantity,
            "skuList": [sku],
        }
        return [SUCCESS_MARK], {"itemDO": item_do, "sellerDO": {"sellerId": owner.unb, "nick": owner.nick}}

    def _confirm_shipment(self, seller: Seller, data: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        order_id = str(data.get("orderId", ""))
        order = self._world.orders.get(order_id)
        if order is None or order.seller != seller.unb:
            self._world.record_shipment(Shipment(seller.unb, order_id, False, "no such order", now_ms()))
            return [ORDER_NOT_FOUND], {}
        if order.status not in (OrderStatus.PAID, OrderStatus.SHIPPED):
            reason = f"order is {order.status.value}"
            self._world.record_shipment(Shipment(seller.unb, order_id, False, reason, now_ms()))
            return [ORDER_STATUS_ERROR], {}
        self._world.set_order(seller, status=OrderStatus.SHIPPED, order_id=order_id)
        self._world.record_shipment(Shipment(seller.unb, order_id, True, None, now_ms()))
        return [SUCCESS_MARK], {"orderId": order_id}

    def _item_list(self, seller: Seller, data: dict[str, Any]) -> tuple[list[str], dict[str, Any]]:
        page = data.get("pageNumber", 1)
        size = data.get("pageSize", 20)
        if not (isinstance(page, int) and isinstance(size, int) and page >= 1 and 1 <= size <= 100):
            return [PARAM_ERROR], {}
        items = [self._world.items[i] for i in seller.items][(page - 1) * size : page * size]
        cards = [
            {
                "cardType": 1003,
                "cardData": {
                    "id": item.item_id,
                    "title": item.title,
                    "priceInfo": {"price": item.price, "preText": "¥"},
                    "itemStatus": 0,
                    "detailUrl": f"fleamarket://item?id={item.item_id}",
                },
            }
            for item in items
        ]
        return [SUCCESS_MARK], {"cardList": cards, "nextPage": page * size < len(seller.items)}

    # --- passport, upload, captcha ------------------------------------------------------------------------------

    async def has_login(self, request: web.Request) -> web.Response:
        """`hasLogin.do` (§4.1): is the cookie's login alive? (`session_expired` says no.)"""
        seller = self._world.check_session(_cookies(request))
        await self._slow(seller.unb if seller else None)
        await request.post()
        alive = seller is not None and not self._faults.active(FaultKind.SESSION_EXPIRED, seller.unb)
        content = {"success": alive, "status": 0 if alive else -1, "data": {} if alive else {"titleMsg": "登录已失效"}}
        return json_response({"content": content, "hasError": False})

    async def upload(self, request: web.Request) -> web.Response:
        """Image upload (§5.5): multipart field `file` -> `{"object": {"url"}}`; the URL serves the image back."""
        seller = self._world.check_session(_cookies(request))
        await self._slow(seller.unb if seller else None)
        if seller is None:
            return json_response({"success": False, "message": "not logged in"}, status=401)
        form = await request.post()
        file = form.get("file")
        if isinstance(file, web.FileField):
            data, content_type = file.file.read(), file.content_type
        elif isinstance(file, str | bytes) and file:
            data, content_type = (file.encode() if isinstance(file, str) else file), "application/octet-stream"
        else:
            return json_response({"success": False, "message": "multipart field `file` is missing"}, status=400)
        upload = self._world.add_upload(seller, data, content_type)
        url = f"{request.url.origin()}/_sim/images/{upload.name}"
        return json_response({"success": True, "object": {"url": url, "fileName": upload.name, "size": upload.size}})

    async def image(self, request: web.Request) -> web.Response:
        found = self._world.upload(request.match_info["name"])
        if found is None:
            raise web.HTTPNotFound(text="no such image")
        upload, data = found
        return web.Response(body=data, content_type=upload.content_type)

    async def captcha(self, request: web.Request) -> web.Response:
        """The page a risk-control `data.url` points at; nothing to solve: clear the fault to let the seller in."""
        page = "<html><body><h1>Simulated captcha</h1><p>Clear the risk_control fault to continue.</p></body></html>"
        return web.Response(text=page, content_type="text/html")


def _sign_ok(query: Mapping[str, str], token: str, data: str) -> bool:
    t = query.get("t", "")
    return bool(t) and query.get("sign", "").lower() == sign(token, t, data)


def _captcha_url(request: web.Request, api: str) -> str:
    secret = sign("x5sec", str(now_ms()), api)
    return (
        f"{request.url.origin()}/h5/{api}/1.0/_____tmd_____/punish"
        f"?x5secdata={secret}&x5step=2&action=captcha&pureCaptcha="
    )


def _envelope(
    api: str, ret: list[str], data: dict[str, Any] | None = None, *, set_cookies: list[str] | None = None
) -> web.Response:
    response = json_response({"api": api, "data": data or {}, "ret": ret, "v": "1.0"})
    for value in set_cookies or ():
        response.headers.add("Set-Cookie", value)
    return response
