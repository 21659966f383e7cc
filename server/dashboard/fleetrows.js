// The fleet table's pieces: columns, sorting, the saved view choice, and one row (built by
// cloning a template, patched cell by cell, recycled as the list scrolls).

import { h, setText } from "./dom.js";
import { ago, count, pct, rate } from "./format.js";

const STATUS_TEXT = { up: "Up", degraded: "Degraded", down: "Down" };
const STATUS_RANK = { down: 0, degraded: 1, up: 2 };
export const COLUMNS = [
  { key: "status", label: "Status", cls: "c-status" },
  { key: "name", label: "Node", cls: "c-name" },
  { key: "last_seen", label: "Last seen", cls: "c-seen", desc: true },
  { key: "cpu", label: "CPU", cls: "c-cpu", desc: true },
  { key: "memory", label: "Memory", cls: "c-mem", desc: true },
  { key: "conntrack", label: "Conntrack", cls: "c-ct", desc: true },
  { key: "throughput", label: "Throughput", cls: "c-net", desc: true },
  { key: "alerts", label: "Alerts", cls: "c-alerts", desc: true },
];
export const PREFS = "oc-fleet-view";

export function loadPrefs() {
  try {
    return { sort: "status", dir: 1, q: "", status: "all", ...JSON.parse(sessionStorage.getItem(PREFS) || "{}") };
  } catch {
    return { sort: "status", dir: 1, q: "", status: "all" };
  }
}

export function sortValue(node, key) {
  switch (key) {
    case "status":
      return STATUS_RANK[node.status] ?? 0;
    case "name":
      return node.name || "";
    case "throughput":
      return node.rx === null && node.tx === null ? null : (node.rx || 0) + (node.tx || 0);
    default:
      return node[key] ?? null;
  }
}

export function compare(a, b, key, dir) {
  const x = sortValue(a, key);
  const y = sortValue(b, key);
  if (x === null && y !== null) return 1; // nulls last, whatever the direction
  if (y === null && x !== null) return -1;
  let c = 0;
  if (typeof x === "string") c = x.localeCompare(y);
  else if (x !== y) c = x < y ? -1 : 1;
  if (c === 0) {
    c = (a.name || "").localeCompare(b.name || "");
    return c === 0 ? (a.id < b.id ? -1 : 1) : c;
  }
  return c * dir;
}

function gaugeLevel(v) {
  if (v === null || v === undefined) return "none";
  if (v >= 90) return "crit";
  if (v >= 75) return "warn";
  return "ok";
}

function gauge() {
  return h(
    "div",
    { class: "gauge", dataset: { level: "none" } },
    h("span", { class: "gauge-bar", "aria-hidden": "true" }, h("span", { class: "gauge-fill" })),
    h("span", { class: "gauge-val" }, "—"),
  );
}

/** The template every row is cloned from (cloneNode is much cheaper than building). */
export function rowTemplate() {
  return h(
    "div",
    { class: "grid-row", role: "row" },
    h(
      "div",
      { class: "cell c-status", role: "cell" },
      h("span", { class: "status" }, h("span", { class: "dot", "aria-hidden": "true" }), h("span", { class: "status-text" })),
    ),
    h("div", { class: "cell c-name", role: "cell" }, h("a", { class: "node-link", href: "#/fleet" }), h("span", { class: "sub" })),
    h("div", { class: "cell c-seen", role: "cell" }),
    h("div", { class: "cell c-cpu", role: "cell", dataset: { label: "CPU" } }, gauge()),
    h("div", { class: "cell c-mem", role: "cell", dataset: { label: "Memory" } }, gauge()),
    h("div", { class: "cell c-ct", role: "cell", dataset: { label: "Conntrack" } }, gauge()),
    h(
      "div",
      { class: "cell c-net", role: "cell", dataset: { label: "Throughput" } },
      h("span", { class: "rx", title: "received (busiest interface)" }),
      h("span", { class: "tx", title: "sent (busiest interface)" }),
    ),
    h("div", { class: "cell c-alerts", role: "cell" }, h("a", { class: "count-badge", href: "#/alerts" })),
  );
}

export class Row {
  constructor(template) {
    const el = template.cloneNode(true);
    const cells = el.children;
    this.el = el;
    this.status = cells[0].querySelector(".status-text");
    this.link = cells[1].firstElementChild;
    this.sub = cells[1].lastElementChild;
    this.seen = cells[2];
    this.gauges = [3, 4, 5].map((i) => {
      const g = cells[i].firstElementChild;
      return { el: g, fill: g.firstElementChild.firstElementChild, val: g.lastElementChild, last: undefined };
    });
    this.rx = cells[6].firstElementChild;
    this.tx = cells[6].lastElementChild;
    this.badge = cells[7].firstElementChild;
    this.id = null;
    this.last = {};
  }

  /** Show another node in this row (rows are recycled as the list scrolls). */
  bind(node, now) {
    this.id = node.id;
    this.last = {};
    for (const g of this.gauges) g.last = undefined;
    this.el.dataset.id = node.id;
    this.link.setAttribute("href", `#/nodes/${encodeURIComponent(node.id)}`);
    this.badge.setAttribute("href", `#/alerts?node=${encodeURIComponent(node.id)}`);
    this.update(node, now);
  }

  setGauge(i, value) {
    const g = this.gauges[i];
    if (g.last === value) return;
    g.last = value;
    g.el.dataset.level = gaugeLevel(value);
    g.fill.style.transform = `scaleX(${value === null ? 0 : Math.min(100, Math.max(0, value)) / 100})`;
    g.val.textContent = pct(value);
  }

  update(node, now) {
    const last = this.last;
    if (last.status !== node.status || last.enrolled !== node.enrolled) {
      const waiting = !node.enrolled && node.status === "down";
      this.el.dataset.status = node.status;
      this.el.classList.toggle("is-new", waiting);
      setText(this.status, waiting ? "Not connected" : STATUS_TEXT[node.status]);
      setText(this.sub, node.enrolled ? "" : "waiting for its agent");
      last.status = node.status;
      last.enrolled = node.enrolled;
    }
    if (last.name !== node.name) {
      this.link.textContent = node.name;
      last.name = node.name;
    }
    this.setGauge(0, node.cpu ?? null);
    this.setGauge(1, node.memory ?? null);
    this.setGauge(2, node.conntrack ?? null);
    if (last.rx !== node.rx || last.tx !== node.tx) {
      setText(this.rx, node.rx === null || node.rx === undefined ? "—" : `↓ ${rate(node.rx)}`);
      setText(this.tx, node.tx === null || node.tx === undefined ? "" : `↑ ${rate(node.tx)}`);
      last.rx = node.rx;
      last.tx = node.tx;
    }
    if (last.alerts !== node.alerts || last.severity !== node.severity) {
      setText(this.badge, node.alerts ? count(node.alerts) : "—");
      this.badge.dataset.severity = node.alerts ? node.severity || "info" : "none";
      this.badge.setAttribute(
        "aria-label",
        node.alerts ? `${node.alerts} firing alert${node.alerts === 1 ? "" : "s"}, see alerts` : "no firing alerts",
      );
      last.alerts = node.alerts;
      last.severity = node.severity;
    }
    this.touch(node, now);
  }

  touch(node, now) {
    setText(this.seen, node.last_seen ? ago(node.last_seen, now) : "never");
  }
}
