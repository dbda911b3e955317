"""The MTOP gate (login, _m_h5_tk, sign), item detail, confirm shipment, passport and image upload."""

from __future__ import annotations

import asyncio
from typing import Any

import httpx
import pytest

from xianyu_autoreply.simulator import Simulator

from .bare import SUCCESS, TOKEN_API, cookie_map, cookie_string, device_id, mtop_call, mtop_params, token_call

DETAIL = "mtop.taobao.idle.pc.detail"
CONSIGN = "mtop.taobao.idle.logistic.consign.dummy"


async def test_a_wrong_sign_is_refused(sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]) -> None:
    data = '{"appKey":"444e9908a51d1cb236a27862abc769c9","deviceId":"X-1"}'
    params = {**mtop_params(TOKEN_API, data, seller["cookie"]), "sign": "0" * 32}
    answer = await http.post(
        f"{sim.mtop_url}{TOKEN_API}/1.0/", params=params, data={"data": data}, headers={"cookie": seller["cookie"]}
    )
    assert answer.json()["ret"] == ["FAIL_SYS_ILLEGAL_ACCESS::非法请求"]


async def test_the_sign_covers_the_exact_data_string(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    signed = '{"appKey":"444e9908a51d1cb236a27862abc769c9","deviceId":"X-1"}'
    sent = '{"appKey": "444e9908a51d1cb236a27862abc769c9", "deviceId": "X-1"}'  # same JSON, other spacing
    params = mtop_params(TOKEN_API, signed, seller["cookie"])
    answer = await http.post(
        f"{sim.mtop_url}{TOKEN_API}/1.0/", params=params, data={"data": sent}, headers={"cookie": seller["cookie"]}
    )
    assert answer.json()["ret"] == ["FAIL_SYS_ILLEGAL_ACCESS::非法请求"]


async def test_sign_checking_can_be_switched_off(http: httpx.AsyncClient) -> None:
    async with Simulator(verify_sign=False) as sim:
        seller = sim.create_seller()
        data = '{"appKey":"444e9908a51d1cb236a27862abc769c9","deviceId":"X-1"}'
        params = {**mtop_params(TOKEN_API, data, seller["cookie"]), "sign": "bogus"}
        answer = await http.post(
            f"{sim.mtop_url}{TOKEN_API}/1.0/", params=params, data={"data": data}, headers={"cookie": seller["cookie"]}
        )
        assert answer.json()["ret"] == [SUCCESS]


async def test_missing_m_h5_tk_is_answered_token_empty_with_a_set_cookie(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    cookies = cookie_map(seller["cookie"])
    del cookies["_m_h5_tk"]
    answer = await token_call(http, sim, cookie_string(cookies), device_id(seller["unb"]))
    assert answer.json()["ret"] == ["FAIL_SYS_TOKEN_EMPTY::令牌为空"]
    assert any(c.startswith("_m_h5_tk=") for c in answer.headers.get_list("set-cookie"))


@pytest.mark.parametrize("cookie", ["unb=123456789; cookie2=abc", "", "cookie2=abc; _m_h5_tk=x_1"])
async def test_a_cookie_without_a_live_login_is_answered_session_expired(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any], cookie: str
) -> None:
    answer = await token_call(http, sim, cookie, device_id(seller["unb"]))
    assert answer.json()["ret"] == ["FAIL_SYS_SESSION_EXPIRED::Session过期"]


async def test_token_call_with_a_wrong_app_key_is_a_parameter_error(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    answer = await mtop_call(http, sim, TOKEN_API, '{"appKey":"nope","deviceId":"X-1"}', seller["cookie"])
    assert answer.json()["ret"][0].startswith("FAIL_BIZ_PARAM_ERROR")


async def test_item_detail_answers_item_do(sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]) -> None:
    item = sim.create_item(seller["unb"], title="二手显示器", price="450.5", desc="27寸，无坏点", quantity=2)
    answer = (await mtop_call(http, sim, DETAIL, f'{{"itemId":"{item["item_id"]}"}}', seller["cookie"])).json()
    assert answer["ret"] == [SUCCESS]
    item_do = answer["data"]["itemDO"]
    assert (item_do["title"], item_do["desc"], item_do["soldPrice"], item_do["quantity"]) == (
        "二手显示器",
        "27寸，无坏点",
        "450.50",
        2,
    )
    assert item_do["skuList"][0]["price"] == 45050 and item_do["skuList"][0]["propertyList"][0]["valueText"]
    missing = (await mtop_call(http, sim, DETAIL, '{"itemId":"1111111111"}', seller["cookie"])).json()
    assert SUCCESS not in missing["ret"]


async def test_confirm_shipment_of_a_paid_order_is_recorded(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    paid = sim.push_order(seller["unb"], status="paid")
    unpaid = sim.push_order(seller["unb"], status="created")
    for order_id in (paid["order_id"], unpaid["order_id"], "1234567890123"):
        data = f'{{"orderId":"{order_id}", "tradeText":"","picList":[],"newUnconsign":true}}'
        await mtop_call(http, sim, CONSIGN, data, seller["cookie"])
    shipments = sim.shipments(seller["unb"])
    assert [(s["order_id"], s["ok"]) for s in shipments] == [
        (paid["order_id"], True),
        (unpaid["order_id"], False),
        ("1234567890123", False),
    ]
    assert {o["order_id"]: o["status"] for o in sim.orders(seller["unb"])}[paid["order_id"]] == "shipped"


async def test_unknown_api_is_answered_api_not_found(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    answer = (await mtop_call(http, sim, "mtop.nothing.here", "{}", seller["cookie"])).json()
    assert answer["ret"][0].startswith("FAIL_SYS_API_NOT_FOUNDED") and answer["api"] == "mtop.nothing.here"


async def test_has_login_says_yes_for_a_live_cookie(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    answer = await http.post(
        f"{sim.passport_url}newlogin/hasLogin.do",
        params={"appName": "xianyu", "fromSite": "77"},
        data={"hid": seller["unb"], "ltl": "true"},
        headers={"cookie": seller["cookie"]},
    )
    assert answer.json() == {"content": {"success": True, "status": 0, "data": {}}, "hasError": False}


async def test_image_upload_answers_a_url_that_serves_the_image(
    sim: Simulator, http: httpx.AsyncClient, seller: dict[str, Any]
) -> None:
    image = b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4
    answer = await http.post(
        f"{sim.base_url}/api/upload.api",
        params={"floderId": "0", "appkey": "xy_chat", "_input_charset": "utf-8"},
        files={"file": ("photo.jpg", image, "image/jpeg")},
        headers={"cookie": seller["cookie"], "referer": "https://www.goofish.com/"},
    )
    url = answer.json()["object"]["url"]
    served = await http.get(url)
    assert served.content == image and served.headers["content-type"] == "image/jpeg"
    assert sim.uploads(seller["unb"])[0]["size"] == len(image)
    anonymous = await http.post(f"{sim.base_url}/api/upload.api", files={"file": ("a.jpg", b"x", "image/jpeg")})
    assert anonymous.status_code == 401


async def test_an_expired_m_h5_tk_is_renewed_through_set_cookie(http: httpx.AsyncClient) -> None:
    async with Simulator() as sim:
        sim.world.h5_ttl_ms = 1  # every _m_h5_tk from now on lives one millisecond
        seller = sim.create_seller()
        await asyncio.sleep(0.002)
        answer = await token_call(http, sim, seller["cookie"], device_id(seller["unb"]))
        assert answer.json()["ret"] == ["FAIL_SYS_TOKEN_EXOIRED::令牌过期"]
        assert answer.headers.get_list("set-cookie")
