"""The web admin in a real browser: sign in, watch accounts live, edit rules, converse, switch language, sign out."""

from __future__ import annotations

import re
from typing import Any

import pytest

from xianyu_autoreply.simulator import Simulator

pytest.importorskip("playwright.async_api", reason="the playwright package is not installed (pip install -e '.[test]')")
from playwright.async_api import Page, expect

from .conftest import log_in, screenshot_path, wait_live

expect.set_options(timeout=15_000)


async def test_login_dashboard_rules_conversation_language_logout(page: Page, server: Any, sim: Simulator) -> None:
    seller = sim.create_seller(nick="e2e小店")
    sim.create_item(seller["unb"], title="二手相机", price="1200")

    # Signing in lands on the dashboard, in Chinese by default.
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login\?next="))
    await log_in(page)
    await expect(page.locator("h1")).to_contain_text("我的账号")

    # Add an account with the simulator's cookie: the account page shows it come up live.
    await page.fill("#new-id", "shop-e2e")
    await page.fill("#new-remark", "测试店铺")
    await page.fill("#new-cookie", seller["cookie"])
    await page.click("#add-submit")
    await expect(page).to_have_url(re.compile(r"/accounts/shop-e2e$"))
    await expect(page.locator("#account-state [data-state]")).to_have_attribute("data-state", "running")
    await expect(page.locator("#account-state")).to_contain_text("已连接")
    assert seller["cookie"] not in await page.content()  # the cookie is only ever shown masked

    # The dashboard row follows the engine without a reload: stop the account elsewhere, then start it again.
    await server.engine.set_enabled("shop-e2e", False)
    await page.goto("/")
    row = page.locator("tr[data-account='shop-e2e']")
    await expect(row.locator("[data-state]")).to_have_text("已停止")
    await wait_live(page)
    await server.engine.set_enabled("shop-e2e", True)
    await expect(row.locator("[data-state]")).to_have_text("运行中")
    await expect(row.locator("[data-connection]")).to_have_text("已连接")
    await page.screenshot(path=screenshot_path("dashboard"), full_page=True)

    # A keyword rule, then the try box shows the reply, its source and the reason.
    await row.locator("a.account-link").click()
    await page.click("#rule-add")
    await page.locator("#rule-rows input[name=keyword]").last.fill("价格")
    await page.locator("#rule-rows input[name=reply]").last.fill("9.9元包邮")
    await page.click("#rules-save")
    await expect(page.locator("#rules-message")).to_contain_text("规则已保存（1 条）")
    await page.fill("#try-text", "请问价格多少")
    await page.click("#try-submit")
    await expect(page.locator("#try-reply")).to_have_text("9.9元包邮")
    await expect(page.locator("#try-source")).to_contain_text("rule")
    await expect(page.locator("#try-reason")).to_have_text("rule_matched")
    await expect(page.locator("#try-output")).to_contain_text("命中关键词规则")

    # A buyer writes: the chat list shows the new chat live; its page shows the next message and the reply live.
    await page.click("#account-chats")
    await expect(page.locator("h1")).to_contain_text("会话")
    await wait_live(page)
    first = sim.push_message(seller["unb"], "在吗", buyer_nick="小王")
    link = page.locator("a.chat-link", has_text=first["chat_id"])
    await expect(link).to_be_visible()
    await link.click()
    log = page.locator("#chat-log")
    await expect(log.locator("li.in")).to_have_count(1)
    await wait_live(page)
    sim.push_message(seller["unb"], "价格多少？<b>加粗</b><script>window.pwned=1</script>", chat_id=first["chat_id"])
    await expect(log.locator("li.in", has_text="价格多少？<b>加粗</b>")).to_be_visible()
    await expect(log.locator("li.out", has_text="9.9元包邮")).to_be_visible()
    assert await log.locator("b, script").count() == 0  # the buyer's HTML is text, not markup
    assert await page.evaluate("window.pwned === undefined")

    # A manual reply goes out through the account's session and shows in the log.
    await page.fill("#reply-text", "我是店主，人工回复")
    await page.click("#reply-send")
    await expect(page.locator("#reply-result")).to_contain_text("已发送")
    await expect(log.locator("li.out", has_text="我是店主，人工回复")).to_be_visible()
    sent = [m["text"] for m in sim.sent(seller=seller["unb"], chat_id=first["chat_id"])]
    assert "我是店主，人工回复" in sent
    await page.screenshot(path=screenshot_path("conversation"), full_page=True)

    # English on request, remembered across pages.
    await page.click("#lang-switch")
    await expect(page.locator("a[data-nav=dashboard]")).to_have_text("Dashboard")
    await page.goto("/")
    await expect(page.locator("h1")).to_contain_text("My accounts")
    await expect(page.locator("tr[data-account='shop-e2e'] [data-state]")).to_have_text("running")

    # Signing out ends the session.
    await page.click("#logout")
    await expect(page.locator("#login-message")).to_have_text("Logged out")
    await page.goto("/")
    await expect(page).to_have_url(re.compile(r"/login"))


async def test_posts_without_the_csrf_token_are_refused(page: Page, server: Any) -> None:
    await log_in(page)
    # A plain form post without the hidden token (as a forged cross-site form would be) is refused ...
    refused = await page.request.post("/logout", form={})
    assert refused.status == 403
    # ... and so is an htmx-style change without the header, while the same request with it passes.
    sim_cookie = "unb=2000000001; cookie2=abc; _m_h5_tk=x_1"
    status = await page.evaluate(
        """async (cookie) => {
            const body = new URLSearchParams({account_id: "forged", cookie});
            return (await fetch("/accounts", {method: "POST", body})).status;
        }""",
        sim_cookie,
    )
    assert status == 403
    status = await page.evaluate(
        """async (cookie) => {
            const token = document.cookie.split("; ").find((c) => c.startsWith("xar_csrf=")).split("=")[1];
            const body = new URLSearchParams({account_id: "allowed", cookie});
            return (await fetch("/accounts", {method: "POST", body, headers: {"X-CSRF-Token": token}})).status;
        }""",
        sim_cookie,
    )
    assert status == 200
    assert [a.id for a in await server.store.list_accounts()] == ["allowed"]
    # The session is still good after the refused requests.
    await page.goto("/")
    await expect(page.locator("h1")).to_contain_text("我的账号")


async def test_login_form_needs_its_token_and_pages_send_security_headers(page: Page) -> None:
    response = await page.goto("/login")
    assert response is not None
    headers = response.headers
    assert "script-src 'self'" in headers["content-security-policy"]
    assert "'unsafe-inline'" not in headers["content-security-policy"]
    assert headers["x-frame-options"] == "DENY"
    assert headers["x-content-type-options"] == "nosniff"
    assert headers["referrer-policy"]
    forged = await page.request.post("/login", form={"username": "admin", "password": "whatever-it-is"})
    assert forged.status == 403
