"""Dashboard fixtures: a real server app on 127.0.0.1 (real clock, SQLite store), Chromium.

chromium -> Path          Debian's Chromium; without it (or without the playwright
                          package) every browser test skips with one reason line —
                          unless $CI is "true": then they fail, because CI must run them
store -> Store            a migrated SQLite store under tmp_path
srv -> ServerUnderTest    the app on a free port, webhooks to 127.0.0.0/8 allowed
shots -> Path             tmp_path/screenshots, where browser tests write their PNGs
"""

from __future__ import annotations

import importlib.util
import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest

from server.clock import SystemClock
from server.storage.migrate import migrate
from server.storage.store import Store
from tests.dashboard.kit import CHROMIUM
from tests.server.streamkit import ServerUnderTest


def _browser_problem() -> str | None:
    if not (CHROMIUM.is_file() and os.access(CHROMIUM, os.X_OK)):
        return f"no Chromium at {CHROMIUM} (apt-get install -y chromium)"
    if importlib.util.find_spec("playwright") is None:
        return "the playwright package is not installed (pip install playwright)"
    return None


PROBLEM = _browser_problem()
SKIPPING = PROBLEM is not None and os.environ.get("CI") != "true"
collect_ignore_glob = ["test_browser_*.py"] if SKIPPING else []


def pytest_terminal_summary(terminalreporter: pytest.TerminalReporter) -> None:
    if SKIPPING:
        terminalreporter.write_line(
            f"SKIPPED tests/dashboard/test_browser_*.py (the browser tests): {PROBLEM}",
            yellow=True,
        )


@pytest.fixture(scope="session")
def chromium() -> Path:
    if PROBLEM is not None:
        pytest.fail(f"dashboard browser tests cannot run: {PROBLEM} — CI must run them")
    return CHROMIUM


@pytest.fixture
async def store(tmp_path: Path) -> AsyncIterator[Store]:
    url = f"sqlite+aiosqlite:///{tmp_path / 'oneconnect.db'}"
    await migrate(url)
    opened = await Store.open(url)
    try:
        yield opened
    finally:
        await opened.close()


@pytest.fixture
async def srv(store: Store) -> AsyncIterator[ServerUnderTest[SystemClock]]:
    server = ServerUnderTest(
        store,
        SystemClock(),
        webhook_allow_networks=["127.0.0.0/8"],
        start_grace_seconds=120,
    )
    await server.start()
    try:
        yield server
    finally:
        await server.stop()


@pytest.fixture
def shots(tmp_path: Path) -> Path:
    folder = tmp_path / "screenshots"
    folder.mkdir()
    return folder
