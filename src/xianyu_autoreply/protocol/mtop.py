"""MTOP gateway and passport calls as data (PROTOCOL.md §2-§5): requests to build, answers to classify.

Nothing here sends anything. `build_*` return an `HttpCall` (method, path, query, form, headers) that the I/O
layer sends to its configured base URL; `classify_mtop` and `classify_login_check` turn answers into outcomes.
"""

from __future__ import annotations

import enum
import hashlib
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import orjson

from .cookies import mtop_token, render_cookie
from .errors import MalformedMtopResponse

MTOP_APP_KEY = "34839810"
IM_APP_KEY = "444e9908a51d1cb236a27862abc769c9"
JSV = "2.7.2"
SUCCESS_MARK = "SUCCESS::调用成功"

API_TOKEN = "mtop.taobao.idlemessage.pc.login.token"
API_ITEM_DETAIL = "mtop.taobao.idle.pc.detail"
API_CONFIRM_SHIPMENT = "mtop.taobao.idle.logistic.consign.dummy"
LOGIN_CHECK_PATH = "newlogin/hasLogin.do"

USER_AGENT = (
    "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/133.0.0.0 Safari/537.36"
)
_BROWSER_HEADERS = {
    "accept": "application/json",
    "accept-language": "zh-CN,zh;q=0.9,en;q=0.8",
    "cache-control": "no-cache",
    "pragma": "no-cache",
    "content-type": "application/x-www-form-urlencoded",
    "origin": "https://www.goofish.com",
    "referer": "https://www.goofish.com/",
    "user-agent": USER_AGENT,
}

# ret markers (PROTOCOL §3.3), matched as substrings of any ret element.
_TOKEN_EXPIRED_MARKS = ("FAIL_SYS_TOKEN_EXOIRED", "FAIL_SYS_TOKEN_EXPIRED", "FAIL_SYS_TOKEN_EMPTY", "令牌过期")
_SESSION_EXPIRED_MARKS = ("FAIL_SYS_SESSION_EXPIRED", "Session过期", "FAIL_SYS_LOGIN")
_RISK_MARKS = (
    "FAIL_SYS_USER_VALIDATE",
    "RGV587_ERROR",
    "被挤爆啦",
    "挤爆了",
    "请稍后重试",
    "punish?x5secdata",
    "captcha",
)
_RISK_URL_MARKS = ("punish", "captcha", "validate")


def sign(token: str, t: str, data: str) -> str:
    """`md5(token & t & appKey & data)` in lowercase hex, over the exact `data` string sent."""
    return hashlib.md5(f"{token}&{t}&{MTOP_APP_KEY}&{data}".encode()).hexdigest()


@dataclass(frozen=True, slots=True)
class HttpCall:
    """One HTTP request, relative to a configured base URL (MTOP gateway or passport)."""

    method: str
    path: str
    query: dict[str, str]
    form: dict[str, str]
    headers: dict[str, str] = field(default_factory=dict)


def _mtop_call(
    api: str,
    data: str,
    cookies: Mapping[str, str],
    *,
    t_ms: int,
    extra_query: Mapping[str, str] | None = None,
) -> HttpCall:
    t = str(t_ms)
    query = {
        "jsv": JSV,
        "appKey": MTOP_APP_KEY,
        "t": t,
        "sign": sign(mtop_token(cookies), t, data),
        "v": "1.0",
        "type": "originaljson",
        "accountSite": "xianyu",
        "dataType": "json",
        "timeout": "20000",
        "api": api,
        "sessionOption": "AutoLoginOnly",
    }
    if extra_query:
        query.update(extra_query)
    headers = dict(_BROWSER_HEADERS, cookie=render_cookie(cookies))
    return HttpCall("POST", f"{api}/1.0/", query, {"data": data}, headers)


def build_token_request(cookies: Mapping[str, str], *, device_id: str, t_ms: int) -> HttpCall:
    """The IM access-token call (§3.1): signed over the compact JSON of the IM app key and the device id."""
    data = f'{{"appKey":"{IM_APP_KEY}","deviceId":"{device_id}"}}'
    extra = {"spm_cnt": "a21ybx.im.0.0", "spm_pre": "a21ybx.home.sidebar.1.4c053da6vYwnmf", "log_id": "4c053da6vYwnmf"}
    return _mtop_call(API_TOKEN, data, cookies, t_ms=t_ms, extra_query=extra)


def build_item_detail_request(cookies: Mapping[str, str], *, item_id: str, t_ms: int) -> HttpCall:
    """Item detail (§5.1): title, description, price of one item."""
    data = orjson.dumps({"itemId": item_id}).decode()
    return _mtop_call(API_ITEM_DETAIL, data, cookies, t_ms=t_ms, extra_query={"spm_cnt": "a21ybx.im.0.0"})


def build_confirm_shipment_request(cookies: Mapping[str, str], *, order_id: str, t_ms: int) -> HttpCall:
    """Confirm shipment of a virtual good (§5.3); the body string is the platform's, space included."""
    if not (order_id.isascii() and order_id.isdigit()):
        raise ValueError(f"an order id is digits only, got {order_id!r}")
    data = f'{{"orderId":"{order_id}", "tradeText":"","picList":[],"newUnconsign":true}}'
    return _mtop_call(API_CONFIRM_SHIPMENT, data, cookies, t_ms=t_ms)


def build_login_check_request(cookies: Mapping[str, str]) -> HttpCall:
    """The passport login check `hasLogin.do` (§4.1): is this cookie's login session still alive?"""
    form = {
        "hid": cookies.get("unb", ""),
        "ltl": "true",
        "appName": "xianyu",
        "appEntrance": "web",
        "_csrf_token": cookies.get("XSRF-TOKEN", ""),
        "umidToken": "",
        "hsiz": cookies.get("cookie2", ""),
        "bizParams": "taobaoBizLoginFrom=web",
        "mainPage": "false",
        "isMobile": "false",
        "lang": "zh_CN",
        "returnUrl": "",
        "fromSite": "77",
        "isIframe": "true",
        "documentReferer": "https://www.goofish.com/",
        "defaultView": "hasLogin",
        "umidTag": "SERVER",
        "deviceId": cookies.get("cna", ""),
    }
    headers = dict(_BROWSER_HEADERS, cookie=render_cookie(cookies))
    return HttpCall("POST", LOGIN_CHECK_PATH, {"appName": "xianyu", "fromSite": "77"}, form, headers)


class MtopOutcome(enum.StrEnum):
    SUCCESS = "success"
    TOKEN_EXPIRED = "token_expired"
    SESSION_EXPIRED = "session_expired"
    RISK_CONTROL = "risk_control"
    FAILURE = "failure"


@dataclass(frozen=True, slots=True)
class MtopResult:
    """A classified MTOP answer: the outcome, the raw `ret` list and `data`, and a captcha URL for risk control."""

    outcome: MtopOutcome
    ret: tuple[str, ...]
    data: dict[str, Any]
    captcha_url: str | None = None

    @property
    def ok(self) -> bool:
        return self.outcome is MtopOutcome.SUCCESS

    @property
    def message(self) -> str:
        return "; ".join(self.ret) or self.outcome.value


def _json_object(body: bytes | str | Mapping[str, Any], what: str) -> dict[str, Any]:
    if isinstance(body, Mapping):
        return dict(body)
    try:
        parsed = orjson.loads(body)
    except orjson.JSONDecodeError as exc:
        raise MalformedMtopResponse(f"{what} answer is not JSON: {exc}") from exc
    if not isinstance(parsed, dict):
        raise MalformedMtopResponse(f"{what} answer is JSON {type(parsed).__name__}, not an object")
    return parsed


def classify_mtop(body: bytes | str | Mapping[str, Any]) -> MtopResult:
    """Classify an MTOP envelope `{"ret": [...], "data": {...}}` (§2.3, §3.3)."""
    envelope = _json_object(body, "MTOP")
    ret_raw = envelope.get("ret")
    if not isinstance(ret_raw, list) or not all(isinstance(r, str) for r in ret_raw):
        raise MalformedMtopResponse("MTOP answer has no `ret` list of strings")
    ret = tuple(ret_raw)
    data = envelope.get("data")
    data = data if isinstance(data, dict) else {}
    url = data.get("url") if isinstance(data.get("url"), str) else None
    joined = " ".join(ret)
    if any(SUCCESS_MARK in r for r in ret):
        return MtopResult(MtopOutcome.SUCCESS, ret, data)
    if any(m in joined for m in _RISK_MARKS) or (url and any(m in url for m in _RISK_URL_MARKS)):
        return MtopResult(MtopOutcome.RISK_CONTROL, ret, data, captcha_url=url)
    if any(m in joined for m in _TOKEN_EXPIRED_MARKS):
        return MtopResult(MtopOutcome.TOKEN_EXPIRED, ret, data)
    if any(m in joined for m in _SESSION_EXPIRED_MARKS):
        return MtopResult(MtopOutcome.SESSION_EXPIRED, ret, data)
    return MtopResult(MtopOutcome.FAILURE, ret, data)


def access_token(result: MtopResult) -> str:
    """The access token of a successful token call; a success without one is malformed."""
    token = result.data.get("accessToken")
    if not result.ok or not isinstance(token, str) or not token:
        raise MalformedMtopResponse(f"token call answered without an access token ({result.message})")
    return token


def classify_login_check(body: bytes | str | Mapping[str, Any]) -> bool:
    """True when passport says the login session is alive (`content.success`)."""
    envelope = _json_object(body, "passport")
    content = envelope.get("content")
    if not isinstance(content, dict):
        raise MalformedMtopResponse("passport answer has no `content` object")
    return bool(content.get("success"))
