"""The account page in a real browser: cookie replacement, disabling, settings, write-only AI key, rules as JSON."""

from __future__ import annotations

import json
from typing import Any

import pytest

from xianyu_autoreply.simulator import Simulator

pytest.importorskip("playwright.async_api", reason="the playwright package is not installed (pip install -e '.[test]')")
from playwright.async_api import Page, expect

from .conftest import log_in, wait_live

expect.set_options(timeout=15_000)


async def test_replace_cookie_disable_and_save_settings(page: Page, server: Any, sim: Simulator) -> None:
    seller = sim.create_seller(nick="换cookie小店")
    await server.engine.add("shop-a", seller["cookie"], owner="admin")
    await log_in(page)
    await page.goto("/accounts/shop-a")
    state = page.locator("#account-state [data-state]")
    await expect(state).to_have_attribute("data-state", "running")
    await wait_live(page)

    # The platform rotated the login: a new cookie replaces the old one and only this account restarts.
    renewed = sim.create_seller(unb=seller["unb"], cookie=seller["cookie"])
    await page.fill("#cookie", renewed["cookie"])
    await page.click("#cookie-save")
    await expect(page.locator("#cookie-result")).to_contain_text("Cookie 已更换")
    await expect(state).to_have_attribute("data-state", "running")

    # A cookie without `unb` is refused with the reason, and nothing changes.
    await page.fill("#cookie", "cookie2=abc")
    await page.click("#cookie-save")
    await expect(page.locator("#cookie-result .flash.bad")).to_be_visible()

    # Disable: the button flips and the live state follows.
    await page.click("#toggle-enabled")
    await expect(page.locator("#toggle-enabled")).to_have_text("启用")
    await expect(state).to_have_attribute("data-state", "stopped")
    assert (await server.store.get_account("shop-a")).enabled is False

    # Reply settings are saved through the engine.
    await page.fill("#default_reply", "您好，稍后回复您")
    await page.fill("#pause_minutes", "30")
    await page.click("#settings-save")
    await expect(page.locator("#settings-result")).to_contain_text("已保存")
    saved = await server.store.get_settings("shop-a")
    assert (saved.default_reply, saved.pause_minutes) == ("您好，稍后回复您", 30.0)

    # The AI key is write-only: stored, shown masked, never put back into the page.
    key = "sk-e2e-0123456789abcdef"
    await page.check("input[name=enabled][type=checkbox]")
    await page.fill("#ai-base-url", sim.openai_url)
    await page.fill("#ai-model", "sim-model")
    await page.fill("#ai-key", key)
    await page.click("#ai-save")
    await expect(page.locator("#ai-result")).to_contain_text("已保存")
    assert await server.store.get_ai_api_key("shop-a") == key
    await page.reload()
    assert key not in await page.content()
    await expect(page.locator("#ai-key")).to_have_value("")


async def test_rules_import_and_export_as_json(page: Page, server: Any, sim: Simulator) -> None:
    seller = sim.create_seller(nick="规则小店")
    await server.engine.add("shop-r", seller["cookie"], owner="admin")
    await log_in(page)
    await page.goto("/accounts/shop-r")
    rules = [
        {"keyword": "包邮", "reply": "全国包邮", "match": "contains", "priority": 1},
        {"keyword": "^发货$", "reply": "当天发货", "match": "regex"},
    ]
    await page.click("text=导入 JSON")
    await page.fill("#rules-json", json.dumps(rules, ensure_ascii=False))
    await page.click("#rules-import")
    await expect(page.locator("#rules-message")).to_contain_text("规则已保存（2 条）")
    await expect(page.locator("#rule-rows tr")).to_have_count(2)
    assert [r.keyword for r in await server.store.get_rules("shop-r")] == ["包邮", "^发货$"]

    # Broken JSON is reported, and the saved rules stay.
    await page.click("text=导入 JSON")
    await page.fill("#rules-json", "[{not json")
    await page.click("#rules-import")
    await expect(page.locator("#rules-message")).to_contain_text("JSON 无法解析")
    assert len(await server.store.get_rules("shop-r")) == 2

    async with page.expect_download() as download_info:
        await page.click("#rules-export")
    download = await download_info.value
    assert download.suggested_filename == "rules-shop-r.json"
    answer = await page.request.get("/accounts/shop-r/rules.json")  # the same file the link downloads
    exported = await answer.json()
    assert [(r["keyword"], r["reply"], r["match"]) for r in exported] == [
        ("包邮", "全国包邮", "contains"),
        ("^发货$", "当天发货", "regex"),
    ]

    # The try box names the rule that fired.
    await page.fill("#try-text", "发货")
    await page.click("#try-submit")
    await expect(page.locator("#try-reply")).to_have_text("当天发货")


async def test_bulk_actions_report_each_account(page: Page, server: Any, sim: Simulator) -> None:
    for name in ("bulk-1", "bulk-2"):
        seller = sim.create_seller(nick=name)
        await server.engine.add(name, seller["cookie"], owner="admin")
    await log_in(page)
    await wait_live(page)
    for name in ("bulk-1", "bulk-2"):
        await page.check(f"tr[data-account='{name}'] input[name=ids]")
    await page.select_option("#bulk-action", "disable")
    await page.click("#bulk-submit")
    results = page.locator("#bulk-result table.bulk-results tbody tr")
    await expect(results).to_have_count(2)
    await expect(results.first).to_contain_text("成功")
    for name in ("bulk-1", "bulk-2"):
        await expect(page.locator(f"tr[data-account='{name}'] [data-state]")).to_have_attribute("data-state", "stopped")
    assert [a.enabled for a in await server.store.list_accounts()] == [False, False]
    # The live updates kept the selection.
    await expect(page.locator("tr[data-account='bulk-1'] input[name=ids]")).to_be_checked()

    # Export: rules and settings of the chosen accounts, never a cookie.
    await page.uncheck("tr[data-account='bulk-2'] input[name=ids]")
    await page.select_option("#bulk-action", "export")
    await page.click("#bulk-submit")
    exported = page.locator("#bulk-export")
    await expect(exported).to_contain_text('"id": "bulk-1"')
    assert "cookie2" not in await exported.input_value()
    assert "bulk-2" not in await exported.input_value()
