"""Store fixtures: a migrated empty store on each backend of `database_url` (tests/conftest.py)."""

from __future__ import annotations

from collections.abc import AsyncIterator

import pytest

from xianyu_autoreply.store import Database, SecretBox, Store, upgrade_database

from .store_samples import COOKIE


@pytest.fixture
def secret_key() -> str:
    return SecretBox.generate_key()


@pytest.fixture
async def store(database_url: str, secret_key: str) -> AsyncIterator[Store]:
    """A migrated, empty store."""
    await upgrade_database(database_url)
    opened = Store(Database(database_url), SecretBox([secret_key]))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def account(store: Store) -> str:
    """An account with an owner, ready for rules, messages and orders."""
    await store.create_user("alice", "$argon2id$fake", role="admin")
    await store.create_account("shop-1", COOKIE, owner="alice", remark="first shop")
    return "shop-1"
