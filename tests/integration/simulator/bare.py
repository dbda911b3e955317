"""`BareClient` and helpers: PROTOCOL.md §3 and §7-§13 followed by hand, for the simulator's tests.

The bare client does not use the project's client code or the codec's frame builders: its frames are literal JSON
as the platform's web clients write them (`json.dumps` defaults), pushes are decoded with plain `msgpack`, and only
the MTOP sign comes from `protocol.sign` (whose test vector is pinned by the unit tests). So these tests check the
simulator against the protocol document, not against our own reading of it.
"""

from __future__ import annotations

import asyncio
import base64
import json
import random
import time
import uuid
from typing import Any

import httpx
import msgpack
import websockets
from websockets.asyncio.client import ClientConnection

from xianyu_autoreply.protocol import sign
from xianyu_autoreply.simulator import Simulator

from ...polling import eventually as _poll

IM_APP_KEY = "444e9908a51d1cb236a27862abc769c9"
MTOP_APP_KEY = "34839810"
TOKEN_API = "mtop.taobao.idlemessage.pc.login.token"
SUCCESS = "SUCCESS::调用成功"
UA = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/133.0.0.0 Safari/537.36"
REG_UA = UA + " DingTalk(2.1.5) OS(Windows/10) Browser(Chrome/133.0.0.0) DingWeb/2.1.5 IMPaaS DingWeb/2.1.5"


def cookie_map(cookie: str) -> dict[str, str]:
    """PROTOCOL §1.1: split on "; ", then each piece at its first "="."""
    pairs = (piece.split("=", 1) for piece in cookie.split("; ") if "=" in piece)
    return {name: value for name, value in pairs}


def cookie_string(cookies: dict[str, str]) -> str:
    return "; ".join(f"{k}={v}" for k, v in cookies.items())


def new_mid() -> str:
    """PROTOCOL §1.4: 0-999, epoch ms, " 0"."""
    return f"{random.randrange(1000)}{int(time.time() * 1000)} 0"


def device_id(unb: str) -> str:
    """PROTOCOL §1.3: an uppercase UUID layout, then "-<unb>"."""
    return f"{str(uuid.uuid4()).upper()}-{unb}"


def mtop_params(api: str, data: str, cookie: str, *, t: str | None = None) -> dict[str, str]:
    """PROTOCOL §2.1-§2.2: the query of an MTOP call, signed over the exact `data` string."""
    t = t or str(int(time.time() * 1000))
    token = cookie_map(cookie).get("_m_h5_tk", "").split("_")[0]
    return {
        "jsv": "2.7.2",
        "appKey": MTOP_APP_KEY,
        "t": t,
        "sign": sign(token, t, data),
        "v": "1.0",
        "type": "originaljson",
        "accountSite": "xianyu",
        "dataType": "json",
        "timeout": "20000",
        "api": api,
        "sessionOption": "AutoLoginOnly",
        "spm_cnt": "a21ybx.im.0.0",
    }


async def mtop_call(http: httpx.AsyncClient, sim: Simulator, api: str, data: str, cookie: str) -> httpx.Response:
    params = mtop_params(api, data, cookie)
    headers = {
        "cookie": cookie,
        "content-type": "application/x-www-form-urlencoded",
        "origin": "https://www.goofish.com",
    }
    return await http.post(f"{sim.mtop_url}{api}/1.0/", params=params, data={"data": data}, headers=headers)


async def token_call(http: httpx.AsyncClient, sim: Simulator, cookie: str, did: str) -> httpx.Response:
    """PROTOCOL §3.1: the body is a compact JSON string built by hand, signed as sent."""
    data = '{"appKey":"' + IM_APP_KEY + '","deviceId":"' + did + '"}'
    return await mtop_call(http, sim, TOKEN_API, data, cookie)


def decode_payload(data: str) -> Any:
    """PROTOCOL §11.2: base64, then MessagePack with integer map keys."""
    return msgpack.unpackb(base64.b64decode(data), raw=False, strict_map_key=False)


class BareClient:
    """One IM connection driven frame by frame. Responses are matched by `mid`; everything else is a push."""

    def __init__(self, ws: ClientConnection, unb: str) -> None:
        self.ws = ws
        self.unb = unb
        self.pushes: list[dict[str, Any]] = []
        self.raw: list[str | bytes] = []

    @classmethod
    async def connect(cls, sim: Simulator, cookie: str, **kwargs: Any) -> BareClient:
        """The upgrade as the platform's clients send it: extra Host/Connection headers (sent twice), Cookie."""
        headers = {
            "Host": "wss-goofish.dingtalk.com",
            "Connection": "Upgrade",
            "Origin": "https://www.goofish.com",
            "Accept-Language": "zh-CN,zh;q=0.9",
            "Cookie": cookie,
        }
        ws = await websockets.connect(sim.ws_url, additional_headers=headers, user_agent_header=UA, **kwargs)
        return cls(ws, cookie_map(cookie)["unb"])

    async def send(self, frame: dict[str, Any]) -> None:
        await self.ws.send(json.dumps(frame))

    async def recv(self, timeout: float = 3.0) -> str | bytes:
        async with asyncio.timeout(timeout):
            raw = await self.ws.recv()
        self.raw.append(raw)
        return raw

    async def request(self, frame: dict[str, Any], timeout: float = 3.0) -> dict[str, Any]:
        """Send a request and return the response carrying its mid; pushes seen meanwhile are kept."""
        await self.send(frame)
        mid = frame["headers"]["mid"]
        async with asyncio.timeout(timeout):
            while True:
                raw = await self.recv(timeout)
                doc = json.loads(raw)
                if "lwp" not in doc and doc.get("headers", {}).get("mid") == mid:
                    return doc
                self.pushes.append(doc)

    async def reg(self, token: str, did: str) -> dict[str, Any]:
        """PROTOCOL §7.2, headers in the documented order."""
        frame = {
            "lwp": "/reg",
            "headers": {
                "cache-header": "app-key token ua wv",
                "app-key": IM_APP_KEY,
                "token": token,
                "ua": REG_UA,
                "dt": "j",
                "wv": "im:3,au:3,sy:6",
                "sync": "0,0;0;0;",
                "did": did,
                "mid": new_mid(),
            },
        }
        return await self.request(frame)

    async def ack_diff(self) -> dict[str, Any]:
        """PROTOCOL §7.4: declare us synced up to now."""
        now = int(time.time() * 1000)
        body = [
            {
                "pipeline": "sync",
                "tooLong2Tag": "PNM,1",
                "channel": "sync",
                "topic": "sync",
                "highPts": 0,
                "pts": now * 1000,
                "seq": 0,
                "timestamp": now,
            }
        ]
        return await self.request({"lwp": "/r/SyncStatus/ackDiff", "headers": {"mid": new_mid()}, "body": body})

    async def heartbeat(self, timeout: float = 3.0) -> dict[str, Any]:
        """PROTOCOL §8."""
        return await self.request({"lwp": "/!", "headers": {"mid": new_mid()}}, timeout=timeout)

    async def next_push(self, timeout: float = 3.0) -> dict[str, Any]:
        """The next frame with `lwp` (already buffered ones first)."""
        if self.pushes:
            return self.pushes.pop(0)
        async with asyncio.timeout(timeout):
            while True:
                doc = json.loads(await self.recv(timeout))
                if "lwp" in doc:
                    return doc

    async def ack(self, push: dict[str, Any]) -> None:
        """PROTOCOL §10: code 200 echoing mid, sid and the app-key/ua/dt present."""
        headers = push["headers"]
        ack_headers = {"mid": headers["mid"], "sid": headers.get("sid", "")}
        for key in ("app-key", "ua", "dt"):
            if key in headers:
                ack_headers[key] = headers[key]
        await self.send({"code": 200, "headers": ack_headers})

    def send_frame(self, chat_id: str, buyer: str, text: str, **overrides: Any) -> dict[str, Any]:
        """PROTOCOL §13.1: a text message to the buyer (fields can be overridden to break it)."""
        content = base64.b64encode(json.dumps({"contentType": 1, "text": {"text": text}}).encode()).decode()
        message = {
            "uuid": f"-{int(time.time() * 1000)}1",
            "cid": f"{chat_id}@goofish",
            "conversationType": 1,
            "content": {"contentType": 101, "custom": {"type": 1, "data": content}},
            "redPointPolicy": 0,
            "extension": {"extJson": "{}"},
            "ctx": {"appVersion": "1.0", "platform": "web"},
            "mtags": {},
            "msgReadStatusSetting": 1,
        }
        receivers = {"actualReceivers": [f"{buyer}@goofish", f"{self.unb}@goofish"]}
        message.update(overrides.pop("message", {}))
        receivers.update(overrides.pop("receivers", {}))
        body = overrides.pop("body", [message, receivers])
        return {"lwp": "/r/MessageSend/sendByReceiverScope", "headers": {"mid": new_mid()}, "body": body}

    async def close(self) -> None:
        await self.ws.close()


async def login(sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]) -> tuple[BareClient, str, str]:
    """Token, upgrade, /reg, ackDiff: a registered bare connection, with its token and device id."""
    did = device_id(seller["unb"])
    answer = (await token_call(http, sim, seller["cookie"], did)).json()
    assert SUCCESS in answer["ret"], answer
    token = answer["data"]["accessToken"]
    client = await BareClient.connect(sim, seller["cookie"])
    reg = await client.reg(token, did)
    assert reg["code"] == 200, reg
    assert (await client.ack_diff())["code"] == 200
    return client, token, did


async def eventually(check: Any, *, timeout: float = 3.0) -> Any:
    """The shared poll (tests/polling.py) with this folder's shorter bound and finer step."""
    return await _poll(check, timeout=timeout, interval=0.02)
