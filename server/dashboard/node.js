// The node view: status, live charts of the last 15 minutes (from memory), history charts with
// saved monitoring (1 h, 24 h, 7 d, 30 d), current and recent alerts, rename / new token /
// delete. Live charts refresh at the node's interval (at most every 2 s) while the tab is
// visible; ten charts stay smooth (uPlot draws on canvas, setData only).

import { ApiError, del, explain, get, patch, post } from "./api.js";
import { alertItem } from "./alerts.js";
import { CHART_METRICS, CHARTS, Chart, seriesLabel } from "./charts.js";
import { confirmDialog, dialog, field, h, replace, setText, toast } from "./dom.js";
import { ago, when } from "./format.js";
import { fleet, onFleet, removeLocal, serverNow, upsertLocal } from "./live.js";
import { showToken } from "./nodes.js";

const RANGES = [
  ["1h", "1 h", 3600],
  ["24h", "24 h", 86400],
  ["7d", "7 d", 7 * 86400],
  ["30d", "30 d", 30 * 86400],
];
const STATUS_TEXT = { up: "Up", degraded: "Degraded", down: "Down" };

/** [{label, points: [[t, v], …]}] → xs (sorted union of times) and aligned value arrays. */
function align(series) {
  const times = new Set();
  for (const s of series) for (const p of s.points) times.add(p[0]);
  let xs = [...times].sort((a, b) => a - b);
  const index = new Map(xs.map((t, i) => [t, i]));
  let out = series.map((s) => {
    const values = new Array(xs.length).fill(null);
    for (const p of s.points) values[index.get(p[0])] = p[1];
    return { label: s.label, values };
  });
  // Start at the first point (a node that connected 2 minutes ago shows 2 minutes, not
  // 13 minutes of nothing before them).
  let first = xs.length;
  for (const s of out) {
    const i = s.values.findIndex((v) => v !== null && v !== undefined);
    if (i !== -1 && i < first) first = i;
  }
  if (first > 0 && first < xs.length) {
    xs = xs.slice(first);
    out = out.map((s) => ({ label: s.label, values: s.values.slice(first) }));
  }
  return { xs, series: out };
}

function chartSeries(def, raw) {
  // raw: [{metric, labels, points: [[t, v]]}] of this chart's metrics
  const out = [];
  for (const metric of Object.keys(def.metrics)) {
    for (const s of raw.filter((r) => r.metric === metric)) {
      const points = def.transform
        ? s.points.map(([t, v]) => [t, v === null || v === undefined ? null : def.transform(v)])
        : s.points;
      out.push({ label: seriesLabel(def, metric, s.labels), points });
    }
  }
  return align(out);
}

export function nodeView(ctx, nodeId) {
  const title = h("h1", { id: "node-title" }, "Node");
  const status = h("span", { class: "status status-lg" }, h("span", { class: "dot", "aria-hidden": "true" }), h("span", { class: "status-text" }, "…"));
  const facts = h("dl", { class: "facts facts-inline" });
  const rename = h("button", { type: "button", class: "btn btn-small" }, "Rename");
  const token = h("button", { type: "button", class: "btn btn-small" }, "New token");
  const remove = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Delete");
  const alertsList = h("ul", { class: "alerts-list compact" });
  const modeTabs = h("div", { class: "segmented", role: "group", "aria-label": "Charts" });
  const rangeTabs = h("div", { class: "segmented", role: "group", "aria-label": "History range", hidden: true });
  const note = h("div", { class: "chart-note", hidden: true });
  const grid = h("div", { class: "charts" });
  const head = h(
    "div",
    { class: "view-head node-head" },
    h("a", { href: "#/fleet", class: "back" }, "← Fleet"),
    title,
    status,
    h("div", { class: "spacer" }),
    h("div", { class: "list-actions" }, rename, token, remove),
  );
  const el = h(
    "section",
    { class: "view node-view", "aria-labelledby": "node-title", dataset: { node: nodeId } },
    head,
    facts,
    h("section", { class: "card", "aria-labelledby": "node-alerts-title" }, h("h2", { id: "node-alerts-title" }, "Alerts"), alertsList),
    h("div", { class: "charts-head" }, h("h2", null, "Charts"), modeTabs, rangeTabs),
    note,
    grid,
  );
  const charts = CHARTS.map((def) => ({ def, chart: new Chart(def) }));
  for (const { chart } of charts) grid.append(chart.el);

  const state = { mode: "live", range: "1h", node: null, live: null };
  let alive = true;
  let timer = 0;
  let alertsTimer = 0;
  let seq = 0;
  // Set once the user picks a mode: the start-up below, which may finish later, keeps it.
  let modeChosen = false;

  for (const [key, label] of [["live", "Live · 15 min"], ["history", "History"]]) {
    const btn = h("button", { type: "button", "aria-pressed": String(key === state.mode), dataset: { mode: key } }, label);
    btn.addEventListener("click", () => {
      modeChosen = true;
      setMode(key);
    });
    modeTabs.append(btn);
  }
  for (const [key, label] of RANGES) {
    const btn = h("button", { type: "button", "aria-pressed": String(key === state.range), dataset: { range: key } }, label);
    btn.addEventListener("click", () => {
      state.range = key;
      for (const b of rangeTabs.children) b.setAttribute("aria-pressed", String(b.dataset.range === key));
      loadHistory();
    });
    rangeTabs.append(btn);
  }

  function setMode(mode) {
    state.mode = mode;
    for (const b of modeTabs.children) b.setAttribute("aria-pressed", String(b.dataset.mode === mode));
    rangeTabs.hidden = mode !== "history";
    grid.dataset.mode = mode;
    clearTimeout(timer);
    if (mode === "live") loadLive();
    else {
      if (!state.live) loadStatus();
      loadHistory();
    }
  }

  function renderStatus() {
    const n = fleet.nodes.get(nodeId);
    const live = state.live;
    const st = n ? n.status : live ? (live.connected && !live.down ? "up" : "down") : "down";
    status.dataset.status = st;
    setText(status.lastElementChild, STATUS_TEXT[st]);
    const node = state.node;
    if (!node) return;
    const now = serverNow();
    const lastSeen = (n && n.last_seen) ?? (live && live.last_seen);
    const items = [
      ["Last seen", lastSeen ? ago(lastSeen, now) : "never"],
      ["Agent", live && live.agent_version ? `v${live.agent_version}` : "—"],
      ["Interval", live && live.interval ? `${live.interval} s` : "—"],
      ["Connected since", live && live.connected_since ? when(live.connected_since) : "—"],
      ["Token", `${node.token_prefix}…`],
      ["Added", when(node.created_at)],
    ];
    replace(facts, items.map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v))));
  }

  async function loadAlerts() {
    try {
      const body = await get(`/api/v1/alerts?node=${encodeURIComponent(nodeId)}&limit=50`);
      if (!alive) return;
      const now = serverNow();
      replace(
        alertsList,
        body.alerts.length
          ? body.alerts.map((a) => alertItem(a, now, { showNode: false }))
          : h("li", { class: "empty-line muted" }, "No current or recent alerts."),
      );
    } catch (err) {
      if (alive) replace(alertsList, h("li", { class: "form-error" }, explain(err)));
    }
  }

  async function loadLive() {
    const mine = ++seq;
    clearTimeout(timer);
    try {
      const body = await get(`/api/v1/nodes/${encodeURIComponent(nodeId)}/live?metric=${CHART_METRICS.join(",")}`);
      if (!alive || mine !== seq || state.mode !== "live") return;
      state.live = body.node;
      note.hidden = true;
      grid.dataset.source = "live";
      for (const { def, chart } of charts) {
        const data = chartSeries(def, body.series);
        chart.setData(data.xs, data.series);
      }
      renderStatus();
      if (!body.series.length) showNote("No live data yet: the node's agent has not sent metrics since the server started.");
    } catch (err) {
      if (alive && !(err instanceof ApiError && err.status === 401)) showNote(explain(err));
    }
    if (alive && state.mode === "live") {
      const every = Math.max(2, (state.live && state.live.interval) || 5) * 1000;
      timer = setTimeout(() => (document.hidden ? waitVisible() : loadLive()), every);
    }
  }

  async function loadStatus() {
    // The node's status line (agent, interval, connected since) outside the live loop.
    try {
      const body = await get(`/api/v1/nodes/${encodeURIComponent(nodeId)}/live?metric=cpu_usage_percent`);
      if (!alive) return;
      state.live = body.node;
      renderStatus();
    } catch {
      /* shown by the charts' own requests */
    }
  }

  function waitVisible() {
    const again = () => {
      document.removeEventListener("visibilitychange", again);
      if (alive && state.mode === "live") loadLive();
    };
    document.addEventListener("visibilitychange", again);
  }

  function showNote(text, link) {
    note.hidden = false;
    replace(note, h("p", null, text, link ? [" ", link] : null));
  }

  async function loadHistory() {
    const mine = ++seq;
    const span = RANGES.find((r) => r[0] === state.range)[2];
    const to = Math.ceil(serverNow());
    const from = to - span;
    note.hidden = true;
    grid.setAttribute("aria-busy", "true");
    grid.dataset.source = "history";
    for (const { chart } of charts) chart.setData([], []);
    let source = null;
    try {
      await Promise.all(
        charts.map(async ({ def, chart }) => {
          const raw = [];
          for (const metric of Object.keys(def.metrics)) {
            const body = await get(
              `/api/v1/nodes/${encodeURIComponent(nodeId)}/history?metric=${metric}&from=${from}&to=${to}`,
            );
            source = source || { kind: body.source, step: body.step };
            for (const s of body.series) {
              raw.push({ metric, labels: s.labels, points: s.points.map((p) => [p[0], p[1]]) });
            }
          }
          if (!alive || mine !== seq) return;
          const data = chartSeries(def, raw);
          chart.setData(data.xs, data.series, [from, to]);
        }),
      );
      if (alive && mine === seq) {
        const kinds = { raw: "as sent", minute: "per-minute rollups", hour: "per-hour rollups" };
        const detail = source ? ` — ${kinds[source.kind] || source.kind}, averaged per ${source.step} s` : "";
        showNote(`Saved history${detail}.`, refreshButton());
      }
    } catch (err) {
      if (!alive || mine !== seq) return;
      if (err instanceof ApiError && err.status === 409) {
        for (const { chart } of charts) chart.setData([], []);
        showNote(
          "History needs saved monitoring, which is off for this node: nothing about it is stored, so there is no history.",
          h("a", { href: "#/settings?s=saved" }, "Turn on saved monitoring"),
        );
      } else if (!(err instanceof ApiError && err.status === 401)) {
        showNote(explain(err));
      }
    } finally {
      grid.removeAttribute("aria-busy");
    }
  }

  function refreshButton() {
    const btn = h("button", { type: "button", class: "btn btn-small", id: "history-refresh" }, "Refresh");
    btn.addEventListener("click", () => loadHistory());
    return btn;
  }

  rename.addEventListener("click", async () => {
    const name = h("input", { type: "text", required: true, maxlength: 64, value: state.node ? state.node.name : "" });
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const changed = await dialog({
      title: "Rename node",
      body: [field("Name", name), error],
      actions: [
        { label: "Cancel", value: null },
        { label: "Rename", kind: "primary", submit: true },
      ],
      onSubmit: async () => {
        try {
          return await patch(`/api/v1/nodes/${encodeURIComponent(nodeId)}`, { name: name.value });
        } catch (err) {
          error.textContent = explain(err);
          error.hidden = false;
          return undefined;
        }
      },
    });
    if (changed) {
      state.node = changed.node;
      title.textContent = changed.node.name;
      document.title = `${changed.node.name} · OneConnect Alert`;
      upsertLocal({ id: nodeId, name: changed.node.name });
      renderStatus();
    }
  });
  token.addEventListener("click", async () => {
    const ok = await confirmDialog(
      "Issue a new token?",
      "The current token stops working at once and the agent is disconnected until it uses the new one.",
      { confirm: "Issue new token", danger: true },
    );
    if (!ok) return;
    try {
      const body = await post(`/api/v1/nodes/${encodeURIComponent(nodeId)}/token`);
      state.node = body.node;
      renderStatus();
      await showToken(`New token for ${body.node.name}`, body.token);
    } catch (err) {
      toast(explain(err), "error");
    }
  });
  remove.addEventListener("click", async () => {
    const name = state.node ? state.node.name : "this node";
    const ok = await confirmDialog(`Delete ${name}?`, "Its token stops working and it leaves the fleet.", {
      confirm: "Delete node",
      danger: true,
    });
    if (!ok) return;
    try {
      await del(`/api/v1/nodes/${encodeURIComponent(nodeId)}`);
      removeLocal(nodeId);
      toast(`${name} deleted`, "ok");
      ctx.navigate("#/fleet");
    } catch (err) {
      toast(explain(err), "error");
    }
  });

  const off = onFleet((change) => {
    if (change.kind === "status") return;
    if (change.kind === "snapshot" || (change.changed && change.changed.has(nodeId))) {
      renderStatus();
      if (change.alertsChanged || change.kind === "snapshot") {
        clearTimeout(alertsTimer);
        alertsTimer = setTimeout(loadAlerts, 250);
      }
    }
  });
  const ticker = setInterval(renderStatus, 1000);

  (async () => {
    try {
      const body = await get(`/api/v1/nodes/${encodeURIComponent(nodeId)}`);
      if (!alive) return;
      state.node = body.node;
      title.textContent = body.node.name;
      document.title = `${body.node.name} · OneConnect Alert`;
      renderStatus();
      loadAlerts();
      if (!modeChosen) {
        const history = ctx.query.get("view") === "history";
        if (history) loadStatus();
        setMode(history ? "history" : "live");
      }
    } catch (err) {
      if (!alive) return;
      replace(
        el,
        h("div", { class: "empty" }, h("h1", null, err instanceof ApiError && err.status === 404 ? "No such node" : "Cannot load the node"), h("p", { class: "muted" }, explain(err)), h("a", { href: "#/fleet", class: "btn" }, "Back to the fleet")),
      );
    }
  })();

  return {
    el,
    title: "Node",
    destroy() {
      alive = false;
      off();
      clearTimeout(timer);
      clearTimeout(alertsTimer);
      clearInterval(ticker);
      for (const { chart } of charts) chart.destroy();
    },
  };
}
