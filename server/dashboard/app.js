// OneConnect Alert dashboard: start-up, the session, the header, hash routes and the theme.
// Routes: #/fleet  #/nodes/<id>  #/alerts  #/settings  #/login  #/signup  (no page reloads).

import { alertsView } from "./alerts.js";
import { del, get, onUnauthorized, setCsrf } from "./api.js";
import { loginView, signupView } from "./auth.js";
import { copyBlock, dialog, h, replace } from "./dom.js";
import { fleetView } from "./fleet.js";
import { fleet, onFleet, startFleet, stopFleet } from "./live.js";
import { nodeView } from "./node.js";
import { deletionResult, settingsView } from "./settings.js";

const THEMES = ["auto", "light", "dark"];
const THEME_KEY = "oc-theme";
const main = document.getElementById("main");
const topbar = document.getElementById("topbar");

const ctx = {
  account: null,
  query: new URLSearchParams(),
  navigate(hash) {
    if (window.location.hash === hash) route();
    else window.location.hash = hash;
  },
  setAccount(account) {
    ctx.account = account;
    renderAccount();
  },
  rerender() {},
  nodesChanged() {},
  async signedIn(session, { apiKey } = {}) {
    setCsrf(session.csrf_token);
    ctx.account = session.account;
    startFleet();
    renderAccount();
    const wanted = window.location.hash;
    ctx.navigate(wanted.startsWith("#/") && !/^#\/(login|signup)/.test(wanted) ? wanted : "#/fleet");
    if (apiKey) {
      await dialog({
        title: "Welcome — here is your first API key",
        body: [
          h("p", null, "For scripts and the HTTP API. It is shown only now; you can create more in Settings."),
          copyBlock(apiKey),
        ],
        actions: [{ label: "Continue", kind: "primary", value: "ok" }],
      });
    }
  },
  deleted(deletion) {
    signedOut();
    current?.destroy?.();
    current = null;
    topbar.hidden = true;
    replace(
      main,
      h(
        "section",
        { class: "view auth" },
        h("div", { class: "auth-card wide" }, deletionResult(deletion), h("a", { href: "#/signup", class: "btn" }, "Create a new account")),
      ),
    );
    document.title = "Account deleted · OneConnect Alert";
  },
};

let current = null;

// -- theme ----------------------------------------------------------------------------------

function storedTheme() {
  try {
    const t = localStorage.getItem(THEME_KEY);
    return THEMES.includes(t) ? t : "auto";
  } catch {
    return "auto";
  }
}

function applyTheme(theme) {
  if (theme === "auto") delete document.documentElement.dataset.theme;
  else document.documentElement.dataset.theme = theme;
  const button = document.getElementById("theme-toggle");
  if (button) {
    button.textContent = { auto: "Theme: auto", light: "Theme: light", dark: "Theme: dark" }[theme];
    button.setAttribute("aria-label", `Colour theme: ${theme}. Change theme`);
  }
  window.dispatchEvent(new Event("oc-theme"));
}

function cycleTheme() {
  const next = THEMES[(THEMES.indexOf(storedTheme()) + 1) % THEMES.length];
  try {
    localStorage.setItem(THEME_KEY, next);
  } catch {
    /* private mode: the choice lasts for this page */
  }
  applyTheme(next);
}

window.matchMedia("(prefers-color-scheme: dark)").addEventListener("change", () => {
  if (storedTheme() === "auto") applyTheme("auto");
});

// -- header ---------------------------------------------------------------------------------

const navLinks = {};
const alertCount = h("span", { class: "nav-count", hidden: true });

function buildHeader() {
  const links = [
    ["fleet", "Fleet", null],
    ["alerts", "Alerts", alertCount],
    ["settings", "Settings", null],
  ].map(([key, label, extra]) => {
    const a = h("a", { href: `#/${key}`, class: "nav-link" }, label, extra);
    navLinks[key] = a;
    return a;
  });
  const theme = h("button", { type: "button", class: "btn btn-quiet", id: "theme-toggle" });
  theme.addEventListener("click", cycleTheme);
  const who = h("span", { class: "who", id: "who" });
  const logout = h("button", { type: "button", class: "btn btn-quiet" }, "Sign out");
  logout.addEventListener("click", async () => {
    try {
      await del("/api/v1/session");
    } catch {
      /* signed out anyway */
    }
    signedOut();
    ctx.navigate("#/login");
  });
  replace(
    topbar,
    h(
      "div",
      { class: "topbar-inner" },
      h("a", { href: "#/fleet", class: "brand" }, h("span", { class: "logo", "aria-hidden": "true" }), h("span", null, "OneConnect Alert")),
      h("nav", { class: "nav", "aria-label": "Main" }, links),
      h("div", { class: "topbar-end" }, theme, who, logout),
    ),
  );
  applyTheme(storedTheme());
}

function renderAccount() {
  const who = document.getElementById("who");
  if (who && ctx.account) who.textContent = ctx.account.email;
}

onFleet(() => {
  const firing = fleet.counts.alerts || 0;
  alertCount.hidden = firing === 0;
  alertCount.textContent = String(firing);
  alertCount.setAttribute("aria-label", `${firing} firing`);
});

// -- routing --------------------------------------------------------------------------------

function parse() {
  const raw = window.location.hash || "#/fleet";
  const [path, query] = raw.slice(1).split("?");
  return { parts: path.split("/").filter(Boolean), query: new URLSearchParams(query || "") };
}

function route() {
  const hash = window.location.hash;
  if (hash && !hash.startsWith("#/")) return; // in-page anchors (skip link)
  const { parts, query } = parse();
  ctx.query = query;
  ctx.rerender = () => {};
  const page = parts[0] || "fleet";
  if (!ctx.account && page !== "signup") {
    show(loginView(ctx), null);
    return;
  }
  if (!ctx.account) {
    show(signupView(ctx), null);
    return;
  }
  if (page === "login" || page === "signup") {
    ctx.navigate("#/fleet");
    return;
  }
  if (page === "nodes" && parts[1]) show(nodeView(ctx, parts[1]), "fleet");
  else if (page === "alerts") show(alertsView(ctx), "alerts");
  else if (page === "settings") show(settingsView(ctx), "settings");
  else show(fleetView(ctx), "fleet");
}

function show(view, section) {
  current?.destroy?.();
  current = view;
  topbar.hidden = !ctx.account;
  for (const [key, a] of Object.entries(navLinks)) {
    if (key === section) a.setAttribute("aria-current", "page");
    else a.removeAttribute("aria-current");
  }
  replace(main, view.el);
  document.title = view.title ? `${view.title} · OneConnect Alert` : "OneConnect Alert";
  main.dataset.view = section || "auth";
  window.scrollTo(0, 0);
}

function signedOut() {
  stopFleet();
  setCsrf(null);
  ctx.account = null;
  topbar.hidden = true;
}

onUnauthorized(() => {
  if (!ctx.account) return;
  signedOut();
  route();
});

window.addEventListener("hashchange", route);

async function boot() {
  buildHeader();
  try {
    const session = await get("/api/v1/session", { quiet401: true });
    setCsrf(session.csrf_token);
    ctx.account = session.account;
    renderAccount();
    startFleet();
  } catch {
    ctx.account = null;
  }
  route();
}

boot();
