"""What every part of the `Store` shares: the database, the secret box, and the few queries all of them need."""

from __future__ import annotations

import re
from datetime import datetime
from typing import Any
from urllib.parse import urlsplit

from sqlalchemy import Table, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncSession

from ..protocol import mask_cookie
from .crypto import SecretBox
from .db import Database
from .errors import AccountNotFound, DecryptionError, InvalidValue, UserNotFound, VersionConflict
from .models import AccountRow, AuditRow, Base, UserRow, utcnow
from .records import MAX_ACCOUNT_ID

_ACCOUNT_ID = re.compile(rf"[^\s/\\?#%]{{1,{MAX_ACCOUNT_ID}}}")
_SECRET_KEYS = re.compile(r"cookie|password|passwd|secret|token|api_?key|authorization|proxy", re.IGNORECASE)
MAX_PAGE = 1000
MASKED = "***"
UNREADABLE = "*** (cannot decrypt: was XAR_SECRET_KEY changed?)"


def check_account_id(account_id: str) -> str:
    """The id as given, or `InvalidValue`: 1-64 characters, no spaces and nothing that breaks a URL path."""
    if not isinstance(account_id, str) or not _ACCOUNT_ID.fullmatch(account_id):
        raise InvalidValue(
            f"an account id has 1 to {MAX_ACCOUNT_ID} characters without spaces, '/', '\\', '?', '#' or '%'"
        )
    return account_id


def check_limit(limit: int) -> int:
    """A page size, or `InvalidValue`: listing must stay bounded however large the tables grow."""
    if not 0 < limit <= MAX_PAGE:
        raise InvalidValue(f"limit must be between 1 and {MAX_PAGE}")
    return limit


def mask_proxy(proxy: str) -> str:
    """A proxy URL without its credentials: `socks5://***@host:1080`."""
    try:
        parts = urlsplit(proxy)
        host = parts.hostname or ""
        port = f":{parts.port}" if parts.port else ""
    except ValueError:
        return MASKED
    if not parts.scheme or not host:
        return MASKED
    credentials = f"{MASKED}@" if parts.username or parts.password else ""
    return f"{parts.scheme}://{credentials}{host}{port}"


def mask_api_key(key: str) -> str:
    """Enough of an API key to tell two apart, never enough to use it."""
    return f"{MASKED}{key[-4:]}" if len(key) >= 16 else MASKED


def scrub(detail: dict[str, Any] | None) -> dict[str, Any]:
    """An audit detail with every secret-named value masked (the audit log must never hold a secret)."""
    if not detail:
        return {}
    return {
        key: MASKED if _SECRET_KEYS.search(key) else scrub(value) if isinstance(value, dict) else value
        for key, value in detail.items()
    }


class StoreBase:
    """The database and the secret box, plus queries every aggregate needs."""

    def __init__(self, db: Database, box: SecretBox) -> None:
        self.db = db
        self.box = box

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.db!r})"

    def _insert(self, model: type[Base] | Table) -> Any:
        """An INSERT that can say ON CONFLICT (both dialects spell it the same way in SQLAlchemy)."""
        return postgresql.insert(model) if self.db.dialect == "postgresql" else sqlite.insert(model)

    def _decrypt_or_none(self, token: str | None) -> str | None:
        return None if token is None else self.box.decrypt(token)

    def _masked_cookie(self, token: str) -> str:
        try:
            return mask_cookie(self.box.decrypt(token))
        except DecryptionError:
            return UNREADABLE

    def _masked_proxy(self, token: str | None) -> str | None:
        if token is None:
            return None
        try:
            return mask_proxy(self.box.decrypt(token))
        except DecryptionError:
            return UNREADABLE

    async def _bump_version(
        self, session: AsyncSession, account_id: str, expected_version: int | None, *, now: datetime | None = None
    ) -> int:
        """Move the account to its next version (row-locking it on PostgreSQL), or raise NotFound/VersionConflict.

        Every write to an account's configuration starts here: it serialises writers of one account and tells
        the engine that what it loaded is stale.
        """
        statement = (
            update(AccountRow)
            .where(AccountRow.id == account_id)
            .values(version=AccountRow.version + 1, updated_at=now or utcnow())
            .returning(AccountRow.version)
        )
        if expected_version is not None:
            statement = statement.where(AccountRow.version == expected_version)
        version = (await session.execute(statement)).scalar_one_or_none()
        if version is not None:
            return version
        actual = (await session.execute(select(AccountRow.version).where(AccountRow.id == account_id))).scalar()
        if actual is None:
            raise AccountNotFound(account_id)
        raise VersionConflict(account_id, expected=expected_version or 0, actual=actual)

    async def _require_account(self, session: AsyncSession, account_id: str) -> None:
        found = (await session.execute(select(AccountRow.id).where(AccountRow.id == account_id))).scalar()
        if found is None:
            raise AccountNotFound(account_id)

    async def _user_id(self, session: AsyncSession, username: str) -> int:
        user_id = (await session.execute(select(UserRow.id).where(UserRow.username == username))).scalar()
        if user_id is None:
            raise UserNotFound(username)
        return user_id

    def _audit(
        self,
        session: AsyncSession,
        action: str,
        *,
        actor: str,
        account_id: str | None = None,
        detail: dict[str, Any] | None = None,
    ) -> None:
        """Add an audit row to the caller's transaction: it commits or rolls back with the change it records."""
        session.add(AuditRow(at=utcnow(), actor=actor[:64], account_id=account_id, action=action, detail=scrub(detail)))
