from pathlib import Path

import pytest
from sqlalchemy import select

from xianyu_autoreply.protocol import InvalidCookie
from xianyu_autoreply.replies import RuleError
from xianyu_autoreply.store import (
    UNSET,
    AccountNotFound,
    AccountSettings,
    AiSettingsUpdate,
    Conflict,
    Database,
    DatabaseError,
    DecryptionError,
    InvalidValue,
    Rule,
    RuleMatch,
    SecretBox,
    Store,
    UserNotFound,
    VersionConflict,
)
from xianyu_autoreply.store.models import AccountRow, AiSettingsRow

from .store_samples import COOKIE, COOKIE_SECRET_PART, OTHER_COOKIE, failing_statement, read_files, snapshot

NEW_COOKIE = "unb=2200123456789; cookie2=abcdefabcdefabcdefabcdefabcdef00; t=freshtoken123456"
SECOND_SELLER = "unb=3300999; cookie2=0000111122223333"


async def test_create_and_read_an_account(store: Store, account: str) -> None:
    created = await store.get_account(account)
    assert created.owner == "alice" and created.seller_id == "2200123456789"
    assert created.enabled and created.version == 1 and created.remark == "first shop"
    assert COOKIE_SECRET_PART not in created.cookie_masked and "unb=2200123456789" in created.cookie_masked
    assert created.created_at.tzinfo is not None
    assert await store.get_account_cookie(account) == COOKIE


async def test_create_refuses_a_taken_id(store: Store, account: str) -> None:
    with pytest.raises(Conflict):
        await store.create_account(account, COOKIE)


async def test_create_refuses_an_unknown_owner(store: Store) -> None:
    with pytest.raises(UserNotFound):
        await store.create_account("x", COOKIE, owner="nobody")
    assert await store.list_accounts() == []


@pytest.mark.parametrize("bad_id", ["", "a b", "a/b", "x" * 65, "what?"])
async def test_create_refuses_an_id_that_breaks_urls(store: Store, bad_id: str) -> None:
    with pytest.raises(InvalidValue):
        await store.create_account(bad_id, COOKIE)


async def test_invalid_cookie_is_refused_before_any_write(store: Store, account: str) -> None:
    before = await snapshot(store.db)
    with pytest.raises(InvalidCookie):
        await store.create_account("new", "cookie2=abc; no_unb=1")
    with pytest.raises(InvalidCookie):
        await store.update_cookie(account, "garbage")
    assert await snapshot(store.db) == before


async def test_update_cookie_replaces_it_and_moves_the_version(store: Store, account: str) -> None:
    updated = await store.update_cookie(account, NEW_COOKIE, actor="alice")
    assert updated.version == 2
    assert await store.get_account_cookie(account) == NEW_COOKIE
    audit = await store.list_audit(account_id=account, limit=1)
    assert audit[0].action == "account.cookie" and audit[0].actor == "alice"


async def test_update_cookie_with_a_stale_version_changes_nothing(store: Store, account: str) -> None:
    await store.set_enabled(account, False)
    with pytest.raises(VersionConflict) as info:
        await store.update_cookie(account, NEW_COOKIE, expected_version=1)
    assert (info.value.expected, info.value.actual) == (1, 2)
    assert await store.get_account_cookie(account) == COOKIE
    assert (await store.update_cookie(account, NEW_COOKIE, expected_version=2)).version == 3


async def test_update_cookie_refuses_another_sellers_cookie(store: Store, account: str) -> None:
    with pytest.raises(InvalidValue, match="seller 3300999"):
        await store.update_cookie(account, SECOND_SELLER)
    moved = await store.update_cookie(account, SECOND_SELLER, allow_other_seller=True)
    assert moved.seller_id == "3300999"


async def test_update_cookie_of_a_missing_account(store: Store) -> None:
    with pytest.raises(AccountNotFound):
        await store.update_cookie("ghost", COOKIE)


async def test_set_enabled_and_list_filters(store: Store, account: str) -> None:
    await store.create_user("bob", "h")
    await store.create_account("shop-2", OTHER_COOKIE, owner="bob", enabled=False)
    await store.create_account("shop-3", OTHER_COOKIE)
    assert [a.id for a in await store.list_accounts()] == ["shop-1", "shop-2", "shop-3"]
    assert [a.id for a in await store.list_accounts(owner="bob")] == ["shop-2"]
    assert [a.id for a in await store.list_accounts(enabled=False)] == ["shop-2"]
    disabled = await store.set_enabled(account, False)
    assert not disabled.enabled and disabled.version == 2
    assert [s.id for s in await store.list_account_secrets()] == ["shop-3"]
    assert {s.id for s in await store.list_account_secrets(enabled=None)} == {"shop-1", "shop-2", "shop-3"}


async def test_update_account_changes_only_what_is_given(store: Store, account: str) -> None:
    await store.create_user("bob", "h")
    updated = await store.update_account(
        account, remark="renamed", proxy="socks5://user:pw@10.0.0.1:1080", owner="bob", auto_confirm=True
    )
    assert updated.remark == "renamed" and updated.owner == "bob" and updated.auto_confirm
    assert updated.proxy_masked == "socks5://***@10.0.0.1:1080"
    assert updated.pause_minutes == 10.0
    secrets = await store.get_account_secrets(account)
    assert secrets.proxy == "socks5://user:pw@10.0.0.1:1080"
    assert "pw@" not in repr(secrets) and COOKIE_SECRET_PART not in repr(secrets)
    cleared = await store.update_account(account, proxy=None, owner=None, remark=UNSET)
    assert cleared.proxy_masked is None and cleared.owner is None and cleared.remark == "renamed"
    assert (await store.get_account_secrets(account)).proxy is None


async def test_delete_account_cascades_to_everything_it_owns(store: Store, account: str) -> None:
    await store.replace_rules(account, [Rule("hi", "hello")])
    await store.claim_inbound(account, "m1", chat_id="c1", created_ms=1, text="hi")
    await store.pause_chat(account, "c1", until=None)
    await store.record_order(account, "o1", status="paid")
    await store.claim_delivery(account, "o1")
    await store.delete_account(account)
    with pytest.raises(AccountNotFound):
        await store.get_account(account)
    rows = await snapshot(store.db)
    for table in (
        "accounts",
        "rules",
        "account_settings",
        "ai_settings",
        "messages",
        "chat_state",
        "orders",
        "order_events",
        "deliveries",
    ):
        assert rows[table] == [], table
    audit = await store.list_audit(account_id=account)  # the audit log outlives the account
    assert audit[0].action == "account.delete"
    with pytest.raises(AccountNotFound):
        await store.delete_account(account)


async def test_replace_rules_keeps_order_and_ids(store: Store, account: str) -> None:
    saved = await store.replace_rules(
        account,
        [
            Rule("价格", "9.9 包邮", match="exact", priority=5),
            Rule("hi", "hello", id="greeting"),
            Rule(r"\d+", "a number", match=RuleMatch.REGEX, item_id="item-1", kind="image"),
        ],
    )
    assert [r.keyword for r in saved] == ["价格", "hi", r"\d+"]
    assert saved[1].id == "greeting" and saved[0].id and saved[0].id != saved[2].id
    assert saved[2].match is RuleMatch.REGEX and saved[2].item_id == "item-1"
    assert await store.get_rules(account) == saved
    assert (await store.get_account(account)).version == 2
    again = await store.replace_rules(account, [saved[2], saved[0]])
    assert [r.id for r in again] == [saved[2].id, saved[0].id]


async def test_replace_rules_refuses_duplicate_ids_and_unknown_kinds(store: Store, account: str) -> None:
    with pytest.raises(InvalidValue):
        await store.replace_rules(account, [Rule("a", "b", id="x"), Rule("c", "d", id="x")])
    with pytest.raises(RuleError, match="match"):
        Rule("a", "b", match="fuzzy")  # type: ignore[arg-type]


async def test_replace_rules_is_atomic_on_a_constraint_violation(store: Store, account: str) -> None:
    await store.replace_rules(account, [Rule("hi", "hello")])
    before = await snapshot(store.db)
    broken = Rule(None, "no keyword")  # type: ignore[arg-type]  # NOT NULL fails after the DELETE ran
    with pytest.raises(DatabaseError):
        await store.replace_rules(account, [Rule("ok", "fine"), broken])
    assert await snapshot(store.db) == before


@pytest.mark.parametrize(
    ("write", "fragment"),
    [
        ("create_account", "INSERT INTO ai_settings"),
        ("update_cookie", "INSERT INTO audit_log"),
        ("set_enabled", "INSERT INTO audit_log"),
        ("update_account", "INSERT INTO audit_log"),
        ("delete_account", "INSERT INTO audit_log"),
        ("replace_rules", "INSERT INTO rules"),
        ("put_settings", "UPDATE ai_settings"),
        ("put_ai_settings", "INSERT INTO audit_log"),
    ],
)
async def test_a_database_failure_in_any_account_write_leaves_everything_as_before(
    store: Store, account: str, write: str, fragment: str
) -> None:
    await store.replace_rules(account, [Rule("hi", "hello")])
    calls = {
        "create_account": lambda: store.create_account("shop-9", OTHER_COOKIE, owner="alice"),
        "update_cookie": lambda: store.update_cookie(account, NEW_COOKIE),
        "set_enabled": lambda: store.set_enabled(account, False),
        "update_account": lambda: store.update_account(account, remark="x", proxy="http://h:1"),
        "delete_account": lambda: store.delete_account(account),
        "replace_rules": lambda: store.replace_rules(account, [Rule("a", "b"), Rule("c", "d")]),
        "put_settings": lambda: store.put_settings(
            account, AccountSettings(default_reply="x"), ai=AiSettingsUpdate(enabled=True)
        ),
        "put_ai_settings": lambda: store.put_ai_settings(account, AiSettingsUpdate(enabled=True, api_key="sk-new")),
    }
    before = await snapshot(store.db)
    with failing_statement(store.db, fragment) as failed, pytest.raises(DatabaseError):
        await calls[write]()
    assert failed, "the injected failure did not fire"
    assert await snapshot(store.db) == before


async def test_settings_round_trip_with_account_fields(store: Store, account: str) -> None:
    assert await store.get_settings(account) == AccountSettings()
    wanted = AccountSettings(
        default_reply="亲，在的",
        default_reply_once_per_chat=True,
        debounce_seconds=1.5,
        pause_minutes=30,
        auto_confirm=True,
    )
    assert await store.put_settings(account, wanted) == wanted
    assert await store.get_settings(account) == wanted
    shown = await store.get_account(account)
    assert shown.auto_confirm and shown.pause_minutes == 30 and shown.version == 2


async def test_ai_api_key_is_write_only(store: Store, account: str) -> None:
    assert not (await store.get_ai_settings(account)).has_api_key
    saved = await store.put_ai_settings(
        account, AiSettingsUpdate(enabled=True, model="qwen", api_key="sk-abcdefghijklmnop1234", max_bargain_rounds=2)
    )
    assert saved.has_api_key and saved.api_key_masked == "***1234" and "abcdef" not in repr(saved)
    assert await store.get_ai_api_key(account) == "sk-abcdefghijklmnop1234"
    kept = await store.put_ai_settings(account, AiSettingsUpdate(enabled=False, model="qwen"))
    assert kept.has_api_key and not kept.enabled
    assert await store.get_ai_api_key(account) == "sk-abcdefghijklmnop1234"
    removed = await store.put_ai_settings(account, AiSettingsUpdate(api_key=None))
    assert not removed.has_api_key and await store.get_ai_api_key(account) is None


async def test_settings_of_a_missing_account(store: Store) -> None:
    with pytest.raises(AccountNotFound):
        await store.get_settings("ghost")
    with pytest.raises(AccountNotFound):
        await store.put_settings("ghost", AccountSettings())
    with pytest.raises(AccountNotFound):
        await store.get_rules("ghost")


async def test_secrets_are_encrypted_at_rest(store: Store, account: str) -> None:
    await store.update_account(account, proxy="http://proxyuser:proxypass@10.1.1.1:3128")
    await store.put_ai_settings(account, AiSettingsUpdate(api_key="sk-plaintextapikey00"))
    async with store.db.read() as s:
        row = (await s.scalars(select(AccountRow))).one()
        ai = (await s.scalars(select(AiSettingsRow))).one()
    assert row.cookie_encrypted.startswith("gAAAAA") and COOKIE_SECRET_PART not in row.cookie_encrypted
    assert row.proxy_encrypted is not None and "proxypass" not in row.proxy_encrypted
    assert ai.api_key_encrypted is not None and "plaintextapikey" not in ai.api_key_encrypted


async def test_sqlite_file_bytes_hold_no_plaintext_secret(tmp_path: Path, secret_key: str) -> None:
    from xianyu_autoreply.store import upgrade_database

    url = f"sqlite+aiosqlite:///{tmp_path / 'x.db'}"
    await upgrade_database(url)
    store = Store(Database(url), SecretBox([secret_key]))
    try:
        await store.create_account("a", COOKIE, remark="visible-remark-marker", proxy="http://u:proxypass@h:1")
        await store.put_ai_settings("a", AiSettingsUpdate(api_key="sk-plaintextapikey00"))
    finally:
        await store.close()
    raw = read_files(tmp_path, "x.db*")  # the WAL holds recent pages
    assert b"visible-remark-marker" in raw  # the scan does see the data
    for secret in (COOKIE_SECRET_PART, "proxypass", "plaintextapikey"):
        assert secret.encode() not in raw


async def test_key_rotation_keeps_every_secret_readable(store: Store, account: str, secret_key: str) -> None:
    await store.update_account(account, proxy="http://u:p@h:1")
    await store.put_ai_settings(account, AiSettingsUpdate(api_key="sk-0123456789abcdef"))
    new_key = SecretBox.generate_key()
    rotated = Store(store.db, SecretBox([new_key, secret_key]))
    assert await rotated.get_account_cookie(account) == COOKIE  # the old key still decrypts
    assert await rotated.reencrypt_secrets() == 3
    assert await rotated.reencrypt_secrets() == 0
    only_new = Store(store.db, SecretBox([new_key]))
    assert await only_new.get_account_cookie(account) == COOKIE
    assert await only_new.get_ai_api_key(account) == "sk-0123456789abcdef"
    only_old = Store(store.db, SecretBox([secret_key]))
    with pytest.raises(DecryptionError):
        await only_old.get_account_cookie(account)
    listed = await only_old.list_accounts()  # a wrong key must not hide the account list
    assert "cannot decrypt" in listed[0].cookie_masked
