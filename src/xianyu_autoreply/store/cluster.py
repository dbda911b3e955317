"""Bucket leases, nodes and commands: PostgreSQL as the coordination engine of several workers (DESIGN §4).

The pattern of River, Oban and Temporal's shard ownership, with no consensus of our own:
- every account hashes into one of a fixed number of buckets (`bucket_of`); a node runs the accounts of the
  buckets it leases;
- a lease is a row (owner, epoch, expires_at), taken with `FOR UPDATE SKIP LOCKED` only when free or expired,
  renewed for all of a node's buckets in one statement; each new owner moves the epoch;
- a `Fence` (node, bucket, epoch) given to a write makes that write check, in its own transaction and under a
  share lock of the lease row, that the lease is still the node's at that epoch and unexpired. A paused or
  partitioned old owner's write is refused (`FencedOut`) instead of landing beside the new owner's;
- API nodes reach the owner through the `commands` table (payload sealed with the secret box) and NOTIFY.
Times come from the database's clock (`now()`) on PostgreSQL, so nodes' clocks need not agree; on SQLite (one
node owning every bucket) the process clock stands in and the row locks are no-ops.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections import Counter
from collections.abc import Collection, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import ColumnElement, Select, delete, func, literal, select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection
from sqlalchemy.ext.asyncio import AsyncSession

from .crypto import SecretBox
from .db import Database
from .errors import Conflict, InvalidValue, NotFound
from .models import AccountRow, Base, BucketLeaseRow, CommandRow, NodeRow, UtcDateTime, table_of, utcnow

LEASES_CHANNEL = "xar_leases"  # NOTIFY payload: "released" or "joined"
COMMANDS_CHANNEL = "xar_commands"  # NOTIFY payload: the command's bucket
_EPOCH_START = datetime(2000, 1, 1, tzinfo=utcnow().tzinfo)


def bucket_of(account_id: str, buckets: int) -> int:
    """The account's bucket: a stable hash (the same in every process and version), not Python's `hash`."""
    digest = hashlib.blake2b(account_id.encode("utf-8"), digest_size=8).digest()
    return int.from_bytes(digest, "big") % buckets


def rendezvous_score(node_id: str, bucket: int) -> int:
    """Highest-random-weight score: the node with the top score is the bucket's preferred owner (sticky)."""
    digest = hashlib.blake2b(f"{node_id}\0{bucket}".encode(), digest_size=8).digest()
    return int.from_bytes(digest, "big")


@dataclass(frozen=True, slots=True)
class Fence:
    """The proof a write carries: this node held this bucket at this epoch (checked in the write's transaction)."""

    node_id: str
    bucket: int
    epoch: int


class FencedOut(Conflict):
    """The write's lease moved on (another owner, or expired): the caller must stop acting for the bucket."""

    def __init__(self, fence: Fence) -> None:
        super().__init__(f"bucket {fence.bucket} is no longer leased to {fence.node_id!r} at epoch {fence.epoch}")
        self.fence = fence


@dataclass(frozen=True, slots=True)
class Lease:
    """One bucket's row: `owner` None means released; past `expires_at` anyone may claim it."""

    bucket: int
    owner: str | None
    epoch: int
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class NodeInfo:
    """A registered node and its last heartbeat."""

    node_id: str
    heartbeat_at: datetime
    version: str
    started_at: datetime


@dataclass(frozen=True, slots=True)
class SharePlan:
    """What one node should do this round (`plan_share`)."""

    wanted: list[int]  # free buckets to claim, best first
    shed: list[int]  # own buckets to hand to nodes below their share, worst first
    fair: int


@dataclass(frozen=True, slots=True)
class ClaimResult:
    """A claim round: the buckets won (bucket -> epoch), those to shed, and when the next foreign lease expires."""

    claimed: dict[int, int]
    shed: list[int]
    next_expiry_in: float | None
    live_nodes: int


@dataclass(frozen=True, slots=True)
class Command:
    """An operation queued for the worker that owns the account's bucket; `payload` is unsealed."""

    id: int
    account_id: str
    bucket: int
    kind: str
    payload: dict[str, Any] = field(repr=False)
    created_at: datetime
    attempts: int
    done_at: datetime | None
    handled_by: str | None
    error: str | None


def plan_share(node_id: str, *, live: Collection[str], leases: Sequence[Lease], now: datetime) -> SharePlan:
    """Fair share with rendezvous preference: pure, so each node decides alone from one snapshot.

    A node takes free buckets up to ceil(N / live nodes), preferring those it ranks first for; it sheds only what
    live nodes below floor(N / live nodes) cannot get from free buckets, so at most a fair share moves.
    """
    nodes = sorted({*live, node_id})
    total = len(leases)
    fair = math.ceil(total / len(nodes)) if total else 0
    floor_share = total // len(nodes)
    held = [lease.bucket for lease in leases if lease.owner == node_id and lease.expires_at > now]
    free = [lease.bucket for lease in leases if lease.owner is None or lease.expires_at <= now]
    counts = Counter(lease.owner for lease in leases if lease.owner is not None and lease.expires_at > now)

    def preference(bucket: int) -> tuple[bool, int]:
        mine = rendezvous_score(node_id, bucket)
        first = all(mine >= rendezvous_score(other, bucket) for other in nodes if other != node_id)
        return first, mine

    wanted = sorted(free, key=preference, reverse=True)[: max(0, fair - len(held))]
    deficit = sum(max(0, floor_share - counts.get(other, 0)) for other in nodes if other != node_id)
    shed_count = max(0, min(len(held) - fair, deficit - len(free)))
    shed = sorted(held, key=preference)[:shed_count]
    return SharePlan(wanted=wanted, shed=shed, fair=fair)


class ClusterStore:
    """The queries of scale-out; one instance per process, beside the `Store` on the same `Database`."""

    def __init__(self, db: Database, box: SecretBox | None = None) -> None:
        self.db = db
        self.box = box
        self._pg = db.dialect == "postgresql"

    def __repr__(self) -> str:
        return f"ClusterStore({self.db!r})"

    # -- clock: the database's on PostgreSQL, so that nodes' clocks need not agree ----------------------------

    def _now(self) -> ColumnElement[datetime]:
        return func.now() if self._pg else literal(utcnow(), UtcDateTime())

    def _later(self, seconds: float) -> ColumnElement[datetime]:
        if self._pg:
            return func.now() + func.make_interval(0, 0, 0, 0, 0, 0, seconds)
        return literal(utcnow() + timedelta(seconds=seconds), UtcDateTime())

    async def _notify(self, s: AsyncSession, channel: str, payload: str) -> None:
        """NOTIFY on commit (PostgreSQL); elsewhere peers find out by polling."""
        if self._pg:
            await s.execute(select(func.pg_notify(channel, payload)))

    # -- buckets and nodes ------------------------------------------------------------------------------------

    async def ensure_buckets(self, count: int) -> None:
        """Create the lease rows once; refuse a node configured with another bucket count than the database."""
        if count < 1:
            raise InvalidValue("the bucket count must be at least 1")
        existing = await self.bucket_count()
        if existing == count:
            return
        if existing:
            raise InvalidValue(f"the database has {existing} buckets, this node is configured for {count}")
        rows = [{"bucket": b, "owner": None, "epoch": 0, "expires_at": _EPOCH_START} for b in range(count)]
        async with self.db.transaction() as s:
            insert = self._insert(BucketLeaseRow).values(rows).on_conflict_do_nothing(index_elements=["bucket"])
            await s.execute(insert)

    async def bucket_count(self) -> int:
        """How many buckets the database was set up with (0: no worker ever started)."""
        async with self.db.read() as s:
            return int((await s.execute(select(func.count()).select_from(BucketLeaseRow))).scalar_one())

    async def register(self, node_id: str, *, version: str) -> None:
        """Upsert the node with a fresh heartbeat and NOTIFY peers, who then hand it its share."""
        values = {"node_id": node_id, "heartbeat_at": self._now(), "version": version, "started_at": self._now()}
        async with self.db.transaction() as s:
            await s.execute(
                self._insert(NodeRow)
                .values(values)
                .on_conflict_do_update(
                    index_elements=["node_id"], set_={"heartbeat_at": self._now(), "version": version}
                )
            )
            await self._notify(s, LEASES_CHANNEL, "joined")

    async def nodes(self) -> list[NodeInfo]:
        """Every registered node, live or not."""
        async with self.db.read() as s:
            rows = (await s.scalars(select(NodeRow).order_by(NodeRow.node_id))).all()
            return [NodeInfo(r.node_id, r.heartbeat_at, r.version, r.started_at) for r in rows]

    async def leases(self) -> list[Lease]:
        """Every bucket's lease (the API's "which node runs this account")."""
        async with self.db.read() as s:
            rows = (await s.scalars(select(BucketLeaseRow).order_by(BucketLeaseRow.bucket))).all()
            return [_lease(row) for row in rows]

    async def owner_of(self, bucket: int) -> str | None:
        """The node holding an unexpired lease on the bucket, if any."""
        async with self.db.read() as s:
            row = await s.get(BucketLeaseRow, bucket)
            if row is None or row.owner is None:
                return None
            now = (await s.execute(select(self._now()))).scalar_one()
            return row.owner if row.expires_at > now else None

    # -- leases -----------------------------------------------------------------------------------------------

    async def renew(self, node_id: str, buckets: Collection[int], *, ttl: float) -> dict[int, int]:
        """Extend the node's unexpired leases of `buckets` in one statement and beat its heart; bucket -> epoch.

        A lease that expired is not renewed (another node may own it by now): its bucket is lost and must be
        claimed again, with a new epoch. Buckets the node gave up locally (being stopped) are left to expire.
        """
        statement = (
            update(BucketLeaseRow)
            .where(
                BucketLeaseRow.owner == node_id,
                BucketLeaseRow.bucket.in_(list(buckets)),
                BucketLeaseRow.expires_at > self._now(),
            )
            .values(expires_at=self._later(ttl))
            .returning(BucketLeaseRow.bucket, BucketLeaseRow.epoch)
        )
        async with self.db.transaction() as s:
            held = {int(b): int(e) for b, e in (await s.execute(statement)).all()}
            await s.execute(update(NodeRow).where(NodeRow.node_id == node_id).values(heartbeat_at=self._now()))
        return held

    async def claim(self, node_id: str, *, ttl: float, live_within: float) -> ClaimResult:
        """One balancing round: take free or expired buckets up to the fair share (`plan_share`).

        Rows are locked `FOR UPDATE SKIP LOCKED`, so nodes claiming at once never wait for or double-book each
        other; a bucket skipped now is tried again next round. Nodes whose heartbeat is older than `live_within`
        seconds do not count in the share.
        """
        async with self.db.transaction() as s:
            now = (await s.execute(select(self._now()))).scalar_one()
            live_since = now - timedelta(seconds=live_within)
            live = (await s.scalars(select(NodeRow.node_id).where(NodeRow.heartbeat_at > live_since))).all()
            leases = [_lease(row) for row in (await s.scalars(select(BucketLeaseRow))).all()]
            plan = plan_share(node_id, live=live, leases=leases, now=now)
            claimed: dict[int, int] = {}
            if plan.wanted:
                free = (BucketLeaseRow.owner.is_(None)) | (BucketLeaseRow.expires_at <= self._now())
                locked = (
                    await s.scalars(
                        select(BucketLeaseRow.bucket)
                        .where(BucketLeaseRow.bucket.in_(plan.wanted), free)
                        .with_for_update(skip_locked=True)
                    )
                ).all()
                if locked:
                    rows = await s.execute(
                        update(BucketLeaseRow)
                        .where(BucketLeaseRow.bucket.in_(locked), free)
                        .values(owner=node_id, epoch=BucketLeaseRow.epoch + 1, expires_at=self._later(ttl))
                        .returning(BucketLeaseRow.bucket, BucketLeaseRow.epoch)
                    )
                    claimed = {int(b): int(e) for b, e in rows.all()}
            foreign = [
                (lease.expires_at - now).total_seconds()
                for lease in leases
                if lease.owner not in (None, node_id) and lease.expires_at > now and lease.bucket not in claimed
            ]
        return ClaimResult(
            claimed=claimed,
            shed=plan.shed,
            next_expiry_in=min(foreign) if foreign else None,
            live_nodes=len({*live, node_id}),
        )

    async def release(self, node_id: str, buckets: Collection[int]) -> int:
        """Give buckets up at once (their sessions must be stopped first) and NOTIFY peers to claim them."""
        if not buckets:
            return 0
        async with self.db.transaction() as s:
            result = await s.execute(
                update(BucketLeaseRow)
                .where(BucketLeaseRow.owner == node_id, BucketLeaseRow.bucket.in_(list(buckets)))
                .values(owner=None, expires_at=self._now())
            )
            await self._notify(s, LEASES_CHANNEL, "released")
            return int(result.rowcount)  # type: ignore[attr-defined]  # DML gives a CursorResult

    async def leave(self, node_id: str) -> int:
        """Release every bucket of the node and unregister it (SIGTERM), in one transaction; NOTIFY peers."""
        async with self.db.transaction() as s:
            result = await s.execute(
                update(BucketLeaseRow).where(BucketLeaseRow.owner == node_id).values(owner=None, expires_at=self._now())
            )
            await s.execute(delete(NodeRow).where(NodeRow.node_id == node_id))
            await self._notify(s, LEASES_CHANNEL, "released")
            return int(result.rowcount)  # type: ignore[attr-defined]  # DML gives a CursorResult

    async def forget_nodes(self, *, silent_for: float) -> int:
        """Delete node rows whose heartbeat is older than `silent_for` seconds (housekeeping)."""
        async with self.db.transaction() as s:
            now = (await s.execute(select(self._now()))).scalar_one()
            result = await s.execute(delete(NodeRow).where(NodeRow.heartbeat_at < now - timedelta(seconds=silent_for)))
            return int(result.rowcount)  # type: ignore[attr-defined]  # DML gives a CursorResult

    async def account_ids_in(self, buckets: Collection[int], *, count: int) -> list[str]:
        """Ids of the accounts that hash into `buckets` (of `count` buckets)."""
        wanted = set(buckets)
        if not wanted:
            return []
        async with self.db.read() as s:
            ids = (await s.scalars(select(AccountRow.id).order_by(AccountRow.id))).all()
        return [account_id for account_id in ids if bucket_of(account_id, count) in wanted]

    # -- commands ---------------------------------------------------------------------------------------------

    async def enqueue(self, account_id: str, kind: str, payload: dict[str, Any], *, bucket: int) -> int:
        """Queue a command for the owner of `bucket` and NOTIFY it; returns the command id."""
        async with self.db.transaction() as s:
            command_id = (
                await s.execute(
                    self._insert(CommandRow)
                    .values(
                        account_id=account_id,
                        bucket=bucket,
                        kind=kind,
                        payload=self._seal(payload),
                        created_at=utcnow(),
                        attempts=0,
                    )
                    .returning(table_of(CommandRow).c.id)
                )
            ).scalar_one()
            await self._notify(s, COMMANDS_CHANNEL, str(bucket))
            return int(command_id)

    async def take(self, node_id: str, buckets: Collection[int], *, limit: int = 100) -> list[Command]:
        """Pending commands of these buckets, oldest first, each counted as one more attempt.

        `SKIP LOCKED` keeps two takers off the same rows; the lease makes the owner the only taker anyway, and a
        command taken by a node that died before finishing it is taken again by the next owner.
        """
        if not buckets:
            return []
        async with self.db.transaction() as s:
            ids = (
                await s.scalars(
                    select(CommandRow.id)
                    .where(CommandRow.done_at.is_(None), CommandRow.bucket.in_(list(buckets)))
                    .order_by(CommandRow.id)
                    .limit(limit)
                    .with_for_update(skip_locked=True)
                )
            ).all()
            if not ids:
                return []
            await s.execute(
                update(CommandRow)
                .where(CommandRow.id.in_(ids))
                .values(attempts=CommandRow.attempts + 1, handled_by=node_id)
            )
            rows = (
                await s.scalars(
                    select(CommandRow)
                    .where(CommandRow.id.in_(ids))
                    .order_by(CommandRow.id)
                    .execution_options(populate_existing=True)
                )
            ).all()
            return [self._command(row) for row in rows]

    async def finish(self, command_id: int, node_id: str, *, error: str | None = None) -> bool:
        """Mark a command done (with its error, if it failed); False when it was already done."""
        async with self.db.transaction() as s:
            result = await s.execute(
                update(CommandRow)
                .where(CommandRow.id == command_id, CommandRow.done_at.is_(None))
                .values(done_at=self._now(), handled_by=node_id, error=error)
            )
            return bool(result.rowcount)  # type: ignore[attr-defined]  # DML gives a CursorResult

    async def get_command(self, command_id: int) -> Command:
        """One command, with its outcome once done."""
        async with self.db.read() as s:
            row = await s.get(CommandRow, command_id)
            if row is None:
                raise NotFound(f"no command {command_id}")
            return self._command(row)

    def _seal(self, payload: dict[str, Any]) -> dict[str, Any]:
        # A payload may hold a cookie or a proxy password: never plaintext in the table.
        text = json.dumps(payload, ensure_ascii=False)
        return {"sealed": self.box.encrypt(text)} if self.box is not None else {"plain": payload}

    def _command(self, row: CommandRow) -> Command:
        stored = row.payload or {}
        if "sealed" in stored:
            if self.box is None:
                raise InvalidValue("a sealed command needs the secret box to open")
            payload = json.loads(self.box.decrypt(stored["sealed"]))
        else:
            payload = stored.get("plain", {})
        return Command(
            id=row.id,
            account_id=row.account_id,
            bucket=row.bucket,
            kind=row.kind,
            payload=payload,
            created_at=row.created_at,
            attempts=row.attempts,
            done_at=row.done_at,
            handled_by=row.handled_by,
            error=row.error,
        )

    def _insert(self, model: type[Base]) -> Any:
        table = table_of(model)
        return postgresql.insert(table) if self._pg else sqlite.insert(table)


async def check_fence(s: AsyncSession, fence: Fence | None) -> None:
    """Raise `FencedOut` unless the fence's lease still holds; call it inside the write's own transaction.

    `FOR SHARE` keeps the lease row from changing owner until the write commits: a takeover waits for it, and a
    write after the takeover sees the new epoch. On SQLite (one node, one writer) the lock is not needed.
    """
    if fence is None:
        return
    if (await s.execute(fence_query(fence, pg=s.get_bind().dialect.name == "postgresql"))).scalar() is None:
        raise FencedOut(fence)


def check_fence_sync(conn: Connection, fence: Fence | None) -> None:
    """`check_fence` on a sync Core connection (the log writer's batch, store/writer.py)."""
    if fence is not None and conn.execute(fence_query(fence, pg=conn.dialect.name == "postgresql")).scalar() is None:
        raise FencedOut(fence)


def fence_query(fence: Fence, *, pg: bool) -> Select[int]:
    """The lease row of `fence` if it still holds, locked `FOR SHARE` until the transaction ends (PostgreSQL)."""
    now: ColumnElement[datetime] = func.now() if pg else literal(utcnow(), UtcDateTime())
    return (
        select(BucketLeaseRow.epoch)
        .where(
            BucketLeaseRow.bucket == fence.bucket,
            BucketLeaseRow.owner == fence.node_id,
            BucketLeaseRow.epoch == fence.epoch,
            BucketLeaseRow.expires_at > now,
        )
        .with_for_update(read=True)
    )


def _lease(row: BucketLeaseRow) -> Lease:
    return Lease(bucket=row.bucket, owner=row.owner, epoch=row.epoch, expires_at=row.expires_at)
