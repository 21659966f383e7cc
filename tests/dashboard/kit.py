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


# WCAG 2.x contrast (1.4.3) of every piece of visible text: the element's own text nodes (and
# the value / placeholder shown by a form control), its colour composited over the effective
# background. The background is found by walking up the ancestors to the page: each one's
# background-color, the colour stops of a gradient background-image (each stop is a possible
# background, the worst one counts), and opacity groups (an ancestor with opacity < 1 fades
# its whole subtree, text and backgrounds, over what is behind it). Hidden text (no boxes,
# visibility, opacity 0, 1 px screen-reader-only boxes) and text in <canvas>/<svg> is not
# seen, so it is skipped; disabled controls (and their labels) are exempt, as WCAG says.
# Large text (>= 24 px, or >= 18.66 px and bold) needs 3:1, other text 4.5:1.
LOW_CONTRAST_SCRIPT = """() => {
  const TYPED = "textarea, input:not([type=checkbox], [type=radio], [type=hidden], "
    + "[type=range], [type=color])";
  const SKIP = new Set(["SCRIPT", "STYLE", "NOSCRIPT", "TEMPLATE", "OPTION", "OPTGROUP", "TITLE"]);
  const N = String.raw`([\\d.]+)`;
  const RGB = new RegExp(String.raw`^rgba?\\(${N},\\s*${N},\\s*${N}(?:,\\s*${N})?\\)$`);
  const SRGB = new RegExp(String.raw`^color\\(srgb ${N} ${N} ${N}(?: \\/ ${N})?\\)$`);
  const parse = (text) => {
    const m = RGB.exec(text.trim());
    if (m) return [+m[1], +m[2], +m[3], m[4] === undefined ? 1 : +m[4]];
    const c = SRGB.exec(text.trim());
    if (c) return [c[1] * 255, c[2] * 255, c[3] * 255, c[4] === undefined ? 1 : +c[4]];
    return null;
  };
  const stops = (image) =>
    image && image !== "none"
      ? (image.match(/rgba?\\([^)]*\\)|color\\(srgb[^)]*\\)/g) || []).map(parse).filter(Boolean)
      : [];
  const over = (top, below) => {  // source-over; `below` is opaque
    const a = top[3];
    return [0, 1, 2].map((i) => top[i] * a + below[i] * (1 - a)).concat(1);
  };
  const mix = (a, b, t) => [0, 1, 2].map((i) => a[i] * t + b[i] * (1 - t)).concat(1);
  const lum = (c) => {
    const [r, g, b] = c.slice(0, 3).map((v) => {
      const s = v / 255;
      return s <= 0.04045 ? s / 12.92 : ((s + 0.055) / 1.055) ** 2.4;
    });
    return 0.2126 * r + 0.7152 * g + 0.0722 * b;
  };
  const ratio = (a, b) => {
    const [x, y] = [lum(a), lum(b)].sort((p, q) => q - p);
    return (x + 0.05) / (y + 0.05);
  };
  const byte = (v) => Math.round(v).toString(16).padStart(2, "0");
  const hex = (c) => "#" + c.slice(0, 3).map(byte).join("");
  const describe = (el) => {
    const parts = [];
    for (let e = el; e && e !== document.body && parts.length < 4; e = e.parentElement) {
      let part = e.tagName.toLowerCase();
      if (e.id) part += "#" + e.id;
      for (const c of e.classList) part += "." + c;
      for (const a of ["data-status", "data-severity", "data-state", "data-result", "data-level"]) {
        if (e.hasAttribute(a)) part += `[${a}=${e.getAttribute(a)}]`;
      }
      parts.unshift(part);
    }
    return parts.join(" > ");
  };
  const page = () => {  // the canvas: the root's background, else the body's, else the UA's
    for (const e of [document.documentElement, document.body]) {
      const c = parse(getComputedStyle(e).backgroundColor);
      if (c && c[3] > 0) return over(c, [255, 255, 255, 1]);
    }
    const dark = getComputedStyle(document.documentElement).colorScheme.includes("dark");
    return dark ? [18, 18, 18, 1] : [255, 255, 255, 1];
  };
  const exempt = (el) => {
    if (el.closest(":disabled, [aria-disabled=true]")) return true;
    const label = el.closest("label");
    return Boolean(label && label.control && label.control.disabled);
  };
  const shown = (el) => {
    const style = getComputedStyle(el);
    if (style.visibility !== "visible" || el.closest("canvas, svg")) return false;
    const box = el.getBoundingClientRect();
    if (el.getClientRects().length === 0 || box.width <= 1 || box.height <= 1) return false;
    for (let e = el; e; e = e.parentElement) {
      if (parseFloat(getComputedStyle(e).opacity) === 0) return false;
    }
    return true;
  };
  // Every background the text may sit on, each with the (text, background) pixel pair.
  const pixels = (el, fg) => {
    const chain = [];
    for (let e = el; e; e = e.parentElement) chain.unshift(e);
    // A candidate: the backdrop at the start of each open opacity group, and the current one.
    let candidates = [{ groups: [], now: page() }];
    for (const e of chain) {
      const style = getComputedStyle(e);
      const opacity = parseFloat(style.opacity);
      if (opacity < 1) {
        candidates = candidates.map((c) => ({
          groups: [...c.groups, [opacity, c.now]], now: c.now,
        }));
      }
      const canvas = e === document.documentElement || e === document.body;  // page()
      const colour = (!canvas && parse(style.backgroundColor)) || [0, 0, 0, 0];
      const layers = canvas ? [] : stops(style.backgroundImage);
      const options = layers.length ? layers.map((s) => [colour, s]) : [[colour]];
      const next = new Map();
      for (const c of candidates) {
        for (const option of options) {
          const now = option.reduce((below, top) => over(top, below), c.now);
          const key = hex(now) + c.groups.map((g) => hex(g[1])).join("");
          if (!next.has(key)) next.set(key, { groups: c.groups, now });
        }
      }
      candidates = [...next.values()].slice(0, 32);
    }
    return candidates.map((c) => {
      let text = over(fg, c.now);
      let back = c.now;
      for (const [opacity, behind] of [...c.groups].reverse()) {
        text = mix(text, behind, opacity);
        back = mix(back, behind, opacity);
      }
      return [text, back];
    });
  };
  const check = (el, text, colour, style) => {
    const size = parseFloat(style.fontSize);
    const large = size >= 24 || (size >= 18.66 && parseInt(style.fontWeight, 10) >= 700);
    const needed = large ? 3 : 4.5;
    const fg = parse(colour);
    const where = describe(el);
    const excerpt = text.replace(/\\s+/g, " ").trim().slice(0, 60);
    if (!fg) return { where, text: excerpt, ratio: null, needed, fg: colour, bg: "?" };
    let worst = null;
    for (const [t, b] of pixels(el, fg)) {
      const r = ratio(t, b);
      if (!worst || r < worst.r) worst = { r, t, b };
    }
    if (worst.r >= needed) return null;
    return {
      where, text: excerpt, ratio: Math.round(worst.r * 100) / 100, needed,
      fg: hex(worst.t), bg: hex(worst.b), size: `${size}px/${style.fontWeight}`,
    };
  };
  const found = [];
  const seen = new Set();
  const add = (offender) => {
    if (!offender) return;
    const key = `${offender.where}|${offender.fg}|${offender.bg}`;
    if (seen.has(key)) return;
    seen.add(key);
    found.push(offender);
  };
  for (const el of document.body.querySelectorAll("*")) {
    if (SKIP.has(el.tagName) || !shown(el) || exempt(el)) continue;
    const style = getComputedStyle(el);
    if (el.matches(TYPED)) {
      if (el.value) add(check(el, el.value, style.color, style));
      else if (el.placeholder) {
        add(check(el, el.placeholder, getComputedStyle(el, "::placeholder").color, style));
      }
      continue;
    }
    if (el.tagName === "SELECT") {
      const option = el.selectedOptions[0];
      const text = option ? option.textContent : "";
      if (text.trim()) add(check(el, text, style.color, style));
      continue;
    }
    const own = [...el.childNodes]
      .filter((n) => n.nodeType === Node.TEXT_NODE)
      .map((n) => n.textContent)
      .join("");
    if (own.trim()) add(check(el, own, style.color, style));
  }
  return found;
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

    async def low_contrast(self) -> list[dict[str, Any]]:
        """Visible text below the WCAG AA contrast ratio on its effective background (4.5:1, or
        3:1 for large text): ``{where, text, ratio, needed, fg, bg, size}`` per offender."""
        found: list[dict[str, Any]] = await self.page.evaluate(LOW_CONTRAST_SCRIPT)
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
