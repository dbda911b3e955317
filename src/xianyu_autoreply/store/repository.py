"""`Store`: the one object the engine, the API and the CLI use to read and write the database.

Each aggregate's queries live in their own module (accounts, messages, orders, stock, users); `Store` puts them
behind one facade. Every write method is one transaction: it commits whole or raises and leaves nothing behind.
Reads return frozen records with secrets masked; a decrypted secret leaves only through a method or argument that
says so (`get_account_cookie`, `get_account_secrets`, `get_ai_api_key`, `get_notification_urls`, `reserve_line`,
`reveal=True`).
"""

from __future__ import annotations

from typing import Any

from sqlalchemy import select, update

from ..config import Settings
from .accounts import AccountStore
from .crypto import SecretBox
from .db import Database
from .messages import MessageStore
from .migrate import upgrade_database
from .models import AccountRow, AiSettingsRow, Base, DeliveryRuleRow, NotificationSettingsRow, StockLineRow, table_of
from .orders import OrderStore
from .stock import StockStore
from .users import UserStore

_ROTATION_BATCH = 500
# Every encrypted column, by table: what `reencrypt_secrets` walks through.
_ENCRYPTED: tuple[tuple[type[Base], tuple[str, ...]], ...] = (
    (AccountRow, ("cookie_encrypted", "proxy_encrypted")),
    (AiSettingsRow, ("api_key_encrypted",)),
    (DeliveryRuleRow, ("content_encrypted",)),
    (StockLineRow, ("line_encrypted",)),
    (NotificationSettingsRow, ("urls_encrypted",)),
)


class Store(AccountStore, MessageStore, OrderStore, StockStore, UserStore):
    """Typed async access to everything the service keeps."""

    @classmethod
    async def open(cls, settings: Settings, *, migrate: bool = True) -> Store:
        """The store of the configured database and key, migrated to this version's schema first."""
        secret = settings.secret_key.get_secret_value() if settings.secret_key else None
        box = SecretBox.from_config(secret_key=secret, data_dir=settings.data_dir)
        if migrate:
            await upgrade_database(settings.database_url)
        return cls(Database(settings.database_url), box)

    async def close(self) -> None:
        """Write what the conversation log still queues, then close the database connections."""
        await self.log_writer.aclose()
        await self.db.close()

    async def reencrypt_secrets(self) -> int:
        """Re-encrypt every secret made under an older key with the first key; returns how many changed.

        Run after putting a new key first in XAR_SECRET_KEY; once it returned, the old key can be removed.
        Batches commit one by one: stopping half-way is safe, and running it again continues.
        """
        rotated = 0
        for model, columns in _ENCRYPTED:
            table = table_of(model)
            key = next(iter(table.primary_key.columns))
            last: Any = None
            while True:
                statement = select(key, *(table.c[name] for name in columns)).order_by(key).limit(_ROTATION_BATCH)
                if last is not None:
                    statement = statement.where(key > last)
                async with self.db.transaction() as s:
                    rows = (await s.execute(statement)).all()
                    for row in rows:
                        values = {
                            name: self.box.rotate(token)
                            for name, token in zip(columns, row[1:], strict=True)
                            if token is not None and self.box.needs_rotation(token)
                        }
                        if values:
                            await s.execute(update(table).where(key == row[0]).values(**values))
                            rotated += len(values)
                if len(rows) < _ROTATION_BATCH:
                    break
                last = rows[-1][0]
        return rotated
