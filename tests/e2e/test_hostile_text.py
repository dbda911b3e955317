"""Text from outside in a real browser: what buyers type (messages, nicknames), item titles, account notes and ids
are shown as the very characters typed, on the server-rendered pages and on the live path (SSE), and never run as
script, never processed by htmx, never rendered as a template (docs/security.md, "Untrusted text in the admin").

Each check reads what a payload would set off if the page interpreted it: a dialog, `window.__pwned`, a request htmx
would make (`/__hx_probe`, the bulk API), an element or a `javascript:` link made of the text, `{{7*7}}` shown as
49 (every text is compared with the exact characters sent).
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import AsyncIterator, Iterable
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
import pytest

from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import DeliveryRuleSpec, Rule

from ..polling import eventually
from .conftest import log_in, wait_live

pytest.importorskip("playwright.async_api", reason="the playwright package is not installed (pip install -e '.[test]')")
from playwright.async_api import Dialog, Page, Request, Route, expect

expect.set_options(timeout=15_000)

PAYLOADS = (
    "<script>window.__pwned=1</script>",
    '<img src=x onerror="window.__pwned=2">',
    '<div hx-get="/__hx_probe" hx-trigger="load">x</div>',
    '<a hx-post="/api/v1/accounts/bulk" hx-trigger="load">',
    "{{7*7}}",
    "{{ config }}",
    "{% for x in range(3) %}{{ x }}{% endfor %}",
    "${7*7}",
    '<a href="javascript:window.__pwned=3">click</a>',
)
# Account ids allow neither spaces nor '/': markup without attributes or closing tags, and template text.
HOSTILE_IDS = ("<script>window.__pwned=4", "<b>bold", "{{7*7}}", "${7*7}")
PROBED = ("/__hx_probe", "/api/v1/accounts/bulk")
# Elements a payload would become if it were parsed as HTML (the admin itself has no image and no inline script).
MADE_OF_TEXT = (
    "script:not([src]), img, [onerror], [hx-get*='__hx_probe'], [hx-post*='/api/v1/accounts/bulk'], b, "
    "a[href*='javascript' i]"
)


class Tripwires:
    """Everything on one page a payload would set off if it ran or were processed by htmx."""

    def __init__(self) -> None:
        self.dialogs: list[str] = []
        self.requests: list[str] = []

    @classmethod
    async def on(cls, page: Page) -> Tripwires:
        """Watch the page; the probed paths answer 204 so that a (wrongly) fired request leaves no console error."""
        wires = cls()

        async def dismiss(dialog: Dialog) -> None:
            wires.dialogs.append(dialog.message)
            await dialog.dismiss()

        async def answer(route: Route) -> None:
            await route.fulfill(status=204)

        page.on("dialog", dismiss)
        page.on("request", wires.record)
        for path in PROBED:
            await page.route(f"**{path}*", answer)
        return wires

    def record(self, request: Request) -> None:
        """Remember a request's path (and query: the probes say where they were fired from)."""
        url = urlsplit(request.url)
        self.requests.append(f"{url.path}?{url.query}" if url.query else url.path)

    def fired(self) -> list[str]:
        """Requests no page of ours makes: the probes, and an `<img src=x>` relative to the page."""
        return [r for r in self.requests if r.split("?")[0] in PROBED or r.split("?")[0].endswith("/x")]

    async def assert_quiet(self, page: Page) -> None:
        """Nothing ran, nothing was processed, nothing was made of the text."""
        await asyncio.sleep(0.5)  # an htmx `load` trigger fires as the node is processed; its request follows
        assert self.dialogs == []
        assert self.fired() == []
        assert await page.evaluate("() => typeof window.__pwned") == "undefined"
        assert await page.locator(MADE_OF_TEXT).count() == 0
        assert await page.evaluate("() => [...document.links].filter((a) => a.protocol === 'javascript:').length") == 0


async def texts(page: Page, selector: str, *parts: str) -> list[tuple[str | None, ...]]:
    """The exact text (`textContent`, nothing normalised) of `parts` inside every element matching `selector`."""
    rows: list[list[str | None]] = await page.eval_on_selector_all(
        selector,
        "(els, parts) => els.map((el) => parts.map((p) => (el.querySelector(p) || {}).textContent ?? null))",
        list(parts),
    )
    return [tuple(row) for row in rows]


async def shows(page: Page, selector: str, parts: Iterable[str], expected: Iterable[tuple[str, ...]]) -> None:
    """Wait until the elements matching `selector` show exactly `expected` (in any order: replies run in parallel)."""
    parts, wanted = tuple(parts), Counter(expected)

    async def same() -> bool:
        return Counter(await texts(page, selector, *parts)) == wanted

    try:
        await eventually(same, timeout=15.0)
    except AssertionError:
        raise AssertionError(f"{selector} shows {await texts(page, selector, *parts)}, not {sorted(wanted)}") from None


class Control:
    """The simulator's control API over HTTP, as a test script outside the process would drive it."""

    def __init__(self, sim: Simulator) -> None:
        self.client = httpx.AsyncClient(base_url=sim.control_url, timeout=10)

    async def post(self, path: str, **body: Any) -> dict[str, Any]:
        answer = await self.client.post(path, json=body)
        assert answer.status_code == 200, answer.text
        result: dict[str, Any] = answer.json()
        return result

    async def aclose(self) -> None:
        await self.client.aclose()


async def open_shop(server: Any, sim: Simulator, account_id: str, *, remark: str = "") -> dict[str, Any]:
    """A running account on the simulator."""
    seller = sim.create_seller(nick=f"店{account_id}")
    await server.engine.add(account_id, seller["cookie"], owner="admin", remark=remark)
    await eventually(lambda: server.engine.state(account_id).lifecycle == "running", timeout=15.0)
    return seller


@pytest.fixture
async def control(sim: Simulator) -> AsyncIterator[Control]:
    api = Control(sim)
    try:
        yield api
    finally:
        await api.aclose()


async def test_buyer_messages_and_nicknames_show_as_typed_live_and_after_reload(
    page: Page, server: Any, sim: Simulator, control: Control
) -> None:
    seller = await open_shop(server, sim, "shop-m")
    first = await control.post("messages", seller=seller["unb"], text="在吗", buyer_nick="小王")
    wires = await Tripwires.on(page)
    await log_in(page)
    await page.goto(f"/accounts/shop-m/chats/{first['chat_id']}")
    await wait_live(page)

    # Each payload as the text and as the nickname of a message that arrives while the page is open.
    for payload in PAYLOADS:
        await control.post("messages", seller=seller["unb"], chat_id=first["chat_id"], text=payload, buyer_nick=payload)
    expected = [("在吗", "小王"), *((p, p) for p in PAYLOADS)]
    await shows(page, "#chat-log li.in", (".text", ".who"), expected)
    await wires.assert_quiet(page)

    # The same conversation rendered by the server.
    await page.reload()
    await shows(page, "#chat-log li.in", (".text", ".who"), expected)
    await wires.assert_quiet(page)


async def test_the_chat_list_shows_hostile_last_messages_as_typed_live_and_after_reload(
    page: Page, server: Any, sim: Simulator, control: Control
) -> None:
    seller = await open_shop(server, sim, "shop-l")
    wires = await Tripwires.on(page)
    await log_in(page)
    await page.goto("/accounts/shop-l/chats")
    await wait_live(page)

    # New chats while the list is open: the stream nudges it and it fetches itself again (an htmx swap).
    for payload in PAYLOADS:
        await control.post("messages", seller=seller["unb"], text=payload, buyer_nick=payload)
    expected = [(p,) for p in PAYLOADS]
    await shows(page, "#chats tbody tr", (".last",), expected)
    await wires.assert_quiet(page)

    await page.reload()
    await shows(page, "#chats tbody tr", (".last",), expected)
    await wires.assert_quiet(page)


async def test_hostile_item_titles_show_as_typed_in_replies_and_on_the_orders_page(
    page: Page, server: Any, sim: Simulator, control: Control
) -> None:
    seller = await open_shop(server, sim, "shop-t")
    # A reply that quotes the item's title, and a delivery rule chosen by title (so the order records the title).
    await server.engine.set_rules("shop-t", [Rule("标题", "商品：{item_title}")])
    await server.engine.set_delivery_rules("shop-t", [DeliveryRuleSpec("text", title_keyword="卡", content="已发货")])
    items = [await control.post("items", seller=seller["unb"], title=f"卡 {p}", price="9.9") for p in PAYLOADS]
    wires = await Tripwires.on(page)
    await log_in(page)

    ordered: list[tuple[str, str]] = []
    for item in items:
        # The chat about this item is open when the buyer asks; the reply with the title arrives live.
        first = await control.post("messages", seller=seller["unb"], item_id=item["item_id"], text="你好")
        await page.goto(f"/accounts/shop-t/chats/{first['chat_id']}")
        await wait_live(page)
        await control.post("messages", seller=seller["unb"], chat_id=first["chat_id"], text="标题是什么")
        await shows(page, "#chat-log li.out", (".text",), [(f"商品：{item['title']}",)])
        await wires.assert_quiet(page)
        await page.reload()
        await shows(page, "#chat-log li.out", (".text",), [(f"商品：{item['title']}",)])
        await wires.assert_quiet(page)
        await control.post("orders", seller=seller["unb"], status="paid", buyer=first["buyer"], item_id=item["item_id"])
        ordered.append((first["buyer"], item["title"]))

    async def titled() -> bool:
        orders = await server.store.list_orders("shop-t")
        return len(orders) == len(items) and all(o.item_title for o in orders)

    await eventually(titled, timeout=15.0)
    # The engine records the buyer's id, not the nickname: orders with nicknames are written as it would write them.
    for n, payload in enumerate(PAYLOADS):
        await server.store.record_order("shop-t", f"nick-{n}", status="paid", buyer_nick=payload, item_title=payload)
    await page.goto("/orders")
    await shows(page, "#orders tbody tr", (".buyer", ".item"), [*ordered, *((p, p) for p in PAYLOADS)])
    await wires.assert_quiet(page)


async def test_a_hostile_account_filter_in_the_orders_address_is_shown_as_typed(page: Page, server: Any) -> None:
    wires = await Tripwires.on(page)
    await log_in(page)
    for payload in PAYLOADS:
        await page.goto(f"/orders?account={quote(payload, safe='')}")
        await shows(page, "main", ("h1 .filter",), [(payload,)])
        await wires.assert_quiet(page)


async def test_hostile_account_notes_and_ids_show_as_typed_on_the_dashboard_and_account_page(
    page: Page, server: Any, sim: Simulator
) -> None:
    notes = {f"note-{n}": payload for n, payload in enumerate(PAYLOADS)}
    notes.update({account_id: "{{7*7}}" for account_id in HOSTILE_IDS})
    for account_id, note in notes.items():
        seller = sim.create_seller(nick=f"店{len(account_id)}")
        await server.engine.add(account_id, seller["cookie"], owner="admin", remark=note, enabled=False)
    wires = await Tripwires.on(page)
    await log_in(page)
    await shows(page, "#account-rows tr", (".account-link", ".remark"), notes.items())
    await wires.assert_quiet(page)

    # Live: a row re-rendered by the stream (a state change) shows a changed note ...
    await wait_live(page)
    for account_id, note in list(notes.items())[: len(PAYLOADS)]:
        notes[account_id] = f"新：{note}"
        await server.engine.update_account(account_id, remark=notes[account_id])
        await server.engine.set_enabled(account_id, True)
    await shows(page, "#account-rows tr", (".account-link", ".remark"), notes.items())
    await expect(page.locator("#account-rows [data-state='running']")).to_have_count(len(PAYLOADS))
    # ... and the rows fetched again when an account is added elsewhere show the new one's.
    seller = sim.create_seller(nick="新店")
    await server.engine.add("note-new", seller["cookie"], owner="admin", remark=PAYLOADS[2], enabled=False)
    notes["note-new"] = PAYLOADS[2]
    await shows(page, "#account-rows tr", (".account-link", ".remark"), notes.items())
    await wires.assert_quiet(page)

    # The account page's heading.
    for account_id in ("note-0", "note-2", *HOSTILE_IDS):
        await page.goto(f"/accounts/{quote(account_id, safe='')}")
        await shows(page, "main", ("h1 .remark",), [(notes[account_id],)])
        await expect(page.locator("h1")).to_contain_text(account_id)
        await wires.assert_quiet(page)


# Where each page keeps text from outside; htmx must not process anything that lands there (hx-disable).
CONTAINERS = {
    "chat": ("#chat-log", "h1"),
    "chats": ("#chat-list", "h1"),
    "dashboard": ("#account-rows .remark", "#account-rows td.err"),
    "account": ("h1 .remark",),
    "orders": ("#orders-box", "h1"),
}
# Swapped in the way the SSE extension swaps a live fragment (htmx.swap processes the new nodes at once).
SWAP = """([selector, html]) => {
    const target = document.querySelector(selector);
    htmx.swap(target, html, {swapStyle: "beforeend"});
    return target.querySelectorAll("[hx-get]").length;
}"""
# The dashboard and the account page re-render their live parts once their stream opens: wait for that first.
COUNT_LIVE_UPDATES = """document.addEventListener("htmx:sseMessage", () => {
    window.__liveUpdates = (window.__liveUpdates || 0) + 1;
});"""


async def test_markup_that_reaches_a_container_of_outside_text_is_never_processed_by_htmx(
    page: Page, server: Any, sim: Simulator, control: Control
) -> None:
    """Defence in depth: were a fragment ever to carry markup, htmx would not act on it in these containers."""
    seller = await open_shop(server, sim, "shop-g", remark="备注")
    first = await control.post("messages", seller=seller["unb"], text="在吗")
    await server.store.record_order("shop-g", "o-1", status="paid", buyer_nick="小王", item_title="相机")
    wires = await Tripwires.on(page)
    await log_in(page)
    paths = {
        "chat": f"/accounts/shop-g/chats/{first['chat_id']}",
        "chats": "/accounts/shop-g/chats",
        "dashboard": "/",
        "account": "/accounts/shop-g",
        "orders": "/orders?account=shop-g",
    }
    await page.add_init_script(COUNT_LIVE_UPDATES)
    for view, path in paths.items():
        await page.goto(path)
        if view in ("dashboard", "account"):
            await page.wait_for_function("() => window.__liveUpdates >= 1")
        for n, selector in enumerate(CONTAINERS[view]):
            probe = f'<div hx-get="/__hx_probe?{view}-{n}" hx-trigger="load">x</div>'
            await expect(page.locator(selector)).to_have_count(1)
            assert await page.evaluate(SWAP, [selector, probe]) == 1
        # The control: the same markup outside those containers is processed (the probe above would have fired).
        await page.evaluate(SWAP, ["main", f'<div hx-get="/__hx_probe?{view}-control" hx-trigger="load">x</div>'])
        await eventually(lambda view=view: f"/__hx_probe?{view}-control" in wires.requests)
    await asyncio.sleep(0.5)
    assert wires.fired() == [f"/__hx_probe?{view}-control" for view in paths]

    # The SSE extension registers a live region's listeners again when its stream reconnects, hx-disable or not:
    # admin.js refuses a live update to any element inside such a container.
    await page.goto(paths["chat"])
    refused = """(selector) => {
        const elt = document.createElement("div");
        document.querySelector(selector).appendChild(elt);
        const message = new CustomEvent("htmx:sseBeforeMessage", {bubbles: true, cancelable: true});
        return !elt.dispatchEvent(message);
    }"""
    assert await page.evaluate(refused, "#chat-log") is True
    assert await page.evaluate(refused, "#chat-live") is False


async def test_line_separators_in_a_buyer_message_arrive_live_unchanged(
    page: Page, server: Any, sim: Simulator, control: Control
) -> None:
    seller = await open_shop(server, sim, "shop-s")
    first = await control.post("messages", seller=seller["unb"], text="在吗")
    await log_in(page)
    await page.goto(f"/accounts/shop-s/chats/{first['chat_id']}")
    await wait_live(page)
    # Not line breaks to an event stream (only CR and LF are): the live line keeps them, as the reloaded page does.
    text = "第一行\u2028第二行\u0085第三行\u001c第四行"
    await control.post("messages", seller=seller["unb"], chat_id=first["chat_id"], text=text)
    await shows(page, "#chat-log li.in", (".text",), [("在吗",), (text,)])
    await page.reload()
    await shows(page, "#chat-log li.in", (".text",), [("在吗",), (text,)])


async def test_a_chat_arriving_right_after_another_still_reaches_the_open_chat_list(
    page: Page, server: Any, sim: Simulator, control: Control
) -> None:
    seller = await open_shop(server, sim, "shop-b")
    await log_in(page)
    await page.goto("/accounts/shop-b/chats")
    await wait_live(page)
    await control.post("messages", seller=seller["unb"], text="第一位买家")
    await shows(page, "#chats tbody tr", (".last",), [("第一位买家",)])
    # The next nudge comes within a second of the first: the list must not drop it and stay one chat behind.
    await control.post("messages", seller=seller["unb"], text="第二位买家")
    await shows(page, "#chats tbody tr", (".last",), [("第一位买家",), ("第二位买家",)])
