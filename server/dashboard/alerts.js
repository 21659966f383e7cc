// The alerts view: firing alerts (live state) and resolved ones — from saved alert history
// when saved monitoring is on, otherwise what the server remembers since it started. Refreshes
// when the live fleet reports an alert change; no polling.

import { ApiError, explain, get } from "./api.js";
import { h, replace } from "./dom.js";
import { ago, duration, when } from "./format.js";
import { fleet, onFleet, serverNow } from "./live.js";

const SEVERITY_TEXT = { critical: "Critical", warning: "Warning", info: "Info" };
const RANGES = { "24h": 86400, "7d": 7 * 86400, "30d": 30 * 86400 };

function valueText(alert) {
  if (alert.value === null || alert.value === undefined) return "";
  const value = typeof alert.value === "number" ? Number(alert.value.toFixed(2)) : alert.value;
  return alert.threshold === null || alert.threshold === undefined
    ? `value ${value}`
    : `value ${value} (threshold ${Number(Number(alert.threshold).toFixed(2))})`;
}

export function alertItem(alert, now, { showNode = true } = {}) {
  const labels = Object.entries(alert.labels || {});
  const ended = alert.status === "resolved";
  const started = alert.started_at ?? alert.ts;
  return h(
    "li",
    { class: "alert", dataset: { severity: alert.severity, status: alert.status, rule: alert.rule } },
    h(
      "div",
      { class: "alert-head" },
      h("span", { class: "sev", dataset: { severity: alert.severity } }, SEVERITY_TEXT[alert.severity] || alert.severity),
      h("span", { class: "alert-rule" }, alert.rule),
      h("span", { class: ["alert-status", ended ? "is-resolved" : "is-firing"] }, ended ? "Resolved" : "Firing"),
      showNode && alert.node_id
        ? h("a", { class: "alert-node", href: `#/nodes/${encodeURIComponent(alert.node_id)}` }, alert.node_name || alert.node_id)
        : null,
    ),
    alert.summary ? h("p", { class: "alert-summary" }, alert.summary) : null,
    h(
      "p",
      { class: "alert-meta muted" },
      h("time", { datetime: new Date(started * 1000).toISOString(), title: when(started) }, `started ${ago(started, now)}`),
      ended && alert.ended_at ? ` · lasted ${duration(alert.ended_at - started)}` : "",
      valueText(alert) ? ` · ${valueText(alert)}` : "",
      labels.length ? " · " : "",
      labels.map(([k, v]) => h("span", { class: "chip" }, `${k}=${v}`)),
    ),
  );
}

export function alertsView(ctx) {
  const params = ctx.query;
  const state = {
    status: params.get("status") || "firing",
    severity: params.get("severity") || "all",
    node: params.get("node") || "",
    range: "7d",
  };
  const tabs = h("div", { class: "segmented", role: "group", "aria-label": "Which alerts" });
  for (const [key, label] of [["firing", "Firing"], ["resolved", "Resolved"], ["all", "All"]]) {
    const btn = h("button", { type: "button", "aria-pressed": String(state.status === key), dataset: { key } }, label);
    btn.addEventListener("click", () => {
      state.status = key;
      for (const b of tabs.children) b.setAttribute("aria-pressed", String(b.dataset.key === key));
      load();
    });
    tabs.append(btn);
  }
  const severity = h(
    "select",
    { id: "alert-severity" },
    [["all", "All severities"], ["critical", "Critical"], ["warning", "Warning"], ["info", "Info"]].map(([v, t]) =>
      h("option", { value: v, selected: v === state.severity }, t),
    ),
  );
  severity.addEventListener("change", () => {
    state.severity = severity.value;
    load();
  });
  const range = h(
    "select",
    { id: "alert-range" },
    Object.keys(RANGES).map((r) => h("option", { value: r, selected: r === state.range }, `History: last ${r.replace("h", " h").replace("d", " days")}`)),
  );
  range.addEventListener("change", () => {
    state.range = range.value;
    load();
  });
  const nodeName = state.node ? (fleet.nodes.get(state.node)?.name || state.node) : "";
  const nodeChip = state.node
    ? h("span", { class: "chip chip-filter" }, `Node: ${nodeName} `, h("a", { href: "#/alerts", "aria-label": "Show alerts of every node" }, "×"))
    : null;
  const note = h("p", { class: "muted small note" });
  const list = h("ul", { class: "alerts-list", "aria-live": "polite" });
  const el = h(
    "section",
    { class: "view alerts-view", "aria-labelledby": "alerts-title" },
    h("div", { class: "view-head" }, h("h1", { id: "alerts-title" }, "Alerts")),
    h(
      "div",
      { class: "toolbar" },
      tabs,
      h("label", { for: "alert-severity", class: "sr-only" }, "Severity"),
      severity,
      h("label", { for: "alert-range", class: "sr-only" }, "History range"),
      range,
      nodeChip,
    ),
    note,
    list,
  );
  let alive = true;
  let timer = 0;
  let seq = 0;

  async function resolvedAlerts() {
    const nodeParam = state.node ? `&node=${encodeURIComponent(state.node)}` : "";
    if (ctx.account && ctx.account.saved_monitoring) {
      const to = serverNow();
      try {
        const body = await get(`/api/v1/alerts/history?from=${Math.floor(to - RANGES[state.range])}&to=${Math.ceil(to)}&limit=500${nodeParam}`);
        range.hidden = false;
        note.textContent = "Resolved alerts from saved alert history.";
        return body.alerts.filter((a) => a.status === "resolved");
      } catch (err) {
        if (!(err instanceof ApiError && err.status === 409)) throw err;
      }
    }
    range.hidden = true;
    note.textContent = "Resolved alerts since the server last started (nothing is stored). Turn on saved monitoring in Settings to keep alert history.";
    const body = await get(`/api/v1/alerts?status=resolved${nodeParam}`);
    return body.alerts;
  }

  async function load() {
    const mine = ++seq;
    const nodeParam = state.node ? `&node=${encodeURIComponent(state.node)}` : "";
    try {
      let alerts = [];
      if (state.status !== "resolved") {
        const body = await get(`/api/v1/alerts?status=firing${nodeParam}`);
        alerts = alerts.concat(body.alerts);
      }
      if (state.status !== "firing") alerts = alerts.concat(await resolvedAlerts());
      else {
        range.hidden = true;
        note.textContent = "";
      }
      if (!alive || mine !== seq) return;
      if (state.severity !== "all") alerts = alerts.filter((a) => a.severity === state.severity);
      alerts.sort((a, b) => (b.status === "firing") - (a.status === "firing") || b.ts - a.ts);
      const now = serverNow();
      replace(
        list,
        alerts.length
          ? alerts.map((a) => alertItem(a, now))
          : h("li", { class: "empty-line muted" }, state.status === "firing" ? "Nothing is firing. All quiet." : "No alerts here."),
      );
      list.dataset.count = String(alerts.length);
    } catch (err) {
      if (alive) replace(list, h("li", { class: "form-error" }, explain(err)));
    }
  }

  const off = onFleet((change) => {
    if (change.kind === "snapshot" || change.alertsChanged || (change.removed && change.removed.length)) {
      clearTimeout(timer);
      timer = setTimeout(load, 250);
    }
  });
  load();
  return {
    el,
    title: "Alerts",
    destroy() {
      alive = false;
      off();
      clearTimeout(timer);
    },
  };
}
