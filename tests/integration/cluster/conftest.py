"""Scale-out tests run on a real PostgreSQL (the session's server from tests/conftest.py); they skip without one."""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from xianyu_autoreply.config import load_settings
from xianyu_autoreply.simulator import Simulator
from xianyu_autoreply.store import Store
from xianyu_autoreply.store.cluster import ClusterStore

from ...conftest import PgServer, _pg_admin


@pytest.fixture
async def pg_url(pg_server: PgServer) -> AsyncIterator[str]:
    """A fresh PostgreSQL database (the `pg_server` fixture skips, saying why, when no server is installed)."""
    name = f"xar_{uuid.uuid4().hex[:16]}"
    await _pg_admin(pg_server, f'CREATE DATABASE "{name}"')
    try:
        yield pg_server.url(name)
    finally:
        await _pg_admin(pg_server, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


@pytest.fixture
async def store(pg_url: str, tmp_path: Path) -> AsyncIterator[Store]:
    opened = await Store.open(load_settings(data_dir=tmp_path / "data", database_url=pg_url))
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def cluster(store: Store) -> ClusterStore:
    return ClusterStore(store.db, store.box)


@pytest.fixture
async def sim() -> AsyncIterator[Simulator]:
    simulator = Simulator()
    await simulator.start(host="127.0.0.1", port=0)
    try:
        yield simulator
    finally:
        await simulator.stop()
