// The fleet view: every node, live. One animation frame per update; only the rows on screen
// exist in the DOM and are patched (only the cells whose value changed). Sortable (column
// headers, or the select on narrow screens) and filterable (name, status tiles); the choice
// is kept for the session.

import { h, setText } from "./dom.js";
import { count } from "./format.js";
import { COLUMNS, compare, loadPrefs, PREFS, Row, rowTemplate, sortValue } from "./fleetrows.js";
import { fleet, onFleet, serverNow } from "./live.js";
import { addNodeDialog } from "./nodes.js";

const OVERSCAN = 8;

/**
 * The fleet view. Only the rows in (and near) the viewport exist in the DOM — a fixed row
 * height (the --row-h CSS variable, per layout) places them between two spacers — so an
 * update of 1,000 nodes costs a merge, a sort when the order may have changed, and a patch
 * of the ~30 rows on screen. Rows are keyed by node and recycled as the list scrolls; the
 * table keeps aria-rowcount / aria-rowindex of the whole list.
 */
export function fleetView(ctx) {
  const prefs = loadPrefs();
  const template = rowTemplate();
  const rendered = new Map(); // node id -> Row on screen
  const free = []; // detached rows for reuse
  // node id -> what its place in the view depends on (sort value, status, name), as of the
  // last time the view was built: a change there rebuilds the view.
  const viewKeys = new Map();
  const viewKey = (node) => `${sortValue(node, prefs.sort)}\u0000${node.status}\u0000${node.name}`;
  let view = []; // node ids, filtered and sorted
  let dirty = new Set();
  let resort = true;
  let frame = 0;
  let firstRender = false;
  let rowHeight = 0;

  const title = h("h1", { id: "fleet-title" }, "Fleet");
  const livePill = h("span", { class: "live-pill", role: "status" });
  const addButton = h("button", { type: "button", class: "btn btn-primary" }, "Add node");
  addButton.addEventListener("click", () => addNodeDialog(ctx));

  const tileValues = {};
  const tiles = h("div", { class: "tiles", role: "group", "aria-label": "Filter by status" });
  for (const [key, label] of [["all", "Nodes"], ["up", "Up"], ["degraded", "Degraded"], ["down", "Down"]]) {
    const value = h("span", { class: "tile-value" }, "0");
    tileValues[key] = value;
    const tile = h(
      "button",
      { type: "button", class: "tile", dataset: { status: key }, "aria-pressed": String(prefs.status === key) },
      h("span", { class: "tile-label" }, label),
      value,
    );
    tile.addEventListener("click", () => {
      prefs.status = prefs.status === key && key !== "all" ? "all" : key;
      changed();
    });
    tiles.append(tile);
  }
  const alertValue = h("span", { class: "tile-value" }, "0");
  tiles.append(
    h("a", { class: "tile tile-alerts", href: "#/alerts" }, h("span", { class: "tile-label" }, "Firing alerts"), alertValue),
  );

  const search = h("input", {
    type: "search",
    id: "fleet-filter",
    placeholder: "Filter by node name…",
    value: prefs.q,
    autocomplete: "off",
  });
  search.addEventListener("input", () => {
    prefs.q = search.value;
    changed();
  });
  const sortSelect = h(
    "select",
    { id: "fleet-sort", class: "narrow-only" },
    COLUMNS.map((c) => h("option", { value: c.key, selected: c.key === prefs.sort }, `Sort: ${c.label}`)),
  );
  sortSelect.addEventListener("change", () => setSort(sortSelect.value, true));
  const shown = h("span", { class: "muted shown", "aria-live": "polite" });
  const toolbar = h(
    "div",
    { class: "toolbar" },
    h("label", { for: "fleet-filter", class: "sr-only" }, "Filter nodes by name"),
    search,
    h("label", { for: "fleet-sort", class: "sr-only" }, "Sort nodes by"),
    sortSelect,
    shown,
  );

  const headers = COLUMNS.map((c) => {
    const btn = h("button", { type: "button", class: "sort" }, c.label, h("span", { class: "sort-mark", "aria-hidden": "true" }));
    btn.addEventListener("click", () => setSort(c.key, false));
    return h("div", { class: ["cell", c.cls], role: "columnheader", dataset: { key: c.key } }, btn);
  });
  const padTop = h("div", { class: "grid-pad", "aria-hidden": "true" });
  const padBottom = h("div", { class: "grid-pad", "aria-hidden": "true" });
  const body = h("div", { class: "grid-body", role: "rowgroup" }, padTop, padBottom);
  const headRow = h("div", { class: "grid-row", role: "row", "aria-rowindex": "1" }, headers);
  const grid = h(
    "div",
    { class: "grid fleet-grid", role: "table", "aria-label": "Nodes", "aria-describedby": "fleet-desc" },
    h("div", { class: "grid-head", role: "rowgroup" }, headRow),
    body,
  );
  const desc = h(
    "p",
    { id: "fleet-desc", class: "sr-only" },
    "Updates live. Down: not connected or node_down firing. Degraded: a warning or critical alert firing.",
  );
  const empty = h("div", { class: "empty", hidden: true });
  const loading = h("p", { class: "muted loading" }, "Connecting to the live fleet…");

  const el = h(
    "section",
    { class: "view fleet", "aria-labelledby": "fleet-title" },
    h("div", { class: "view-head" }, title, livePill, h("div", { class: "spacer" }), addButton),
    tiles,
    toolbar,
    desc,
    loading,
    grid,
    empty,
  );

  function savePrefs() {
    sessionStorage.setItem(PREFS, JSON.stringify(prefs));
  }

  function changed() {
    savePrefs();
    renderHeaders();
    resort = true;
    schedule();
  }

  function setSort(key, fromSelect) {
    if (prefs.sort === key && !fromSelect) prefs.dir = -prefs.dir;
    else {
      prefs.sort = key;
      prefs.dir = COLUMNS.find((c) => c.key === key)?.desc ? -1 : 1;
    }
    changed();
  }

  function schedule() {
    if (!frame) frame = requestAnimationFrame(flush);
  }

  function renderHeaders() {
    for (const header of headers) {
      const key = header.dataset.key;
      header.setAttribute(
        "aria-sort",
        key === prefs.sort ? (prefs.dir === 1 ? "ascending" : "descending") : "none",
      );
    }
    sortSelect.value = prefs.sort;
    for (const tile of tiles.querySelectorAll("button.tile")) {
      tile.setAttribute("aria-pressed", String(tile.dataset.status === prefs.status));
    }
  }

  function buildView(nodes) {
    const q = prefs.q.trim().toLowerCase();
    const wanted = [];
    viewKeys.clear();
    for (const node of nodes.values()) {
      viewKeys.set(node.id, viewKey(node));
      if (prefs.status !== "all" && node.status !== prefs.status) continue;
      if (q && !(node.name || "").toLowerCase().includes(q) && !node.id.startsWith(q)) continue;
      wanted.push(node);
    }
    wanted.sort((a, b) => compare(a, b, prefs.sort, prefs.dir));
    view = wanted.map((n) => n.id);
  }

  function move(node, before) {
    if (body.moveBefore) {
      try {
        body.moveBefore(node, before);
        return;
      } catch {
        /* not movable atomically: fall back */
      }
    }
    body.insertBefore(node, before);
  }

  function measureRow() {
    const value = parseFloat(getComputedStyle(body).getPropertyValue("--row-h"));
    rowHeight = Number.isFinite(value) && value > 0 ? value : 48;
  }

  /** Put the rows of the visible window in place (reads layout first, then writes). */
  function renderWindow(now, changedIds) {
    if (!rowHeight) measureRow();
    const top = body.getBoundingClientRect().top; // relative to the viewport
    const n = view.length;
    const first = Math.max(0, Math.min(n, Math.floor(-top / rowHeight) - OVERSCAN));
    const last = Math.max(first, Math.min(n, Math.ceil((window.innerHeight - top) / rowHeight) + OVERSCAN));
    const ids = view.slice(first, last);
    const keep = new Set(ids);
    for (const [id, row] of rendered) {
      if (!keep.has(id)) {
        row.el.remove();
        rendered.delete(id);
        free.push(row);
      }
    }
    const nodes = fleet.nodes;
    let cursor = padTop.nextSibling;
    ids.forEach((id, i) => {
      const node = nodes.get(id);
      let row = rendered.get(id);
      if (!row) {
        row = free.pop() || new Row(template);
        row.bind(node, now);
        rendered.set(id, row);
      } else if (changedIds === null || changedIds.has(id)) {
        row.update(node, now);
      }
      row.el.setAttribute("aria-rowindex", String(first + i + 2));
      if (row.el === cursor) cursor = cursor.nextSibling;
      else move(row.el, cursor);
    });
    padTop.style.height = `${first * rowHeight}px`;
    padBottom.style.height = `${(n - last) * rowHeight}px`;
    return rendered.size;
  }

  function flush() {
    frame = 0;
    const start = performance.now();
    const now = serverNow();
    const nodes = fleet.nodes;
    let changedIds = resort ? null : dirty;
    if (!resort) {
      for (const id of dirty) {
        const node = nodes.get(id);
        if (!node || viewKeys.get(id) !== viewKey(node)) {
          resort = true;
          break;
        }
      }
    }
    if (resort) {
      buildView(nodes);
      changedIds = null;
    }
    const patched = renderWindow(now, changedIds);
    const tally = { all: 0, up: 0, degraded: 0, down: 0, alerts: 0 };
    for (const node of nodes.values()) {
      tally.all += 1;
      tally[node.status] += 1;
      tally.alerts += node.alerts || 0;
    }
    for (const key of ["all", "up", "degraded", "down"]) setText(tileValues[key], count(tally[key]));
    setText(alertValue, count(tally.alerts));
    grid.setAttribute("aria-rowcount", String(view.length + 1));
    setText(shown, tally.all ? `Showing ${count(view.length)} of ${count(tally.all)}` : "");
    renderEmpty(tally.all, view.length);
    loading.hidden = fleet.ready;
    const updated = changedIds === null ? nodes.size : changedIds.size;
    dirty = new Set();
    resort = false;
    performance.measure("oc:fleet-apply", { start, detail: { nodes: updated, rows: patched } });
    if (!firstRender && fleet.ready) {
      firstRender = true;
      requestAnimationFrame(() =>
        performance.mark("oc:fleet-first-render", { detail: { nodes: view.length } }),
      );
    }
  }

  function renderEmpty(total, visible) {
    const kind = !fleet.ready ? "" : total === 0 ? "none" : visible === 0 ? "filtered" : "";
    empty.hidden = kind === "";
    grid.hidden = !fleet.ready || total === 0;
    if (empty.dataset.kind === kind) return;
    empty.dataset.kind = kind;
    empty.replaceChildren();
    if (kind === "none") {
      const add = h("button", { type: "button", class: "btn btn-primary" }, "Add your first node");
      add.addEventListener("click", () => addNodeDialog(ctx));
      empty.append(
        h("h2", null, "No nodes yet"),
        h(
          "p",
          { class: "muted" },
          "Add a node to get its token, then start the agent on your VPN server with it. The node turns up here the moment its agent connects.",
        ),
        add,
      );
    } else if (kind === "filtered") {
      const reset = h("button", { type: "button", class: "btn" }, "Clear the filter");
      reset.addEventListener("click", () => {
        prefs.q = "";
        prefs.status = "all";
        search.value = "";
        changed();
      });
      empty.append(h("h2", null, "No node matches"), reset);
    }
  }

  function renderLive() {
    livePill.dataset.state = fleet.connected ? "live" : "offline";
    livePill.textContent = fleet.connected ? "Live" : "Reconnecting…";
  }

  const off = onFleet((change) => {
    if (change.kind === "status") {
      renderLive();
      return;
    }
    if (change.kind === "snapshot" || (change.removed && change.removed.length)) resort = true;
    else for (const id of change.changed) dirty.add(id);
    schedule();
  });
  const onScroll = () => schedule();
  const onResize = () => {
    rowHeight = 0;
    schedule();
  };
  window.addEventListener("scroll", onScroll, { passive: true });
  window.addEventListener("resize", onResize);
  const ticker = setInterval(() => {
    const now = serverNow();
    for (const [id, row] of rendered) {
      const node = fleet.nodes.get(id);
      if (node) row.touch(node, now);
    }
  }, 1000);
  renderLive();
  renderHeaders();
  schedule();
  return {
    el,
    title: "Fleet",
    destroy() {
      off();
      clearInterval(ticker);
      window.removeEventListener("scroll", onScroll);
      window.removeEventListener("resize", onResize);
      if (frame) cancelAnimationFrame(frame);
    },
  };
}
