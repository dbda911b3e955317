"""Users in a real browser: an admin adds a staff user, who sees only their own accounts (live), no admin pages."""

from __future__ import annotations

from typing import Any

import pytest

from xianyu_autoreply.simulator import Simulator

pytest.importorskip("playwright.async_api", reason="the playwright package is not installed (pip install -e '.[test]')")
from playwright.async_api import Page, expect

from .conftest import log_in, wait_live

expect.set_options(timeout=15_000)


async def test_staff_user_sees_only_own_accounts(page: Page, server: Any, sim: Simulator) -> None:
    admins_shop = sim.create_seller(nick="老板的店")
    await server.engine.add("boss-shop", admins_shop["cookie"], owner="admin")

    await log_in(page)
    await page.click("a[data-nav=users]")
    await page.fill("#nu-name", "staff")
    await page.fill("#nu-pass", "staff-password-1")
    await page.click("#users-box ~ section button[type=submit]")
    await expect(page.locator("#users")).to_contain_text("staff")
    await page.click("#logout")

    await log_in(page, username="staff", password="staff-password-1")
    await expect(page.locator("#no-accounts")).to_be_visible()
    await expect(page.locator("a[data-nav=users]")).to_have_count(0)
    await wait_live(page)

    # An account of this user, added elsewhere, appears live; the admin's never does.
    own = sim.create_seller(nick="店员的店")
    await server.engine.add("staff-shop", own["cookie"], owner="staff")
    row = page.locator("tr[data-account='staff-shop']")
    await expect(row.locator("[data-state]")).to_have_attribute("data-state", "running")
    await expect(page.locator("tr[data-account='boss-shop']")).to_have_count(0)

    # Deleted elsewhere: the row goes away live too.
    await server.engine.remove("staff-shop")
    await expect(row).to_have_count(0)

    assert (await page.request.get("/accounts/boss-shop")).status == 404
    assert (await page.request.get("/users")).status == 403
