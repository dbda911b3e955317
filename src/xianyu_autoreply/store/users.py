"""Users and their notification settings, and the audit log.

The store keeps password hashes but never makes or checks one: hashing (argon2) belongs to the API layer.
Invariants that need a look at several rows are checked inside the writing transaction, with the rows locked
on PostgreSQL: there is always one enabled admin left, and a user who owns accounts is not deleted.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from datetime import timedelta
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import delete, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.ext.asyncio import AsyncSession

from .base import MASKED, UNREADABLE, StoreBase, check_account_id, check_limit
from .errors import Conflict, DecryptionError, InvalidValue, LastAdmin, UserNotFound
from .models import AccountRow, AuditRow, NotificationSettingsRow, UserRow, table_of, utcnow
from .records import UNSET, AuditEntry, NotificationSettings, Role, Unset, User, UserCredentials, coerce

MAX_NOTIFICATION_URLS = 20


def check_username(username: str) -> str:
    """The name as given, or `InvalidValue` (same shape as an account id: it appears in URL paths)."""
    try:
        return check_account_id(username)
    except InvalidValue:
        raise InvalidValue("a username has 1 to 64 characters without spaces, '/', '\\', '?', '#' or '%'") from None


def mask_notification_url(url: str) -> str:
    """An apprise URL shown as its scheme only: the rest is tokens and addresses."""
    scheme = urlsplit(url).scheme if "://" in url else ""
    return f"{scheme}://{MASKED}" if scheme else MASKED


class UserStore(StoreBase):
    """Users, notification settings, audit log."""

    async def create_user(
        self, username: str, password_hash: str, *, role: Role | str = Role.USER, actor: str = "system"
    ) -> User:
        """Add a user; `Conflict` when the name is taken."""
        check_username(username)
        role = coerce(Role, role, "role")
        now = utcnow()
        async with self.db.transaction() as s:
            if (await s.execute(select(UserRow.id).where(UserRow.username == username))).scalar() is not None:
                raise Conflict(f"user {username!r} already exists")
            s.add(
                UserRow(
                    username=username,
                    password_hash=password_hash,
                    role=role.value,
                    disabled=False,
                    failed_logins=0,
                    token_version=0,
                    created_at=now,
                    updated_at=now,
                )
            )
            self._audit(s, "user.create", actor=actor, detail={"username": username, "role": role.value})
            try:
                await s.flush()
            except IntegrityError as exc:
                raise Conflict(f"user {username!r} already exists") from exc
            return await _load_user(s, username)

    async def ensure_first_admin(self, username: str, password_hash: str) -> bool:
        """Create `username` as admin if there is no user at all; True when this call created it.

        Nodes starting together all try; the unique username lets exactly one of them win.
        """
        check_username(username)
        now = utcnow()
        table = table_of(UserRow)
        statement = (
            self._insert(table)
            .values(
                username=username,
                password_hash=password_hash,
                role=Role.ADMIN.value,
                disabled=False,
                failed_logins=0,
                token_version=0,
                created_at=now,
                updated_at=now,
            )
            .on_conflict_do_nothing(index_elements=["username"])
            .returning(table.c.id)
        )
        async with self.db.transaction() as s:
            if (await s.execute(select(func.count()).select_from(UserRow))).scalar_one():
                return False
            created = (await s.execute(statement)).scalar() is not None
            if created:
                self._audit(s, "user.bootstrap_admin", actor="system", detail={"username": username})
            return created

    async def get_user(self, username: str) -> User:
        """One user (without the password hash)."""
        async with self.db.read() as s:
            return await _load_user(s, username)

    async def get_user_credentials(self, username: str) -> UserCredentials:
        """The user with the stored password hash, for the login check only."""
        async with self.db.read() as s:
            row = await _user_row(s, username)
            return UserCredentials(user=_user(row), password_hash=row.password_hash)

    async def list_users(self) -> list[User]:
        """Every user, by name."""
        async with self.db.read() as s:
            return [_user(row) for row in await s.scalars(select(UserRow).order_by(UserRow.username))]

    async def count_users(self) -> int:
        """How many users exist (0 on a fresh install)."""
        async with self.db.read() as s:
            return int((await s.execute(select(func.count()).select_from(UserRow))).scalar_one())

    async def update_user(
        self,
        username: str,
        *,
        password_hash: str | Unset = UNSET,
        role: Role | str | Unset = UNSET,
        disabled: bool | Unset = UNSET,
        actor: str = "system",
    ) -> User:
        """Change the given fields; a new password or disabling voids the user's issued tokens."""
        values: dict[str, Any] = {"updated_at": utcnow()}
        if not isinstance(password_hash, Unset):
            values["password_hash"] = password_hash
            values["failed_logins"] = 0
            values["locked_until"] = None
        if not isinstance(role, Unset):
            values["role"] = coerce(Role, role, "role").value
        if not isinstance(disabled, Unset):
            values["disabled"] = disabled
        if "password_hash" in values or values.get("disabled"):
            values["token_version"] = UserRow.token_version + 1
        async with self.db.transaction() as s:
            row = await _user_row(s, username)
            if values.get("role", Role.ADMIN.value) != Role.ADMIN.value or values.get("disabled"):
                await _keep_an_admin(s, row)
            await s.execute(update(UserRow).where(UserRow.id == row.id).values(**values))
            changed = sorted(name for name in values if name not in ("updated_at", "token_version", "failed_logins"))
            self._audit(s, "user.update", actor=actor, detail={"username": username, "fields": changed})
            return await _load_user(s, username)

    async def delete_user(self, username: str, *, actor: str = "system") -> None:
        """Delete a user; `Conflict` while they own accounts, `LastAdmin` for the last enabled admin."""
        async with self.db.transaction() as s:
            row = await _user_row(s, username)
            await _keep_an_admin(s, row)
            owned = (await s.execute(select(func.count()).where(AccountRow.owner_id == row.id))).scalar_one()
            if owned:
                raise Conflict(f"user {username!r} still owns {owned} account(s): delete or reassign them first")
            await s.execute(delete(UserRow).where(UserRow.id == row.id))
            self._audit(s, "user.delete", actor=actor, detail={"username": username})

    async def record_login_failure(
        self,
        username: str,
        *,
        client: str | None = None,
        lock_after: int | None = None,
        lock_for: timedelta | None = None,
    ) -> User:
        """Count a wrong password (`failed_logins`: wrong passwords since the last login) and audit it.

        The API no longer locks anyone (api/login_throttle.py slows guessers instead); `lock_after` and `lock_for`
        still set `locked_until` for a caller that wants the old lock.
        """
        now = utcnow()
        async with self.db.transaction() as s:
            failures = (
                await s.execute(
                    update(UserRow)
                    .where(UserRow.username == username)
                    .values(failed_logins=UserRow.failed_logins + 1)
                    .returning(UserRow.failed_logins)
                )
            ).scalar()
            if failures is None:
                raise UserNotFound(username)
            self._audit(s, "user.login_failed", actor="anonymous", detail=_login_detail(username, client, failures))
            if lock_after is not None and lock_for is not None and failures >= lock_after:
                await s.execute(
                    update(UserRow)
                    .where(UserRow.username == username)
                    .values(failed_logins=0, locked_until=now + lock_for, updated_at=now)
                )
                self._audit(s, "user.locked", actor="system", detail={"username": username})
            return await _load_user(s, username)

    async def record_login_success(self, username: str, *, client: str | None = None) -> User:
        """Reset the failure count, note the login time and audit it."""
        now = utcnow()
        async with self.db.transaction() as s:
            result = await s.execute(
                update(UserRow)
                .where(UserRow.username == username)
                .values(failed_logins=0, locked_until=None, last_login_at=now)
            )
            if not result.rowcount:  # type: ignore[attr-defined]  # DML gives a CursorResult
                raise UserNotFound(username)
            self._audit(s, "user.login", actor=username, detail=_login_detail(username, client))
            return await _load_user(s, username)

    # -- notification settings ----------------------------------------------------------------------------------

    async def get_notification_settings(self, username: str) -> NotificationSettings:
        """The user's notification settings, URLs masked to their scheme."""
        async with self.db.read() as s:
            user_id = await self._user_id(s, username)
            row = await s.get(NotificationSettingsRow, user_id)
            if row is None:
                return NotificationSettings(username=username, urls_masked=(), events=(), updated_at=None)
            try:
                masked = tuple(mask_notification_url(url) for url in self._urls(row))
            except DecryptionError:
                masked = (UNREADABLE,)
            return NotificationSettings(
                username=username, urls_masked=masked, events=tuple(row.events), updated_at=row.updated_at
            )

    async def get_notification_urls(self, username: str) -> list[str]:
        """The user's decrypted notification URLs, for the notifier and the owner's own editor."""
        async with self.db.read() as s:
            row = await s.get(NotificationSettingsRow, await self._user_id(s, username))
            return self._urls(row) if row else []

    async def put_notification_settings(
        self, username: str, *, urls: Sequence[str], events: Sequence[str]
    ) -> NotificationSettings:
        """Replace the user's notification URLs and the events they want."""
        if len(urls) > MAX_NOTIFICATION_URLS:
            raise InvalidValue(f"at most {MAX_NOTIFICATION_URLS} notification URLs")
        values = {
            "urls_encrypted": self.box.encrypt(json.dumps(list(urls))),
            "events": sorted(set(events)),
            "updated_at": utcnow(),
        }
        async with self.db.transaction() as s:
            user_id = await self._user_id(s, username)
            await s.execute(
                self._insert(table_of(NotificationSettingsRow))
                .values(user_id=user_id, **values)
                .on_conflict_do_update(index_elements=["user_id"], set_=values)
            )
            self._audit(s, "notifications.update", actor=username, detail={"urls": len(urls), "events": len(events)})
        return await self.get_notification_settings(username)

    def _urls(self, row: NotificationSettingsRow) -> list[str]:
        return list(json.loads(self.box.decrypt(row.urls_encrypted)))

    # -- audit log ----------------------------------------------------------------------------------------------

    async def audit(
        self, action: str, *, actor: str = "system", account_id: str | None = None, detail: dict[str, Any] | None = None
    ) -> None:
        """Record an action in the audit log on its own (secret-named detail values are masked)."""
        async with self.db.transaction() as s:
            self._audit(s, action, actor=actor, account_id=account_id, detail=detail)

    async def list_audit(self, *, account_id: str | None = None, limit: int = 100) -> list[AuditEntry]:
        """The latest audit entries, newest first."""
        statement = select(AuditRow)
        if account_id is not None:
            statement = statement.where(AuditRow.account_id == account_id)
        async with self.db.read() as s:
            rows = await s.scalars(statement.order_by(AuditRow.id.desc()).limit(check_limit(limit)))
            return [
                AuditEntry(
                    id=row.id,
                    at=row.at,
                    actor=row.actor,
                    account_id=row.account_id,
                    action=row.action,
                    detail=row.detail,
                )
                for row in rows
            ]


async def _user_row(s: AsyncSession, username: str) -> UserRow:
    row = (
        await s.scalars(select(UserRow).where(UserRow.username == username).execution_options(populate_existing=True))
    ).first()
    if row is None:
        raise UserNotFound(username)
    return row


async def _load_user(s: AsyncSession, username: str) -> User:
    return _user(await _user_row(s, username))


async def _keep_an_admin(s: AsyncSession, row: UserRow) -> None:
    """Refuse a change that takes away the last enabled admin (admin rows locked until commit on PostgreSQL)."""
    if row.role != Role.ADMIN.value or row.disabled:
        return
    admins = (
        await s.scalars(
            select(UserRow.id).where(UserRow.role == Role.ADMIN.value, UserRow.disabled.is_(False)).with_for_update()
        )
    ).all()
    if set(admins) <= {row.id}:
        raise LastAdmin(f"{row.username!r} is the last enabled admin: make another admin first")


def _login_detail(username: str, client: str | None, failures: int | None = None) -> dict[str, Any]:
    detail: dict[str, Any] = {"username": username}
    if client is not None:
        detail["client"] = client[:64]
    if failures is not None:
        detail["failed_logins"] = failures
    return detail


def _user(row: UserRow) -> User:
    return User(
        username=row.username,
        role=Role(row.role),
        disabled=row.disabled,
        failed_logins=row.failed_logins,
        locked_until=row.locked_until,
        last_login_at=row.last_login_at,
        token_version=row.token_version,
        created_at=row.created_at,
        updated_at=row.updated_at,
    )
