import asyncio
from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import select

from xianyu_autoreply.store import (
    Conflict,
    DatabaseError,
    InvalidValue,
    LastAdmin,
    Role,
    Store,
    UserNotFound,
)
from xianyu_autoreply.store.models import NotificationSettingsRow

from .store_samples import COOKIE, failing_statement, snapshot


async def test_create_read_and_list_users(store: Store) -> None:
    admin = await store.create_user("admin", "$argon2id$a", role="admin")
    staff = await store.create_user("店员", "$argon2id$b")
    assert admin.role is Role.ADMIN and staff.role is Role.USER and not staff.disabled
    assert [u.username for u in await store.list_users()] == ["admin", "店员"]
    assert await store.get_user("店员") == staff
    credentials = await store.get_user_credentials("admin")
    assert credentials.password_hash == "$argon2id$a" and "argon2" not in repr(credentials)
    assert await store.count_users() == 2


async def test_user_errors(store: Store) -> None:
    await store.create_user("admin", "h", role="admin")
    with pytest.raises(Conflict):
        await store.create_user("admin", "h")
    with pytest.raises(InvalidValue):
        await store.create_user("has space", "h")
    with pytest.raises(InvalidValue, match="role"):
        await store.create_user("x", "h", role="root")
    with pytest.raises(UserNotFound):
        await store.get_user("nobody")


async def test_first_admin_is_created_only_on_an_empty_install(store: Store) -> None:
    results = await asyncio.gather(*(store.ensure_first_admin("admin", "h") for _ in range(4)))
    assert sorted(results) == [False, False, False, True]
    assert (await store.get_user("admin")).role is Role.ADMIN
    assert not await store.ensure_first_admin("someone-else", "h")
    assert await store.count_users() == 1


async def test_password_change_and_disable_void_tokens(store: Store) -> None:
    await store.create_user("admin", "h", role="admin")
    await store.create_user("bob", "h1")
    changed = await store.update_user("bob", password_hash="h2")
    assert changed.token_version == 1
    assert (await store.get_user_credentials("bob")).password_hash == "h2"
    disabled = await store.update_user("bob", disabled=True)
    assert disabled.disabled and disabled.token_version == 2
    promoted = await store.update_user("bob", role=Role.ADMIN, disabled=False)
    assert promoted.role is Role.ADMIN and promoted.token_version == 2


async def test_the_last_enabled_admin_cannot_go(store: Store) -> None:
    await store.create_user("admin", "h", role="admin")
    await store.create_user("bob", "h")
    before = await snapshot(store.db)
    for change in (
        store.update_user("admin", role="user"),
        store.update_user("admin", disabled=True),
        store.delete_user("admin"),
    ):
        with pytest.raises(LastAdmin):
            await change
    assert await snapshot(store.db) == before
    await store.update_user("bob", role="admin")
    await store.update_user("admin", role="user")
    assert (await store.get_user("admin")).role is Role.USER


async def test_a_user_who_owns_accounts_is_not_deleted(store: Store) -> None:
    await store.create_user("admin", "h", role="admin")
    await store.create_user("bob", "h")
    await store.create_account("shop", COOKIE, owner="bob")
    with pytest.raises(Conflict, match="owns 1"):
        await store.delete_user("bob")
    await store.delete_account("shop")
    await store.delete_user("bob")
    with pytest.raises(UserNotFound):
        await store.get_user("bob")


async def test_failed_logins_lock_then_success_resets(store: Store) -> None:
    await store.create_user("bob", "h")
    for expected in (1, 2):
        user = await store.record_login_failure("bob", lock_after=3, lock_for=timedelta(minutes=15))
        assert user.failed_logins == expected and user.locked_until is None
    locked = await store.record_login_failure("bob", lock_after=3, lock_for=timedelta(minutes=15))
    assert locked.locked_until is not None and locked.locked_until > datetime.now(UTC) + timedelta(minutes=14)
    assert locked.failed_logins == 0
    await store.record_login_failure("bob", lock_after=3, lock_for=timedelta(minutes=15))
    ok = await store.record_login_success("bob")
    assert ok.failed_logins == 0 and ok.locked_until is None and ok.last_login_at is not None
    with pytest.raises(UserNotFound):
        await store.record_login_failure("nobody", lock_after=3, lock_for=timedelta(minutes=1))


async def test_concurrent_login_failures_are_all_counted(store: Store) -> None:
    await store.create_user("bob", "h")
    await asyncio.gather(
        *(store.record_login_failure("bob", lock_after=100, lock_for=timedelta(minutes=1)) for _ in range(7))
    )
    assert (await store.get_user("bob")).failed_logins == 7


async def test_notification_urls_are_encrypted_and_masked(store: Store) -> None:
    await store.create_user("bob", "h")
    empty = await store.get_notification_settings("bob")
    assert empty.urls_masked == () and empty.events == () and empty.updated_at is None
    urls = ["tgram://123456:ABCDEFsecret/987654", "mailto://user:mailpass@example.com"]
    shown = await store.put_notification_settings("bob", urls=urls, events=["order.paid", "account.auth_expired"])
    assert shown.urls_masked == ("tgram://***", "mailto://***")
    assert shown.events == ("account.auth_expired", "order.paid")
    assert await store.get_notification_urls("bob") == urls
    await store.put_notification_settings("bob", urls=urls[:1], events=[])
    assert await store.get_notification_urls("bob") == urls[:1]
    async with store.db.read() as s:
        stored = (await s.scalars(select(NotificationSettingsRow.urls_encrypted))).one()
    assert "ABCDEFsecret" not in stored and "mailpass" not in stored
    with pytest.raises(UserNotFound):
        await store.put_notification_settings("nobody", urls=[], events=[])


async def test_audit_log_masks_secret_named_details(store: Store, account: str) -> None:
    await store.audit(
        "cookie.refreshed",
        actor="engine",
        account_id=account,
        detail={"cookie": COOKIE, "nested": {"api_key": "sk-x", "count": 2}, "reason": "token expired"},
    )
    (entry,) = await store.list_audit(account_id=account, limit=1)
    assert entry.action == "cookie.refreshed" and entry.actor == "engine"
    assert entry.detail == {"cookie": "***", "nested": {"api_key": "***", "count": 2}, "reason": "token expired"}
    assert len(await store.list_audit(limit=10)) >= 3


async def test_user_writes_are_atomic(store: Store) -> None:
    await store.create_user("admin", "h", role="admin")
    before = await snapshot(store.db)
    with failing_statement(store.db, "INSERT INTO audit_log") as failed, pytest.raises(DatabaseError):
        await store.update_user("admin", password_hash="new")
    assert failed
    with failing_statement(store.db, "INSERT INTO audit_log"), pytest.raises(DatabaseError):
        await store.create_user("bob", "h")
    assert await snapshot(store.db) == before
