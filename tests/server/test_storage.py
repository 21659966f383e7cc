"""The storage layer on both SQLite and PostgreSQL: migrations, every Store method, limits under
concurrency, secrets stored only as digests, no monitored data anywhere."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import delete, inspect, select
from sqlalchemy.engine import Connection

from server.errors import Conflict, Forbidden, NotFound, Unavailable
from server.plans import PLANS
from server.security import (
    hash_password,
    new_api_key,
    new_node_token,
    new_session_id,
    secret_digest,
)
from server.storage import partitions
from server.storage.migrate import current_revision, head_revision, migrate
from server.storage.records import Account
from server.storage.schema import (
    ACCOUNT_TABLES,
    MONITORED_TABLES,
    OPERATOR_TABLES,
    accounts,
    metadata,
    nodes,
    sessions,
)
from server.storage.store import MAX_API_KEYS, MAX_SESSIONS, Store
from tests.server.accounts_kit import all_rows, text_in_database

NOW = 1_800_000_000.0
POSTGRES_ENV = "ONECONNECT_TEST_POSTGRES"
PW_HASH = "scrypt$16384$8$1$c2FsdA$aGFzaA"  # shape only; these tests never verify it


async def new_account(
    store: Store, email: str = "a@example.com", plan: str = "free"
) -> tuple[Account, str]:
    key = new_api_key()
    account, _ = await store.create_account(
        name="Dev",
        email=email,
        company=None,
        password_hash=PW_HASH,
        plan=plan,
        api_key=key,
        key_name="default",
        now=NOW,
    )
    return account, key


# -- migrations -------------------------------------------------------------------------------
async def test_migrations_apply_from_empty_and_twice_is_a_no_op(empty_db_url: str) -> None:
    assert await current_revision(empty_db_url) is None
    assert await migrate(empty_db_url) == ["0001", "0002", "0003"]
    assert await current_revision(empty_db_url) == head_revision() == "0003"
    assert await migrate(empty_db_url) == []
    store = await Store.open(empty_db_url)
    try:
        async with store.engine.connect() as conn:
            names = await conn.run_sync(lambda sync: set(inspect(sync).get_table_names()))
    finally:
        await store.close()
    assert names == {t.name for t in metadata.sorted_tables} | {"alembic_version"}


async def test_concurrent_migrations_apply_once(empty_db_url: str) -> None:
    results = await asyncio.gather(*(migrate(empty_db_url) for _ in range(3)))
    assert sorted(results) == [[], [], ["0001", "0002", "0003"]]


async def test_migrated_schema_matches_the_metadata(store: Store) -> None:
    def diff(sync: Connection) -> list[object]:
        context = MigrationContext.configure(
            sync,
            opts={"compare_type": True, "include_object": partitions.include_object},
        )
        return list(compare_metadata(context, metadata))

    async with store.engine.connect() as conn:
        assert await conn.run_sync(diff) == []


async def test_sqlite_pragmas(tmp_path: Path) -> None:
    url = f"sqlite+aiosqlite:///{tmp_path / 'pragmas.db'}"
    await migrate(url)
    store = await Store.open(url)
    try:
        async with store.engine.connect() as conn:
            mode = (await conn.exec_driver_sql("PRAGMA journal_mode")).scalar()
            fks = (await conn.exec_driver_sql("PRAGMA foreign_keys")).scalar()
            busy = (await conn.exec_driver_sql("PRAGMA busy_timeout")).scalar()
    finally:
        await store.close()
    assert (mode, fks) == ("wal", 1)
    assert busy is not None
    assert busy >= 1000


@pytest.mark.parametrize(("ci", "outcome"), [("", "skipped"), ("true", "error")])
def test_postgres_tests_skip_with_one_reason_or_fail_in_ci(ci: str, outcome: str) -> None:
    env = {**os.environ, "CI": ci, POSTGRES_ENV: "postgresql://postgres@127.0.0.1:1/postgres"}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "pytest",
            "-q",
            "-rs",
            "-p",
            "no:cacheprovider",
            "tests/server/test_storage.py::test_ping",
        ],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
        cwd=Path(__file__).resolve().parents[2],
    )
    out = run.stdout
    assert "PostgreSQL not reachable at postgresql://postgres@127.0.0.1:1/postgres" in out
    assert "pg_ctlcluster 15 main start" in out
    assert POSTGRES_ENV in out
    assert f"1 passed, 1 {outcome}" in out, out[-2000:]


async def test_ping(store: Store) -> None:
    await store.ping()


@pytest.mark.parametrize(
    "url",
    [
        "postgresql+asyncpg://postgres@127.0.0.1:1/nothing",
        "sqlite+aiosqlite:////nonexistent-dir/for/sure/oneconnect.db",
    ],
)
async def test_ping_unreachable_raises_unavailable(url: str) -> None:
    store = await Store.open(url)
    try:
        with pytest.raises(Unavailable):
            await store.ping()
        with pytest.raises(Unavailable):
            await store.account("0" * 32)
    finally:
        await store.close()
    # aiosqlite stops the worker thread of a failed connect without waiting for it; let it
    # finish while this loop still runs (else it reports to a closed loop after the test).
    for _ in range(200):
        if not any("_connection_worker_thread" in t.name for t in threading.enumerate()):
            break
        await asyncio.sleep(0.01)


# -- accounts ---------------------------------------------------------------------------------
async def test_account_create_read_and_case_insensitive_email(store: Store) -> None:
    account, key = await new_account(store, "Dev@Example.COM")
    assert account.email == "dev@example.com"
    assert len(account.id) == 32
    assert int(account.id, 16) >= 0
    assert await store.account(account.id) == account
    assert await store.account("f" * 32) is None
    found = await store.login_record("DEV@example.com")
    assert found is not None
    assert found[0] == account
    assert found[1] == PW_HASH
    assert await store.login_record("other@example.com") is None
    with pytest.raises(Conflict):
        await new_account(store, "dev@EXAMPLE.com")
    by_key = await store.account_by_api_key(key)
    assert by_key is not None
    assert by_key[0] == account


async def test_update_account_fields_and_plan(store: Store) -> None:
    account, _ = await new_account(store)
    changed = await store.update_account(account.id, name="New", company="ACME", plan="pro")
    assert (changed.name, changed.company, changed.plan) == ("New", "ACME", "pro")
    kept = await store.update_account(account.id)
    assert kept == changed
    cleared = await store.update_account(account.id, company=None)
    assert cleared.company is None
    assert cleared.name == "New"
    with pytest.raises(NotFound):
        await store.update_account("0" * 32, name="x")


async def test_downgrade_refused_while_over_the_new_limit(store: Store) -> None:
    account, _ = await new_account(store, plan="pro")
    free = PLANS["free"].max_nodes
    made = [
        await store.create_node(account.id, name=f"n{i}", token=new_node_token(), now=NOW)
        for i in range(free + 1)
    ]
    with pytest.raises(Conflict, match="free plan allows 3 nodes"):
        await store.update_account(account.id, plan="free")
    assert (await store.account(account.id)) is not None
    await store.delete_node(account.id, made[0].id)
    assert (await store.update_account(account.id, plan="free")).plan == "free"


# -- API keys ---------------------------------------------------------------------------------
async def test_api_keys_create_list_revoke(store: Store) -> None:
    account, first = await new_account(store)
    other, _ = await new_account(store, "b@example.com")
    second = new_api_key()
    record = await store.create_api_key(account.id, name="ci", key=second, now=NOW + 1)
    assert record.prefix == second[:13]
    assert record.prefix.startswith("oc_key_")
    listed = await store.api_keys(account.id)
    assert [k.name for k in listed] == ["default", "ci"]
    assert not await store.delete_api_key(other.id, record.id)  # not theirs
    assert await store.delete_api_key(account.id, record.id)
    assert await store.account_by_api_key(second) is None
    assert await store.account_by_api_key(first) is not None
    assert not await store.delete_api_key(account.id, record.id)


async def test_api_key_cap(store: Store) -> None:
    account, _ = await new_account(store)
    for i in range(MAX_API_KEYS - 1):
        await store.create_api_key(account.id, name=f"k{i}", key=new_api_key(), now=NOW)
    with pytest.raises(Conflict):
        await store.create_api_key(account.id, name="one-too-many", key=new_api_key(), now=NOW)


# -- sessions ---------------------------------------------------------------------------------
async def test_sessions_expire_and_are_deleted(store: Store) -> None:
    account, _ = await new_account(store)
    sid = new_session_id()
    await store.create_session(account.id, sid, now=NOW, expires_at=NOW + 60)
    found = await store.session_account(sid, NOW + 59)
    assert found is not None
    assert found[0] == account
    assert found[1] == secret_digest(sid)
    assert await store.session_account(sid, NOW + 60) is None
    assert (await all_rows(store))["sessions"] == []
    assert await store.session_account(new_session_id(), NOW) is None


async def test_session_cap_and_purge(store: Store) -> None:
    account, _ = await new_account(store)
    ids = [new_session_id() for _ in range(MAX_SESSIONS + 3)]
    for i, sid in enumerate(ids):
        await store.create_session(account.id, sid, now=NOW + i, expires_at=NOW + 1000)
    assert len((await all_rows(store))["sessions"]) == MAX_SESSIONS
    assert await store.session_account(ids[0], NOW) is None  # oldest dropped
    assert await store.session_account(ids[-1], NOW) is not None
    await store.delete_session(ids[-1])
    assert await store.session_account(ids[-1], NOW) is None
    assert await store.purge_sessions(NOW + 1000) == MAX_SESSIONS - 1


# -- nodes ------------------------------------------------------------------------------------
async def test_node_lifecycle(store: Store) -> None:
    account, _ = await new_account(store)
    token = new_node_token()
    node = await store.create_node(account.id, name="vpn-1", token=token, now=NOW)
    assert node.token_prefix == token[:14]
    assert node.enrolled_at is None
    assert await store.nodes(account.id) == [node]
    assert await store.node(account.id, node.id) == node
    renamed = await store.rename_node(account.id, node.id, "edge ☃")
    assert renamed is not None
    assert renamed.name == "edge ☃"
    ref = await store.node_by_token(token)
    assert ref is not None
    assert (ref.id, ref.account_id, ref.name) == (node.id, account.id, "edge ☃")
    assert ref.min_interval == PLANS["free"].min_interval
    new_token = new_node_token()
    rotated = await store.rotate_node_token(account.id, node.id, new_token)
    assert rotated is not None
    assert rotated.token_prefix == new_token[:14]
    assert await store.node_by_token(token) is None
    assert (await store.node_by_token(new_token)) == await store.node_ref(account.id, node.id)
    assert await store.delete_node(account.id, node.id)
    assert await store.node(account.id, node.id) is None
    assert await store.node_by_token(new_token) is None
    assert not await store.delete_node(account.id, node.id)
    assert await store.node_by_token("oc_node_unknown") is None


async def test_nodes_are_scoped_to_their_account(store: Store) -> None:
    a, _ = await new_account(store)
    b, _ = await new_account(store, "b@example.com")
    node = await store.create_node(a.id, name="mine", token=new_node_token(), now=NOW)
    assert await store.node(b.id, node.id) is None
    assert await store.node_ref(b.id, node.id) is None
    assert await store.rename_node(b.id, node.id, "stolen") is None
    assert await store.rotate_node_token(b.id, node.id, new_node_token()) is None
    assert not await store.delete_node(b.id, node.id)
    assert await store.nodes(b.id) == []
    assert await store.account_node_ids(b.id) == []
    assert await store.account_node_ids(a.id) == [node.id]
    assert await store.node(a.id, node.id) == node


async def test_enrolment_is_set_once_and_listed(store: Store) -> None:
    account, _ = await new_account(store, plan="business")
    first = await store.create_node(account.id, name="a", token=new_node_token(), now=NOW)
    await store.create_node(account.id, name="b", token=new_node_token(), now=NOW)
    assert await store.enrolled_nodes() == []
    await store.mark_enrolled(first.id, NOW + 5)
    await store.mark_enrolled(first.id, NOW + 99)
    node = await store.node(account.id, first.id)
    assert node is not None
    assert node.enrolled_at == NOW + 5
    refs = await store.enrolled_nodes()
    assert [r.id for r in refs] == [first.id]
    assert refs[0].min_interval == PLANS["business"].min_interval
    await store.update_account(account.id, plan="pro")
    assert (await store.enrolled_nodes())[0].min_interval == PLANS["pro"].min_interval
    await store.mark_enrolled("0" * 32, NOW)  # unknown: no error


async def test_plan_node_limit(store: Store) -> None:
    account, _ = await new_account(store)
    for i in range(PLANS["free"].max_nodes):
        await store.create_node(account.id, name=f"n{i}", token=new_node_token(), now=NOW)
    with pytest.raises(Forbidden, match="free plan allows at most 3 nodes"):
        await store.create_node(account.id, name="extra", token=new_node_token(), now=NOW)


async def test_concurrent_creates_never_overshoot_the_plan(store: Store) -> None:
    account, _ = await new_account(store)

    async def attempt(i: int) -> bool:
        try:
            await store.create_node(account.id, name=f"n{i}", token=new_node_token(), now=NOW)
        except Forbidden:
            return False
        return True

    results = await asyncio.gather(*(attempt(i) for i in range(12)))
    assert sum(results) == PLANS["free"].max_nodes
    assert len(await store.nodes(account.id)) == PLANS["free"].max_nodes


async def test_hostile_strings_round_trip(store: Store) -> None:
    account, _ = await new_account(store, plan="pro")
    names = ["x'); DROP TABLE nodes;--", "🛰️" * 16, "עברית ‏RTL", "%s %d {0} \\N", "a" * 64]
    for name in names:
        await store.create_node(account.id, name=name, token=new_node_token(), now=NOW)
    assert sorted(n.name for n in await store.nodes(account.id)) == sorted(names)


async def test_deleting_an_account_cascades(store: Store) -> None:
    account, _ = await new_account(store)
    await store.create_node(account.id, name="n", token=new_node_token(), now=NOW)
    await store.create_session(account.id, new_session_id(), now=NOW, expires_at=NOW + 9)
    async with store.engine.begin() as conn:
        await conn.execute(delete(accounts).where(accounts.c.id == account.id))
    rows = await all_rows(store)
    assert [rows[t] for t in ("accounts", "api_keys", "sessions", "nodes")] == [[], [], [], []]


# -- what is (not) stored ---------------------------------------------------------------------
async def test_secrets_are_stored_only_as_digests(store: Store) -> None:
    account, key = await new_account(store)
    token, sid = new_node_token(), new_session_id()
    await store.create_node(account.id, name="n", token=token, now=NOW)
    await store.create_session(account.id, sid, now=NOW, expires_at=NOW + 60)
    for secret in (key, token, sid):
        assert not await text_in_database(store, secret)
        assert not await text_in_database(store, secret[-20:])
    for digest in (secret_digest(key), secret_digest(token), secret_digest(sid)):
        assert await text_in_database(store, digest)


async def test_password_hash_is_stored_not_the_password(store: Store) -> None:
    password = "a very secret passphrase"
    stored = hash_password(password)
    await store.create_account(
        name="P",
        email="p@example.com",
        company=None,
        password_hash=stored,
        plan="free",
        api_key=new_api_key(),
        key_name="default",
        now=NOW,
    )
    assert not await text_in_database(store, password)
    assert await text_in_database(store, stored)


def test_no_monitored_data_columns() -> None:
    """Account and operator tables hold registration, credentials, enrolment, where alerts go,
    the consent and holds: no metric, last-seen or alert column. Monitored data has its own
    tables (MONITORED_TABLES), written only with saved monitoring on; every table is one of
    the three kinds."""
    kinds = (ACCOUNT_TABLES, MONITORED_TABLES, OPERATOR_TABLES)
    assert sorted(t.name for kind in kinds for t in kind) == sorted(
        t.name for t in metadata.sorted_tables
    )
    forbidden = ("metric", "value", "last_seen", "alert", "sample", "seen")
    for table in ACCOUNT_TABLES + OPERATOR_TABLES:
        for column in table.columns:
            assert not any(word in column.name for word in forbidden), (table.name, column.name)
    assert set(nodes.c.keys()) == {
        "id",
        "account_id",
        "name",
        "token_prefix",
        "token_hash",
        "created_at",
        "enrolled_at",
    }
    assert set(sessions.c.keys()) == {"id_hash", "account_id", "created_at", "expires_at"}


async def test_store_reads_what_another_store_wrote(db_url: str, tmp_path: Path) -> None:
    """Two engines on one database (two replicas, or a restart) see the same rows."""
    first, second = await Store.open(db_url), await Store.open(db_url)
    try:
        account, key = await new_account(first)
        found = await second.account_by_api_key(key)
        assert found is not None
        assert found[0] == account
        async with second.engine.connect() as conn:
            assert (await conn.execute(select(accounts.c.email))).scalars().all() == [
                "a@example.com"
            ]
    finally:
        await first.close()
        await second.close()


async def test_a_cancelled_caller_does_not_break_the_store(store: Store) -> None:
    """The operation runs to completion on its own (its connection goes back to the pool)."""
    account, _ = await new_account(store)
    token = new_node_token()
    task = asyncio.create_task(store.create_node(account.id, name="n", token=token, now=NOW))
    await asyncio.sleep(0)
    task.cancel()
    with pytest.raises(asyncio.CancelledError):
        await task
    for _ in range(200):
        if await store.node_by_token(token) is not None:
            break
        await asyncio.sleep(0.01)
    assert [n.name for n in await store.nodes(account.id)] == ["n"]
