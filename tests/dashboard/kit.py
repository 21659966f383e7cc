"""Kit for the dashboard tests: Debian's Chromium through Playwright, a real server app on
127.0.0.1 with a real SQLite store, a watched page (console, page errors, dialogs and CSP
violations recorded), and live state fed in-process for fleets without agents.

    async with launched(chromium) as browser:
        page = await Watched.open(browser, srv.url)
        ...
        page.assert_clean()        # no page error, no dialog, no CSP violation
"""

from __future__ import annotations

import os
import random
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from agent.protocol import AlertEvent, Hello, Metrics, WireSample
from server.live import LiveState
from server.storage.records import NodeRef

if TYPE_CHECKING:  # playwright is imported only when a browser test runs (see conftest)
    from playwright.async_api import Browser, BrowserContext, ConsoleMessage, Dialog, Page

CHROMIUM = Path(os.environ.get("ONECONNECT_TEST_CHROMIUM", "/usr/bin/chromium"))
LAUNCH_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
PASSWORD = "correct horse battery staple"
EXPECTED_CSP = (
    "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    "connect-src 'self'; frame-ancestors 'none'; base-uri 'none'; form-action 'self'; "
    "object-src 'none'"
)
# Runs before the page's own scripts (injected by the browser's devtools protocol, not by the
# page, so the CSP does not apply to it): records every CSP violation the page causes.
WATCH_SCRIPT = """
window.__cspViolations = [];
document.addEventListener("securitypolicyviolation", (e) => {
  const where = `${e.sourceFile}:${e.lineNumber}`;
  window.__cspViolations.push(`${e.violatedDirective} ${e.blockedURI} ${where}`);
});
"""

UNLABELLED_SCRIPT = """() => {
  const named = (el) =>
    (el.labels && el.labels.length > 0) ||
    el.getAttribute("aria-label") || el.getAttribute("aria-labelledby") ||
    (el.tagName === "BUTTON" && el.textContent.trim());
  return [...document.querySelectorAll("input, select, textarea, button")]
    .filter((el) => el.type !== "hidden" && !named(el))
    .map((el) => el.outerHTML.slice(0, 120));
}"""


@asynccontextmanager
async def launched(executable: Path) -> AsyncIterator[Browser]:
    from playwright.async_api import async_playwright

    async with async_playwright() as playwright:
        browser = await playwright.chromium.launch(
            executable_path=str(executable), args=LAUNCH_ARGS, headless=True
        )
        try:
            yield browser
        finally:
            await browser.close()


@dataclass
class Watched:
    """A page whose console, errors and dialogs are recorded."""

    context: BrowserContext
    page: Page
    base: str
    console: list[str] = field(default_factory=list)
    errors: list[str] = field(default_factory=list)
    dialogs: list[str] = field(default_factory=list)

    @classmethod
    async def open(cls, browser: Browser, base: str, **context: Any) -> Watched:
        options: dict[str, Any] = {"viewport": {"width": 1280, "height": 860}, **context}
        ctx = await browser.new_context(**options)
        await ctx.add_init_script(WATCH_SCRIPT)
        page = await ctx.new_page()
        page.set_default_timeout(15_000)
        watched = cls(ctx, page, base)
        page.on("console", watched._on_console)
        page.on("pageerror", lambda exc: watched.errors.append(str(exc)))
        page.on("dialog", watched._on_dialog)
        return watched

    def _on_console(self, message: ConsoleMessage) -> None:
        self.console.append(f"{message.type}: {message.text}")

    async def _on_dialog(self, dialog: Dialog) -> None:
        self.dialogs.append(f"{dialog.type}: {dialog.message}")
        await dialog.dismiss()

    async def csp_violations(self) -> list[str]:
        found: list[str] = await self.page.evaluate("window.__cspViolations || []")
        return found + [
            line
            for line in self.console
            if "Content Security Policy" in line or "Refused to" in line
        ]

    async def assert_clean(self) -> None:
        assert self.errors == [], self.errors
        assert self.dialogs == [], self.dialogs
        assert await self.csp_violations() == []
        # The only console errors allowed are the 401 of the signed-out session check.
        unexpected = [
            line
            for line in self.console
            if line.startswith("error:") and "401 (Unauthorized)" not in line
        ]
        assert unexpected == [], unexpected

    async def unlabelled(self) -> list[str]:
        """Form controls and buttons on the page that have no accessible name."""
        found: list[str] = await self.page.evaluate(UNLABELLED_SCRIPT)
        return found

    async def shot(self, folder: Path, name: str, *, full_page: bool = False) -> Path:
        """``folder/name.png`` (the folder exists: the ``shots`` fixture made it)."""
        path = folder / f"{name}.png"
        if full_page:  # from the top, so the sticky header is where it belongs
            await self.page.evaluate("window.scrollTo(0, 0)")
        await self.page.screenshot(path=str(path), full_page=full_page)
        return path

    async def sign_in(self, email: str, password: str = PASSWORD) -> None:
        await self.page.goto(self.base + "/#/login")
        await self.page.fill("input[name=email]", email)
        await self.page.fill("input[name=password]", password)
        await self.page.click("button[type=submit]")
        await self.page.wait_for_selector(".fleet .live-pill[data-state=live]")


# -- live state fed in-process (fleets without agents) ------------------------------------
GAUGE_METRICS = (
    "cpu_usage_percent",
    "memory_available_percent",
    "conntrack_used_percent",
    "load1_per_cpu",
)


def hello(interval: float = 1.0) -> Hello:
    return Hello(
        agent_version="0.1.0",
        interval=interval,
        metrics=[*GAUGE_METRICS, "net_rx_bytes_per_second", "net_tx_bytes_per_second"],
        rules=[],
        buffer_seconds=900,
    )


def frame(seq: int, rng: random.Random, *, cpu: float | None = None) -> Metrics:
    samples = [
        WireSample(m="cpu_usage_percent", v=cpu if cpu is not None else rng.uniform(1, 99)),
        WireSample(m="memory_available_percent", v=rng.uniform(5, 95)),
        WireSample(m="conntrack_used_percent", v=rng.uniform(0, 80)),
        WireSample(m="load1_per_cpu", v=rng.uniform(0, 2)),
        WireSample(m="net_rx_bytes_per_second", l={"interface": "eth0"}, v=rng.uniform(0, 1e8)),
        WireSample(m="net_tx_bytes_per_second", l={"interface": "eth0"}, v=rng.uniform(0, 1e8)),
        WireSample(m="net_rx_bytes_per_second", l={"interface": "wg0"}, v=rng.uniform(0, 1e6)),
        WireSample(m="net_tx_bytes_per_second", l={"interface": "wg0"}, v=rng.uniform(0, 1e6)),
    ]
    return Metrics(seq=seq, ts=1.7e9 + seq, samples=samples)


def connect(live: LiveState, ref: NodeRef, interval: float = 1.0) -> None:
    node = live.connected(ref)
    live.hello(node, hello(interval), interval)


def feed(
    live: LiveState, ref: NodeRef, seq: int, rng: random.Random, *, cpu: float | None = None
) -> None:
    node = live.get(ref.id)
    assert node is not None
    live.touch(node)
    live.metrics(node, frame(seq, rng, cpu=cpu))


def alert_event(
    n: int,
    *,
    rule: str = "cpu_high",
    severity: str = "warning",
    status: str = "firing",
    summary: str = "cpu is 97",
    fingerprint: str = "00000000000000aa",
    labels: dict[str, str] | None = None,
    ts: float | None = None,
) -> AlertEvent:
    ts = time.time() - 90 if ts is None else ts
    return AlertEvent.model_validate(
        {
            "id": f"evt-{n:08d}",
            "fingerprint": fingerprint,
            "rule": rule,
            "status": status,
            "severity": severity,
            "metric": "cpu_usage_percent",
            "labels": labels or {},
            "value": 97.0,
            "threshold": 90.0,
            "summary": summary,
            "started_at": ts,
            "ts": ts + n,
        }
    )
