"""The data-rights storage on SQLite and PostgreSQL: consent, opt-out deletion, deletion with and
without legal holds (scanning every table afterwards), holds ending by release and by time,
and the export's coverage of every table."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from sqlalchemy import insert, select, text

from server.errors import Conflict, Forbidden, NotFound, Unprocessable
from server.security import secret_digest
from server.storage import rights as rights_store
from server.storage.categories import CATEGORIES, HOLD_KINDS
from server.storage.datamap import EXPORT, NOT_ACCOUNT_DATA, SNAPSHOTS, owned, url_origin
from server.storage.schema import (
    MONITORED_TABLES,
    deletion_requests,
    held_data,
    legal_holds,
    metadata,
    metric_points,
    saved_monitoring,
)
from server.storage.store import Store
from tests.server.accounts_kit import all_rows
from tests.server.rights_kit import (
    NOW,
    RETENTION,
    ensure_partitions,
    identifying,
    mentions,
    monitored_counts,
    node_rows,
    seed_account,
    seed_monitored,
)

DAY = 86_400.0
TOKEN = "oc_del_" + "t" * 43
REQUEST_ACCOUNT_ID = [("deletion_requests", "account_id")]
"""The one place a deleted account's id stays: its deletion request's own record."""


# -- the data map ------------------------------------------------------------------------------
def test_every_table_is_exported_or_said_not_to_be_account_data() -> None:
    exported = {section.name for section in EXPORT}
    tables = {table.name for table in metadata.sorted_tables}
    missing = tables - exported - set(NOT_ACCOUNT_DATA)
    assert not missing, f"tables neither exported nor listed in NOT_ACCOUNT_DATA: {missing}"
    assert not exported & set(NOT_ACCOUNT_DATA)
    assert all(reason.strip() for reason in NOT_ACCOUNT_DATA.values())
    assert {t.name for t in MONITORED_TABLES} <= exported


def test_every_exported_column_is_shown_or_omitted_with_a_reason() -> None:
    for section in EXPORT:
        names = {c.name for c in section.table.columns}
        assert set(section.omitted) <= names, section.name
        assert all(reason.strip() for reason in section.omitted.values())
        assert set(section.key) <= names, section.name
        if section.paged:  # keyset pages: the key must be in the exported row
            assert set(section.key) <= {c.name for c in section.columns}, section.name
        owned(section.table, "0" * 32)  # raises when nothing ties a row to an account
    omitted = {(s.name, c) for s in EXPORT for c in s.omitted}
    for name in ("password_hash", "key_hash", "id_hash", "token_hash", "secret"):
        assert any(c == name for _, c in omitted), name


def test_hold_categories_are_a_fixed_documented_set() -> None:
    assert set(SNAPSHOTS) == set(CATEGORIES)
    assert set(HOLD_KINDS) == {"dispute", "credit", "legal", "tax", "audit", "fraud"}


def test_url_origin_drops_path_query_and_credentials() -> None:
    assert url_origin("https://hooks.slack.com/services/T0/B0/secret?x=1") == (
        "https://hooks.slack.com"
    )
    assert url_origin("http://[2001:db8::1]:8443/x") == "http://[2001:db8::1]:8443"


# -- consent -----------------------------------------------------------------------------------
async def test_consent_is_recorded_with_who_and_when(store: Store) -> None:
    a = await seed_account(store)
    assert await store.consent(a.id) is None
    consent = await store.set_consent(a.id, nodes=None, by="api_key:k1", now=NOW)
    assert (consent.nodes, consent.consented_at, consent.consented_by) == (None, NOW, "api_key:k1")
    assert await store.consent(a.id) == consent
    assert await store.consents() == {a.id: None}
    same = await store.set_consent(a.id, nodes=None, by="session:x", now=NOW + 5)
    assert same == consent  # the same choice again changes nothing
    narrowed = await store.set_consent(a.id, nodes=[a.node_ids[1]], by="session:ab", now=NOW + 9)
    assert (narrowed.nodes, narrowed.consented_at, narrowed.consented_by) == (
        (a.node_ids[1],),
        NOW + 9,
        "session:ab",
    )
    assert await store.consents() == {a.id: frozenset({a.node_ids[1]})}
    assert await store.clear_consent(a.id, keep_data=False) is True
    assert await store.consent(a.id) is None
    assert await store.clear_consent(a.id, keep_data=False) is False


async def test_free_plan_cannot_consent(store: Store) -> None:
    a = await seed_account(store, plan="free")
    with pytest.raises(Forbidden, match="not included in the free plan"):
        await store.set_consent(a.id, nodes=None, by="api_key:k", now=NOW)
    assert not (await all_rows(store))["saved_monitoring"]


async def test_nodes_of_another_account_are_refused(store: Store) -> None:
    a, b = await seed_account(store), await seed_account(store)
    with pytest.raises(Unprocessable) as caught:
        await store.set_consent(a.id, nodes=[a.node_ids[0], b.node_ids[0]], by="k", now=NOW)
    assert caught.value.field == "saved_nodes"
    assert await store.consent(a.id) is None


async def test_a_deleted_node_drops_out_of_the_consent(store: Store) -> None:
    a = await seed_account(store)
    await store.set_consent(a.id, nodes=list(a.node_ids), by="k", now=NOW)
    await store.delete_node(a.id, a.node_ids[0])
    consent = await store.consent(a.id)
    assert consent is not None
    assert consent.nodes == (a.node_ids[1],)


async def test_opting_out_deletes_every_monitored_row_of_the_account_only(store: Store) -> None:
    a, b = await seed_account(store), await seed_account(store)
    for who in (a, b):
        await store.set_consent(who.id, nodes=None, by="k", now=NOW)
        await seed_monitored(store, who.node_ids, who.endpoint_ids)
    full = await monitored_counts(store)
    assert all(full.values()), full
    await store.clear_consent(a.id, keep_data=False)
    after = await monitored_counts(store)
    assert after == {name: count // 2 for name, count in full.items()}
    monitored = {t.name for t in MONITORED_TABLES}
    left = [m for m in await mentions(store, identifying(a)) if m[0] in monitored]
    assert left == []
    assert await store.consent(b.id) is not None


async def test_opting_out_with_keep_saved_data_keeps_the_rows(store: Store) -> None:
    a = await seed_account(store)
    await store.set_consent(a.id, nodes=None, by="k", now=NOW)
    await seed_monitored(store, a.node_ids, a.endpoint_ids)
    before = await monitored_counts(store)
    await store.clear_consent(a.id, keep_data=True)
    assert await store.consent(a.id) is None
    assert await monitored_counts(store) == before
    await store.clear_consent(a.id, keep_data=False)  # later: delete what was kept, too
    assert not any((await monitored_counts(store)).values())


async def test_narrowing_deletes_the_rows_of_the_nodes_no_longer_chosen(store: Store) -> None:
    a = await seed_account(store, nodes=3)
    n0, n1, n2 = a.node_ids
    await store.set_consent(a.id, nodes=None, by="k", now=NOW)
    await seed_monitored(store, a.node_ids, a.endpoint_ids)
    per_node = await node_rows(store, n0)
    attempts = (await monitored_counts(store))["delivery_attempts"]
    await store.set_consent(a.id, nodes=[n1, n2], by="k", now=NOW + 1)
    assert (await node_rows(store, n0), await node_rows(store, n1)) == (0, per_node)
    await store.set_consent(a.id, nodes=[n2, n1, n0], by="k", now=NOW + 2)  # widening
    await store.set_consent(a.id, nodes=[n2], by="k", now=NOW + 3, keep_data=True)
    assert await node_rows(store, n1) == per_node
    await store.set_consent(a.id, nodes=[n0], by="k", now=NOW + 4)
    assert (await node_rows(store, n1), await node_rows(store, n2)) == (0, 0)
    # delivery attempts belong to the endpoint (no node): only opting out deletes them
    assert (await monitored_counts(store))["delivery_attempts"] == attempts


async def test_an_opt_out_waits_for_a_writer_and_deletes_its_rows(store: Store) -> None:
    """A writer that holds the consent row (FOR SHARE; on SQLite the write lock) commits
    first; the opt-out, which locks the consent row before deleting, then deletes its rows."""
    a = await seed_account(store)
    await store.set_consent(a.id, nodes=None, by="k", now=NOW)
    await ensure_partitions(store)
    postgres = store.engine.dialect.name == "postgresql"
    async with store.engine.connect() as writer:
        if not postgres:
            await writer.exec_driver_sql("COMMIT")  # leave the implicit transaction
            await writer.exec_driver_sql("BEGIN IMMEDIATE")
        else:
            await writer.begin()
        consent = select(saved_monitoring.c.account_id).where(saved_monitoring.c.account_id == a.id)
        if postgres:
            consent = consent.with_for_update(read=True)
        assert await writer.scalar(consent) == a.id
        await writer.execute(
            insert(metric_points).values(
                node_id=a.node_ids[0], metric="m", labels="", ts=NOW, value=1.0,
                retention_days=RETENTION,
            )
        )  # fmt: skip
        opt_out = asyncio.create_task(store.clear_consent(a.id, keep_data=False))
        await asyncio.sleep(0.3)
        assert not opt_out.done()
        if postgres:
            await writer.commit()
        else:
            await writer.exec_driver_sql("COMMIT")
        assert await asyncio.wait_for(opt_out, 10) is True
    assert not any((await monitored_counts(store)).values())


# -- deletion ------------------------------------------------------------------------------------
async def test_deletion_without_holds_leaves_nothing(store: Store) -> None:
    other = await seed_account(store)
    a = await seed_account(store)
    await store.set_consent(a.id, nodes=None, by="k", now=NOW)
    await seed_monitored(store, a.node_ids, a.endpoint_ids)
    await seed_monitored(store, other.node_ids, other.endpoint_ids)
    await store.add_hold(  # a released hold: its record (and reason) goes too
        a.id, kind="audit", reason="checked", categories=["plan"], ends_at=None, now=NOW
    )
    (hold,) = await store.holds(a.id, now=NOW)
    await store.release_hold(hold.id, now=NOW + 1)
    await store.create_session(a.id, "s" * 43, now=NOW, expires_at=NOW + DAY)
    deletion = await store.delete_account(a.id, status_token=TOKEN, now=NOW + 10)
    assert (deletion.state, deletion.completed_at, deletion.holds) == ("completed", NOW + 10, ())
    assert await store.account(a.id) is None
    assert await mentions(store, identifying(a), ignore=REQUEST_ACCOUNT_ID) == []
    assert await mentions(store, [a.id]) == [("deletion_requests", a.id)]
    rows = await all_rows(store)
    assert len(rows["deletion_requests"]) == 1
    request = rows["deletion_requests"][0]
    assert set(request) == {deletion.id, a.id, secret_digest(TOKEN), NOW + 10, "completed"}
    for table in ("held_data", "legal_holds", "saved_monitoring"):
        assert not rows[table], table
    # the other account is untouched
    assert await store.account(other.id) is not None
    assert all((await monitored_counts(store)).values())
    found = await store.deletion(TOKEN, NOW + 20)
    assert found is not None
    assert (found.id, found.state) == (deletion.id, "completed")
    assert await store.deletion("oc_del_" + "x" * 43, NOW) is None


async def _held(store: Store) -> dict[str, Any]:
    async with store.engine.connect() as conn:
        rows = await conn.execute(select(held_data.c.category, held_data.c.data))
        return {row.category: row.data for row in rows}


async def test_deletion_with_a_hold_keeps_exactly_the_held_categories(store: Store) -> None:
    a = await seed_account(store)
    await store.set_consent(a.id, nodes=[a.node_ids[0]], by="api_key:k1", now=NOW)
    await seed_monitored(store, a.node_ids, a.endpoint_ids)
    hold = await store.add_hold(
        a.account.email.upper(),
        kind="dispute",
        reason="chargeback 1234",
        categories=["registration", "nodes", "webhooks", "consent", "alert_history", "nodes"],
        ends_at=None,
        now=NOW,
    )
    assert hold.categories == ("registration", "nodes", "webhooks", "consent", "alert_history")
    assert (hold.account_id, hold.account_deleted, hold.held) == (a.id, False, ())
    deletion = await store.delete_account(a.id, status_token=TOKEN, now=NOW + 10)
    assert (deletion.state, deletion.completed_at) == ("held", None)
    assert [(h.kind, h.categories) for h in deletion.holds] == [("dispute", hold.categories)]
    held = await _held(store)
    assert set(held) == set(hold.categories)
    assert held["registration"] == {
        "name": a.account.name,
        "email": a.account.email,
        "company": a.account.company,
        "created_at": NOW,
    }
    assert sorted(n["id"] for n in held["nodes"]) == sorted(a.node_ids)
    assert set(held["nodes"][0]) == {"id", "name", "created_at", "enrolled_at"}
    (hook,) = held["webhooks"]
    assert hook["url_origin"] == url_origin(a.urls[0])
    assert not {"secret", "previous_secret", "routing_key", "url"} & set(hook)
    assert held["consent"]["consented_by"] == "api_key:k1"
    assert {row["node_id"] for row in held["alert_history"]} == set(a.node_ids)
    # nothing else: no plan, keys, sessions, tokens, metrics, attempts, queue, URL paths
    assert not any((await monitored_counts(store)).values())
    for secret in a.secrets:
        assert await mentions(store, [secret]) == []
    assert await mentions(store, list(a.urls)) == []
    for table in ("accounts", "api_keys", "sessions", "nodes", "webhook_endpoints"):
        assert not (await all_rows(store))[table], table
    status = await store.deletion(TOKEN, NOW + 20)
    assert status is not None
    assert status.state == "held"
    # release: the held data goes, the request completes, nothing is left
    released, state = await store.release_hold(hold.id, now=NOW + 30)
    assert (released.released_at, state) == (NOW + 30, "completed")
    assert await mentions(store, identifying(a), ignore=REQUEST_ACCOUNT_ID) == []
    rows = await all_rows(store)
    assert (rows["held_data"], rows["legal_holds"]) == ([], [])
    status = await store.deletion(TOKEN, NOW + 40)
    assert status is not None
    assert (status.state, status.completed_at, status.holds) == ("completed", NOW + 30, ())


async def test_a_hold_ends_by_time(store: Store) -> None:
    a = await seed_account(store)
    await store.add_hold(
        a.id, kind="tax", reason="records", categories=["registration", "plan"],
        ends_at=NOW + 10 * DAY, now=NOW,
    )  # fmt: skip
    await store.add_hold(
        a.id, kind="fraud", reason="check", categories=["nodes"], ends_at=NOW + 20 * DAY, now=NOW
    )
    await store.delete_account(a.id, status_token=TOKEN, now=NOW + DAY)
    assert await store.expire_holds(NOW + 9 * DAY) == 0
    assert set(await _held(store)) == {"registration", "plan", "nodes"}
    assert await store.expire_holds(NOW + 10 * DAY) == 0  # ends_at reached: the tax hold ends
    assert set(await _held(store)) == {"nodes"}
    status = await store.deletion(TOKEN, NOW + 10 * DAY)
    assert status is not None
    assert (status.state, [h.kind for h in status.holds]) == ("held", ["fraud"])
    assert await store.expire_holds(NOW + 25 * DAY) == 1
    assert await mentions(store, identifying(a), ignore=REQUEST_ACCOUNT_ID) == []
    status = await store.deletion(TOKEN, NOW + 26 * DAY)
    assert status is not None
    assert (status.state, status.completed_at) == ("completed", NOW + 25 * DAY)


async def test_the_status_read_ends_expired_holds_itself(store: Store) -> None:
    a = await seed_account(store)
    await store.add_hold(
        a.id, kind="legal", reason="r", categories=["plan"], ends_at=NOW + DAY, now=NOW
    )
    await store.delete_account(a.id, status_token=TOKEN, now=NOW + 1)
    status = await store.deletion(TOKEN, NOW + 2 * DAY)  # no job ran yet
    assert status is not None
    assert status.state == "completed"
    assert not (await all_rows(store))["held_data"]


async def test_a_hold_added_after_deletion_keeps_only_what_is_still_held(store: Store) -> None:
    a = await seed_account(store)
    first = await store.add_hold(
        a.id, kind="dispute", reason="r", categories=["registration"], ends_at=None, now=NOW
    )
    await store.delete_account(a.id, status_token=TOKEN, now=NOW + 1)
    with pytest.raises(NotFound):  # the e-mail address is gone with the account
        await store.add_hold(
            a.account.email, kind="legal", reason="r", categories=["plan"], ends_at=None, now=NOW
        )
    with pytest.raises(Conflict, match="nothing can be recovered"):
        await store.add_hold(
            a.id, kind="legal", reason="r", categories=["plan"], ends_at=None, now=NOW + 2
        )
    second = await store.add_hold(
        a.id, kind="legal", reason="court order", categories=["plan", "registration"],
        ends_at=NOW + DAY, now=NOW + 2,
    )  # fmt: skip
    assert (second.categories, second.account_deleted, second.held) == (
        ("registration",),
        True,
        ("registration",),
    )
    await store.release_hold(first.id, now=NOW + 3)
    assert set(await _held(store)) == {"registration"}  # the second copy lives on
    listed = await store.holds(a.id, include_inactive=True, now=NOW + 3)
    assert [(h.id, h.state(NOW + 3), h.held) for h in listed] == [
        (first.id, "released", ()),
        (second.id, "active", ("registration",)),
    ]
    assert await store.expire_holds(NOW + DAY) == 1
    assert await mentions(store, identifying(a), ignore=REQUEST_ACCOUNT_ID) == []
    with pytest.raises(Conflict):
        await store.add_hold(
            a.id, kind="legal", reason="r", categories=["registration"], ends_at=None, now=NOW
        )


async def test_hold_errors(store: Store) -> None:
    a = await seed_account(store)
    good: dict[str, Any] = {
        "kind": "audit", "reason": "r", "categories": ["plan"], "ends_at": None, "now": NOW,
    }  # fmt: skip
    bad: list[tuple[dict[str, Any], str]] = [
        ({"kind": "whim"}, "kind"),
        ({"reason": " "}, "reason"),
        ({"reason": "x" * 501}, "reason"),
        ({"categories": []}, "categories"),
        ({"categories": ["passwords"]}, "categories"),
        ({"ends_at": NOW - 1}, "until"),
    ]
    for change, field in bad:
        with pytest.raises(Unprocessable) as caught:
            await store.add_hold(a.id, **{**good, **change})
        assert caught.value.field == field
    for unknown in ("0" * 32, "nobody@example.com"):
        with pytest.raises(NotFound):
            await store.add_hold(unknown, **good)
        with pytest.raises(NotFound):
            await store.holds(unknown, now=NOW)
    with pytest.raises(NotFound):
        await store.release_hold("0" * 32, now=NOW)
    hold = await store.add_hold(a.id, **{**good, "ends_at": NOW + 10})
    with pytest.raises(Conflict, match="ended"):
        await store.release_hold(hold.id, now=NOW + 10)
    other = await store.add_hold(a.id, **good)
    await store.release_hold(other.id, now=NOW)
    with pytest.raises(Conflict, match="released"):
        await store.release_hold(other.id, now=NOW)
    assert [h.id for h in await store.holds(a.id, now=NOW + 11)] == []
    everything = await store.holds(include_inactive=True, now=NOW + 11)
    assert {h.id for h in everything} == {hold.id, other.id}


async def test_a_live_account_keeps_its_hold_records(store: Store) -> None:
    a = await seed_account(store)
    hold = await store.add_hold(
        a.id, kind="credit", reason="unpaid", categories=["plan"], ends_at=NOW + 5, now=NOW
    )
    assert await store.expire_holds(NOW + 10) == 0
    (listed,) = await store.holds(a.id, include_inactive=True, now=NOW + 10)
    assert (listed.id, listed.state(NOW + 10), listed.account_deleted) == (hold.id, "ended", False)
    async with store.engine.connect() as conn:
        assert await conn.scalar(select(legal_holds.c.reason)) == "unpaid"
        assert await conn.scalar(select(deletion_requests.c.id)) is None


async def test_deleting_an_unknown_account_is_not_found(store: Store) -> None:
    with pytest.raises(NotFound):
        await store.delete_account("0" * 32, status_token=TOKEN, now=NOW)
    assert not (await all_rows(store))["deletion_requests"]


# -- export --------------------------------------------------------------------------------------
async def test_export_reads_every_row_once_in_pages(
    store: Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(rights_store, "EXPORT_PAGE", 3)
    a, b = await seed_account(store, nodes=3), await seed_account(store)
    await seed_monitored(store, a.node_ids, a.endpoint_ids, points=4)
    await seed_monitored(store, b.node_ids, b.endpoint_ids)
    seen: dict[str, list[dict[str, Any]]] = {}
    pages: dict[str, int] = {}
    async for section, rows in store.export(a.id):
        seen.setdefault(section.name, []).extend(rows)
        pages[section.name] = pages.get(section.name, 0) + 1
    assert list(seen) == [s.name for s in EXPORT]
    assert len(seen["metric_points"]) == 12
    assert pages["metric_points"] == 5  # 3+3+3+3, then an empty page
    assert len({tuple(sorted(r.items())) for r in seen["metric_points"]}) == 12
    assert {r["node_id"] for r in seen["metric_points"]} == set(a.node_ids)
    assert len(seen["delivery_queue"]) == 3
    assert len(seen["alert_history"]) == 3
    assert [r["id"] for r in seen["accounts"]] == [a.id]
    assert "password_hash" not in seen["accounts"][0]
    assert all("token_hash" not in r for r in seen["nodes"])


async def test_sqlite_and_postgres_see_the_same_schema_names(store: Store) -> None:
    """Guard for the scans: every table of the MetaData exists (a forgotten migration would
    make the export and the deletion scan silently skip a table)."""
    async with store.engine.connect() as conn:
        for table in metadata.sorted_tables:
            await conn.execute(select(text("1")).select_from(table).limit(1))
