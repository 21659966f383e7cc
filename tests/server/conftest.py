"""Server test fixtures: real databases (SQLite file and PostgreSQL), a real app on 127.0.0.1.

Databases — every fixture below that takes ``backend`` runs its test twice, on
``sqlite`` (a file under tmp_path) and on ``postgresql`` (a fresh database ``oc_test_<hex>``
created through asyncpg on $ONECONNECT_TEST_POSTGRES, default
postgresql://postgres@127.0.0.1:5432/postgres, and dropped afterwards). Without a reachable
PostgreSQL the ``postgresql`` runs skip with one reason line — unless $CI is "true": then they
fail, because CI must run them.

    empty_db_url -> str        a new, empty database (SQLAlchemy URL)
    db_url -> str              a new database at head: a copy of one migrated once per run
    store -> Store             an open Store on db_url
    clock -> FakeClock         time moves only with clock.advance()
    settings -> ServerSettings loopback, database_url=db_url, data_dir=tmp_path
    server -> LiveServer       the app on 127.0.0.1:<free port> (url, app, store, clock)
    client -> ClientSession    base_url=server.url, cookie jar that accepts 127.0.0.1
"""

from __future__ import annotations

import asyncio
import atexit
import os
import secrets
import shutil
import sqlite3
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path

import aiohttp
import asyncpg
import pytest
from aiohttp import web
from sqlalchemy.engine import make_url
from yarl import URL

from server.app import create_app
from server.clock import FakeClock
from server.config import ServerSettings, exact_settings
from server.storage.migrate import migrate
from server.storage.store import Store

POSTGRES_ENV = "ONECONNECT_TEST_POSTGRES"
DEFAULT_POSTGRES = "postgresql://postgres@127.0.0.1:5432/postgres"
BACKENDS = ("sqlite", "postgresql")


def postgres_dsn() -> str:
    return os.environ.get(POSTGRES_ENV) or DEFAULT_POSTGRES


async def _probe(dsn: str) -> str | None:
    try:
        conn = await asyncpg.connect(dsn, timeout=3)
    except (OSError, asyncpg.PostgresError, TimeoutError) as exc:
        return f"{type(exc).__name__}: {str(exc)[:120]}"
    await conn.close()
    return None


_probed: dict[str, str | None] = {}
"""DSN -> None (reachable) or the problem; probed once per test session."""


async def postgres_admin() -> str:
    """The admin DSN of a reachable PostgreSQL; otherwise skip (or fail when $CI is "true")."""
    dsn = postgres_dsn()
    if dsn not in _probed:
        _probed[dsn] = await _probe(dsn)
    problem = _probed[dsn]
    if problem is not None:
        shown = make_url(dsn).render_as_string(hide_password=True)
        reason = (
            f"PostgreSQL not reachable at {shown} ({problem}); start it "
            f"(pg_ctlcluster 15 main start) or set {POSTGRES_ENV}"
        )
        if os.environ.get("CI") == "true":
            pytest.fail(reason)
        pytest.skip(reason)
    return dsn


@pytest.fixture(params=BACKENDS)
def backend(request: pytest.FixtureRequest) -> str:
    return str(request.param)


async def _admin_execute(admin: str, sql: str) -> None:
    conn = await asyncpg.connect(admin, timeout=5)
    try:
        await conn.execute(sql)
    finally:
        await conn.close()


def _pg_url(admin: str, name: str) -> str:
    url = make_url(admin).set(drivername="postgresql+asyncpg", database=name)
    return url.render_as_string(hide_password=False)


@asynccontextmanager
async def _pg_database(admin: str, template: str | None = None) -> AsyncIterator[str]:
    """A new PostgreSQL database (a copy of ``template`` if given), dropped afterwards."""
    name = f"oc_test_{secrets.token_hex(8)}"
    copy = f' TEMPLATE "{template}"' if template else ""
    await _admin_execute(admin, f'CREATE DATABASE "{name}"{copy}')
    try:
        yield _pg_url(admin, name)
    finally:
        await _admin_execute(admin, f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


_templates: dict[str, str] = {}
"""Backend -> a database (PostgreSQL name or SQLite file) migrated to head once per test run;
each ``db_url`` is a copy of it, which is quicker than migrating every time."""


def _drop_templates() -> None:
    name = _templates.pop("postgresql", None)
    if name is not None:
        asyncio.run(
            _admin_execute(postgres_dsn(), f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        )
    path = _templates.pop("sqlite", None)
    if path is not None:
        shutil.rmtree(Path(path).parent, ignore_errors=True)


async def _template(backend: str) -> str:
    if backend in _templates:
        return _templates[backend]
    if not _templates:
        atexit.register(_drop_templates)
    if backend == "sqlite":
        path = Path(tempfile.mkdtemp(prefix="oc_template_")) / "oneconnect.db"
        await migrate(f"sqlite+aiosqlite:///{path}")
        _templates[backend] = str(path)
    else:
        admin = await postgres_admin()
        name = f"oc_template_{secrets.token_hex(8)}"
        await _admin_execute(admin, f'CREATE DATABASE "{name}"')
        _templates[backend] = name  # dropped at exit even if migrating fails
        await migrate(_pg_url(admin, name))  # disposes its engine: no session stays open
    return _templates[backend]


@pytest.fixture
async def empty_db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    if backend == "sqlite":
        yield f"sqlite+aiosqlite:///{tmp_path / 'oneconnect.db'}"
        return
    async with _pg_database(await postgres_admin()) as url:
        yield url


@pytest.fixture
async def db_url(backend: str, tmp_path: Path) -> AsyncIterator[str]:
    """A database at the head revision: a copy of this run's migrated template."""
    template = await _template(backend)
    if backend == "sqlite":
        path = tmp_path / "oneconnect.db"
        with sqlite3.connect(template) as source, sqlite3.connect(path) as target:
            source.backup(target)  # a consistent copy, whatever the template's WAL holds
        yield f"sqlite+aiosqlite:///{path}"
        return
    async with _pg_database(await postgres_admin(), template) as url:
        yield url


@pytest.fixture
async def store(db_url: str) -> AsyncIterator[Store]:
    opened = await Store.open(db_url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
def clock() -> FakeClock:
    return FakeClock()


def make_settings(tmp_path: Path, db_url: str, **overrides: object) -> ServerSettings:
    """Settings from exactly these values (ONECONNECT_SERVER_* in the environment ignored)."""
    return exact_settings(
        listen="127.0.0.1:0",
        data_dir=tmp_path,
        database_url=db_url,
        migrate_on_start=False,
        **overrides,
    )


@pytest.fixture
def settings(tmp_path: Path, db_url: str) -> ServerSettings:
    return make_settings(tmp_path, db_url)


@dataclass(frozen=True)
class LiveServer:
    url: URL
    app: web.Application
    store: Store
    clock: FakeClock


def build_app(settings: ServerSettings, store: Store, clock: FakeClock) -> web.Application:
    """The real application, sharing the test's store and fake clock."""
    return create_app(settings, store=store, clock=clock)


async def start_server(
    settings: ServerSettings, store: Store, clock: FakeClock
) -> tuple[LiveServer, web.AppRunner]:
    app = build_app(settings, store, clock)
    runner = web.AppRunner(app, access_log=None, shutdown_timeout=5)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    host, port = runner.addresses[0][:2]
    return LiveServer(URL.build(scheme="http", host=host, port=port), app, store, clock), runner


@pytest.fixture
async def server(
    settings: ServerSettings, store: Store, clock: FakeClock
) -> AsyncIterator[LiveServer]:
    live, runner = await start_server(settings, store, clock)
    try:
        yield live
    finally:
        await runner.cleanup()


def new_client(base: URL) -> aiohttp.ClientSession:
    """A client for ``base``; its cookie jar accepts cookies from an IP address (127.0.0.1)."""
    return aiohttp.ClientSession(
        base_url=base,
        cookie_jar=aiohttp.CookieJar(unsafe=True),
        timeout=aiohttp.ClientTimeout(total=30),
    )


@pytest.fixture
async def client(server: LiveServer) -> AsyncIterator[aiohttp.ClientSession]:
    async with new_client(server.url) as session:
        yield session
