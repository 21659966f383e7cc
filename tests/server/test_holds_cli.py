"""``oneconnect-server holds add|list|release`` run as a real subprocess against the server's
database (named by ONECONNECT_SERVER_DATABASE_URL, as ``migrate`` reads it): the happy path on
SQLite and PostgreSQL, every usage error (exit code 2) on SQLite."""

from __future__ import annotations

import asyncio
import json
import os
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from server.holds import parse_until
from server.storage.migrate import migrate
from server.storage.store import Store
from tests.server.accounts_kit import all_rows
from tests.server.rights_kit import identifying, mentions, seed_account

REPO = Path(__file__).resolve().parents[2]
TOKEN = "oc_del_" + "c" * 43


async def holds(url: str, *args: str) -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("ONECONNECT_")}
    env |= {"ONECONNECT_SERVER_DATABASE_URL": url, "PYTHONDONTWRITEBYTECODE": "1"}
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-m", "server.cli", "holds", *args,
        env=env, cwd=REPO, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
    )  # fmt: skip
    out, err = await asyncio.wait_for(proc.communicate(), 60)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


def in_days(days: int) -> str:
    return (datetime.now(UTC) + timedelta(days=days)).date().isoformat()


async def test_add_list_release_happy_path(db_url: str, store: Store) -> None:
    a = await seed_account(store, now=time.time())
    until = in_days(30)
    code, out, err = await holds(
        db_url, "add", "--account", a.account.email.upper(), "--kind", "dispute",
        "--reason", "chargeback #1234", "--categories", "registration, plan", "--until", until,
    )  # fmt: skip
    assert code == 0, err
    assert out.startswith("hold ")
    hold_id = out.split()[1]
    assert f"account     {a.id}" in out
    assert "registration, plan" in out
    assert until in out or in_days(31) in out  # the end of that day
    code, out, _ = await holds(db_url, "list")
    assert code == 0
    assert hold_id in out
    assert "chargeback #1234" in out
    assert "active" in out
    code, out, _ = await holds(db_url, "list", "--account", a.id, "--json")
    assert code == 0
    (listed,) = json.loads(out)
    assert listed["id"] == hold_id
    assert listed["account_id"] == a.id
    assert (listed["kind"], listed["categories"], listed["state"]) == (
        "dispute", ["registration", "plan"], "active",
    )  # fmt: skip
    assert listed["ends_at"] == parse_until(until, time.time())
    # deleted while held: the hold keeps its categories; release ends the rest
    await store.delete_account(a.id, status_token=TOKEN, now=time.time())
    code, out, _ = await holds(db_url, "list", "--account", a.id, "--json")
    assert json.loads(out)[0]["held"] == ["registration", "plan"]
    assert json.loads(out)[0]["account_deleted"] is True
    code, out, err = await holds(db_url, "release", hold_id)
    assert code == 0, err
    assert f"hold {hold_id} released" in out
    assert "no data of it is left" in out
    assert await mentions(store, identifying(a), ignore=[("deletion_requests", "account_id")]) == []
    code, out, _ = await holds(db_url, "list", "--all")
    assert (code, out.strip()) == (0, "no holds")


@pytest.fixture
async def sqlite_url(tmp_path: Path) -> str:
    url = f"sqlite+aiosqlite:///{tmp_path / 'server.db'}"
    await migrate(url)
    return url


async def _account(url: str) -> Any:
    store = await Store.open(url)
    try:
        return await seed_account(store, now=time.time())
    finally:
        await store.close()


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--account", "0" * 32], "no account with this id"),
        (["--account", "nobody@example.com"], "no account with this e-mail address"),
        (["--kind", "whim"], "--kind: unknown 'whim'; choose from dispute, credit"),
        (["--categories", "registration,passwords"], "--categories: unknown 'passwords'"),
        (["--categories", ","], "--categories: choose one or more of registration"),
        (["--until", "2020-01-01"], "--until: 2020-01-01 is in the past"),
        (["--until", "31.12.2030"], "--until: '31.12.2030' is not a date like"),
        (["--until", "2030-02-30"], "is not a date like"),
        (["--reason", " "], "--reason: 1-500 printable characters"),
    ],
)
async def test_add_errors_exit_2(sqlite_url: str, args: list[str], message: str) -> None:
    a = await _account(sqlite_url)
    base = {
        "--account": a.id, "--kind": "legal", "--reason": "r", "--categories": "plan",
    }  # fmt: skip
    given = dict(zip(args[::2], args[1::2], strict=True))
    flat = [part for pair in {**base, **given}.items() for part in pair]
    code, out, err = await holds(sqlite_url, "add", *flat)
    assert code == 2, (out, err)
    assert message in err
    assert out == ""
    store = await Store.open(sqlite_url)
    try:
        assert (await all_rows(store))["legal_holds"] == []
    finally:
        await store.close()


async def test_release_and_list_errors_exit_2(sqlite_url: str) -> None:
    a = await _account(sqlite_url)
    code, _, err = await holds(sqlite_url, "release", "0" * 32)
    assert (code, "no hold with this id" in err) == (2, True)
    code, out, _ = await holds(
        sqlite_url, "add", "--account", a.id, "--kind", "tax", "--reason", "r",
        "--categories", "plan",
    )  # fmt: skip
    hold_id = out.split()[1]
    assert (await holds(sqlite_url, "release", hold_id))[0] == 0
    code, _, err = await holds(sqlite_url, "release", hold_id)
    assert (code, "not active (it has released)" in err) == (2, True)
    code, out, _ = await holds(sqlite_url, "list")
    assert out.strip() == "no holds"
    code, out, _ = await holds(sqlite_url, "list", "--all", "--json")
    assert [h["state"] for h in json.loads(out)] == ["released"]
    code, _, err = await holds(sqlite_url, "list", "--account", "nobody@example.com")
    assert (code, "no account" in err) == (2, True)


async def test_a_deleted_account_is_named_by_id_only(sqlite_url: str) -> None:
    store = await Store.open(sqlite_url)
    try:
        a = await seed_account(store, now=time.time())
        await store.delete_account(a.id, status_token=TOKEN, now=time.time())
    finally:
        await store.close()
    add = ["--kind", "legal", "--reason", "late court order", "--categories", "registration"]
    code, _, err = await holds(sqlite_url, "add", "--account", a.account.email, *add)
    assert code == 2
    assert "deleted account is found by its id only" in err
    code, _, err = await holds(sqlite_url, "add", "--account", a.id, *add)
    assert code == 2
    assert "nothing can be recovered" in err


async def test_no_database_and_bad_usage(tmp_path: Path) -> None:
    missing = f"sqlite+aiosqlite:///{tmp_path / 'none.db'}"
    code, _, err = await holds(missing, "list")
    assert code == 2
    assert "no database at" in err
    assert not (tmp_path / "none.db").exists()
    code, _, err = await holds(missing, "add", "--account", "x")  # argparse: missing options
    assert code == 2
    assert "required" in err
    code, out, _ = await holds(missing, "--help")
    assert code == 0
    for word in ("dispute", "fraud", "registration", "delivery_attempts", "--until"):
        assert word in out


def test_parse_until_is_the_end_of_that_utc_day() -> None:
    now = datetime(2027, 1, 15, 12, tzinfo=UTC).timestamp()
    assert parse_until("2027-01-15", now) == datetime(2027, 1, 16, tzinfo=UTC).timestamp()
    assert parse_until(None, now) is None
