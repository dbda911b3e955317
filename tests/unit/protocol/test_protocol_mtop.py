"""MTOP gateway and passport calls (PROTOCOL.md §2-§5)."""

from __future__ import annotations

import hashlib

import orjson
import pytest

from xianyu_autoreply.protocol import (
    MalformedMtopResponse,
    MtopOutcome,
    ProtocolError,
    access_token,
    build_confirm_shipment_request,
    build_item_detail_request,
    build_login_check_request,
    build_token_request,
    classify_login_check,
    classify_mtop,
    parse_cookie,
    sign,
)

TOKEN = "0123456789abcdef0123456789abcdef"
DID = "01234567-89AB-4CDE-8F01-23456789ABCD-2200000000001"
T_MS = 1_700_000_000_000
COOKIE = (
    f"cna=Xy1zAbCdEfGh; unb=2200000000001; cookie2=1a2b3c4d5e6f; _m_h5_tk={TOKEN}_1742458817389; "
    "_m_h5_tk_enc=abcdef; XSRF-TOKEN=5d2c1b0a-9f8e; t=9f8e7d6c"
)
COOKIES = parse_cookie(COOKIE)
SUCCESS = "SUCCESS::调用成功"
RISK_BODY = (
    '{"ret":["FAIL_SYS_USER_VALIDATE","RGV587_ERROR::SM::哎哟喂,被挤爆啦,请稍后重试"],'
    '"data":{"url":"https://h5api.m.goofish.com:443//h5/mtop.taobao.idlemessage.pc.login.token/1.0/_____tmd_____/'
    'punish?x5secdata=xyz&x5step=2&action=captcha&pureCaptcha="}}'
)
COMMON_QUERY = {
    "jsv": "2.7.2",
    "appKey": "34839810",
    "t": str(T_MS),
    "v": "1.0",
    "type": "originaljson",
    "accountSite": "xianyu",
    "dataType": "json",
    "timeout": "20000",
    "sessionOption": "AutoLoginOnly",
}


def _md5(text: str) -> str:
    return hashlib.md5(text.encode("utf-8")).hexdigest()


def test_sign_matches_the_protocol_test_vector() -> None:
    data = (
        '{"appKey":"444e9908a51d1cb236a27862abc769c9","deviceId":"01234567-89AB-4CDE-8F01-23456789ABCD-2200000000001"}'
    )
    assert sign(TOKEN, "1700000000000", data) == "e33dc0573011ac80a176f6a9541f8912"


def test_sign_is_md5_of_token_t_appkey_and_the_exact_data_string() -> None:
    data = '{"groupName":"\\u5728\\u552e"}'  # ASCII-escaped bodies are signed as sent (§2.2)
    assert sign("tk", "1", data) == _md5("tk&1&34839810&" + data)
    assert sign("", "1", "在售") == _md5("&1&34839810&在售")


def test_token_request_is_the_documented_call() -> None:
    call = build_token_request(COOKIES, device_id=DID, t_ms=T_MS)
    data = f'{{"appKey":"444e9908a51d1cb236a27862abc769c9","deviceId":"{DID}"}}'
    assert call.method == "POST"
    assert call.path == "mtop.taobao.idlemessage.pc.login.token/1.0/"
    assert call.form == {"data": data}
    for key, value in COMMON_QUERY.items():
        assert call.query[key] == value, key
    assert call.query["api"] == "mtop.taobao.idlemessage.pc.login.token"
    assert call.query["spm_cnt"] == "a21ybx.im.0.0"
    assert call.query["sign"] == _md5(f"{TOKEN}&{T_MS}&34839810&{data}")
    assert call.query["sign"] == "e33dc0573011ac80a176f6a9541f8912"  # the §2.2 vector is this very call
    assert call.headers["cookie"] == COOKIE
    assert call.headers["content-type"] == "application/x-www-form-urlencoded"
    assert call.headers["origin"] == "https://www.goofish.com"
    assert call.headers["referer"] == "https://www.goofish.com/"


def test_token_request_query_carries_the_common_parameters_in_the_documented_order() -> None:
    call = build_token_request(COOKIES, device_id=DID, t_ms=T_MS)
    assert list(call.query)[:12] == [
        "jsv", "appKey", "t", "sign", "v", "type", "accountSite", "dataType", "timeout", "api", "sessionOption",
        "spm_cnt",
    ]  # fmt: skip


def test_token_request_without_m_h5_tk_signs_with_an_empty_token() -> None:
    call = build_token_request({"unb": "2200000000001"}, device_id=DID, t_ms=T_MS)
    assert call.query["sign"] == _md5(f"&{T_MS}&34839810&{call.form['data']}")


def test_item_detail_request() -> None:
    call = build_item_detail_request(COOKIES, item_id="891198795482", t_ms=T_MS)
    assert call.path == "mtop.taobao.idle.pc.detail/1.0/"
    assert call.form == {"data": '{"itemId":"891198795482"}'}
    assert call.query["api"] == "mtop.taobao.idle.pc.detail"
    assert call.query["spm_cnt"] == "a21ybx.im.0.0"
    assert call.query["sign"] == _md5(f'{TOKEN}&{T_MS}&34839810&{{"itemId":"891198795482"}}')
    assert call.headers["cookie"] == COOKIE


def test_confirm_shipment_body_is_the_exact_string_with_its_space() -> None:
    call = build_confirm_shipment_request(COOKIES, order_id="3312345678901234567", t_ms=T_MS)
    data = '{"orderId":"3312345678901234567", "tradeText":"","picList":[],"newUnconsign":true}'
    assert call.form == {"data": data}
    assert call.path == "mtop.taobao.idle.logistic.consign.dummy/1.0/"
    assert call.query["api"] == "mtop.taobao.idle.logistic.consign.dummy"
    assert call.query["sign"] == _md5(f"{TOKEN}&{T_MS}&34839810&{data}")
    assert "spm_cnt" not in call.query  # absent in A's confirm call (§2.1)


@pytest.mark.parametrize("order_id", ["", "12a", '1", "x":"', "1 2"])
def test_confirm_shipment_refuses_a_non_numeric_order_id(order_id: str) -> None:
    with pytest.raises(ValueError):
        build_confirm_shipment_request(COOKIES, order_id=order_id, t_ms=T_MS)


def test_confirm_shipment_refuses_non_ascii_digits() -> None:
    with pytest.raises(ValueError):
        build_confirm_shipment_request(COOKIES, order_id="12\u00b2", t_ms=T_MS)


def test_login_check_request_is_the_documented_form() -> None:
    call = build_login_check_request(COOKIES)
    assert call.method == "POST"
    assert call.path == "newlogin/hasLogin.do"
    assert call.query == {"appName": "xianyu", "fromSite": "77"}
    assert list(call.form.items()) == [
        ("hid", "2200000000001"),
        ("ltl", "true"),
        ("appName", "xianyu"),
        ("appEntrance", "web"),
        ("_csrf_token", "5d2c1b0a-9f8e"),
        ("umidToken", ""),
        ("hsiz", "1a2b3c4d5e6f"),
        ("bizParams", "taobaoBizLoginFrom=web"),
        ("mainPage", "false"),
        ("isMobile", "false"),
        ("lang", "zh_CN"),
        ("returnUrl", ""),
        ("fromSite", "77"),
        ("isIframe", "true"),
        ("documentReferer", "https://www.goofish.com/"),
        ("defaultView", "hasLogin"),
        ("umidTag", "SERVER"),
        ("deviceId", "Xy1zAbCdEfGh"),
    ]
    assert call.headers["cookie"] == COOKIE


def test_login_check_without_optional_cookies_sends_empty_fields() -> None:
    form = build_login_check_request({"unb": "22"}).form
    assert (form["hid"], form["_csrf_token"], form["hsiz"], form["deviceId"]) == ("22", "", "", "")


# --- classification --------------------------------------------------------------------------------------------


def _envelope(*ret: str, **data: object) -> bytes:
    return orjson.dumps({"api": "x", "data": data, "ret": list(ret), "v": "1.0"})


def test_success_in_any_ret_element_as_bytes_str_or_mapping() -> None:
    body = _envelope(SUCCESS, accessToken="tok")
    for form in (body, body.decode(), orjson.loads(body)):
        result = classify_mtop(form)
        assert result.outcome is MtopOutcome.SUCCESS and result.ok
        assert result.data == {"accessToken": "tok"}
        assert result.captcha_url is None
    assert classify_mtop(_envelope("OTHER::x", f"prefix {SUCCESS}")).ok


@pytest.mark.parametrize(
    "ret",
    ["FAIL_SYS_TOKEN_EXOIRED::令牌过期", "FAIL_SYS_TOKEN_EXPIRED::令牌过期", "FAIL_SYS_TOKEN_EXPIRED", "X::令牌过期"],
)
def test_token_expired_in_both_spellings(ret: str) -> None:
    result = classify_mtop(_envelope(ret))
    assert result.outcome is MtopOutcome.TOKEN_EXPIRED
    assert not result.ok
    assert result.ret == (ret,)


@pytest.mark.parametrize("ret", ["FAIL_SYS_SESSION_EXPIRED::Session过期", "X::Session过期"])
def test_session_expired(ret: str) -> None:
    assert classify_mtop(_envelope(ret)).outcome is MtopOutcome.SESSION_EXPIRED


def test_risk_control_body_gives_the_captcha_url() -> None:
    result = classify_mtop(RISK_BODY)
    assert result.outcome is MtopOutcome.RISK_CONTROL
    assert result.captcha_url == orjson.loads(RISK_BODY)["data"]["url"]
    assert "punish?x5secdata=" in result.captcha_url
    assert result.ret == ("FAIL_SYS_USER_VALIDATE", "RGV587_ERROR::SM::哎哟喂,被挤爆啦,请稍后重试")
    assert "FAIL_SYS_USER_VALIDATE" in result.message


@pytest.mark.parametrize(
    ("ret", "url"),
    [
        ("RGV587_ERROR::SM::哎哟喂，被挤爆啦，请稍后重试", None),  # full-width commas (A:1694-1742)
        ("FAIL_SYS_USER_VALIDATE", None),
        ("FAIL_SYS_ILLEGAL_ACCESS::x", "https://h5api.m.goofish.com/_____tmd_____/punish?x=1"),
        ("FAIL_SYS_ILLEGAL_ACCESS::x", "https://h5api.m.goofish.com/captcha"),
    ],
)
def test_risk_control_from_ret_or_from_the_url(ret: str, url: str | None) -> None:
    data = {"url": url} if url else {}
    result = classify_mtop(_envelope(ret, **data))
    assert result.outcome is MtopOutcome.RISK_CONTROL
    assert result.captcha_url == url


@pytest.mark.parametrize("ret", [["FAIL_BIZ_ITEM_NOT_EXIST::商品不存在"], ["FAIL_SYS_SERVICE_TIMEOUT::超时"], []])
def test_other_failures(ret: list[str]) -> None:
    result = classify_mtop(orjson.dumps({"ret": ret, "data": None}))
    assert result.outcome is MtopOutcome.FAILURE
    assert result.data == {}
    assert result.message == ("; ".join(ret) or "failure")


@pytest.mark.parametrize(
    "body",
    [
        pytest.param(b"<html>502 Bad Gateway</html>", id="html"),
        pytest.param(b"", id="empty"),
        pytest.param(b"\xff\xfe", id="binary"),
        pytest.param(b'["SUCCESS::\xe8\xb0\x83\xe7\x94\xa8\xe6\x88\x90\xe5\x8a\x9f"]', id="json-list"),
        pytest.param(b'"SUCCESS"', id="json-string"),
        pytest.param(b"null", id="json-null"),
        pytest.param(b'{"data": {"accessToken": "x"}}', id="no-ret"),
        pytest.param(b'{"ret": "SUCCESS::\xe8\xb0\x83\xe7\x94\xa8\xe6\x88\x90\xe5\x8a\x9f"}', id="ret-not-list"),
        pytest.param(b'{"ret": [1, 2]}', id="ret-not-strings"),
    ],
)
def test_malformed_answers_raise_malformed_mtop_response(body: bytes) -> None:
    with pytest.raises(MalformedMtopResponse):
        classify_mtop(body)


def test_malformed_mtop_response_is_a_protocol_error_with_its_cause() -> None:
    with pytest.raises(ProtocolError) as caught:
        classify_mtop("not json")
    assert caught.value.__cause__ is not None


def test_access_token_of_a_successful_token_call() -> None:
    result = classify_mtop(_envelope(SUCCESS, accessToken="at-1", accessTokenExpiredTime="86400000"))
    assert access_token(result) == "at-1"


@pytest.mark.parametrize(
    "body",
    [
        _envelope(SUCCESS),
        _envelope(SUCCESS, accessToken=""),
        _envelope(SUCCESS, accessToken=123),
        _envelope("FAIL_SYS_TOKEN_EXOIRED::令牌过期", accessToken="stale"),
    ],
    ids=["missing", "empty", "not-a-string", "failed-call"],
)
def test_access_token_without_a_usable_token_raises(body: bytes) -> None:
    with pytest.raises(MalformedMtopResponse):
        access_token(classify_mtop(body))


def test_login_check_success_and_failure() -> None:
    ok = b'{"content":{"success":true,"status":0,"data":{}},"hasError":false}'
    assert classify_login_check(ok) is True
    assert classify_login_check(ok.decode()) is True
    assert classify_login_check({"content": {"success": False}}) is False
    assert classify_login_check(b'{"content":{"status":0}}') is False


@pytest.mark.parametrize("body", [b"<html/>", b"[]", b'{"hasError":true}', b'{"content":"x"}'])
def test_login_check_malformed(body: bytes) -> None:
    with pytest.raises(MalformedMtopResponse):
        classify_login_check(body)
