// The fleet, live: one EventSource to /api/v1/fleet/stream for the whole page (every view
// reads it), a snapshot first, then at most one update a second with only what changed.

import { api } from "./api.js";

const listeners = new Set();

export const fleet = {
  nodes: new Map(),
  counts: { up: 0, degraded: 0, down: 0, alerts: 0 },
  ready: false,
  connected: false,
  offset: 0, // server time minus browser time (s): "last seen" uses the server's clock
  updates: 0,
};

let source = null;
let retryTimer = null;

export function serverNow() {
  return Date.now() / 1000 + fleet.offset;
}

export function onFleet(fn) {
  listeners.add(fn);
  return () => listeners.delete(fn);
}

function emit(change) {
  for (const fn of listeners) {
    try {
      fn(change);
    } catch (err) {
      console.error(err);
    }
  }
}

function clock(ts) {
  if (typeof ts === "number") fleet.offset = ts - Date.now() / 1000;
}

function onSnapshot(event) {
  const data = JSON.parse(event.data);
  clock(data.ts);
  fleet.nodes = new Map(data.nodes.map((n) => [n.id, n]));
  fleet.counts = data.counts;
  fleet.ready = true;
  emit({ kind: "snapshot", changed: null, removed: [] });
}

function onUpdate(event) {
  const data = JSON.parse(event.data);
  clock(data.ts);
  const changed = new Set();
  let alertsChanged = false;
  for (const delta of data.changed) {
    const node = fleet.nodes.get(delta.id);
    if (node) Object.assign(node, delta);
    else fleet.nodes.set(delta.id, delta);
    if ("alerts" in delta || "alert_ts" in delta) alertsChanged = true;
    changed.add(delta.id);
  }
  for (const id of data.removed) fleet.nodes.delete(id);
  fleet.counts = data.counts;
  fleet.updates += 1;
  emit({ kind: "update", changed, removed: data.removed, alertsChanged });
}

function setConnected(value) {
  if (fleet.connected !== value) {
    fleet.connected = value;
    emit({ kind: "status", changed: null, removed: [] });
  }
}

export function startFleet() {
  stopFleet();
  source = new EventSource("/api/v1/fleet/stream");
  source.addEventListener("open", () => setConnected(true));
  source.addEventListener("snapshot", (e) => {
    setConnected(true);
    onSnapshot(e);
  });
  source.addEventListener("update", onUpdate);
  source.addEventListener("end", () => {
    // The server ended it (session ended, slow consumer, restart): start again shortly.
    setConnected(false);
    restartSoon(1000);
  });
  source.addEventListener("error", () => {
    setConnected(false);
    if (source && source.readyState === EventSource.CLOSED) restartSoon(5000);
    // Otherwise the browser reconnects by itself (the server's `retry:`).
  });
}

function restartSoon(ms) {
  if (source) source.close();
  source = null;
  clearTimeout(retryTimer);
  retryTimer = setTimeout(async () => {
    try {
      await api("/api/v1/session"); // 401 sends the app to the sign-in page
      startFleet();
    } catch {
      restartSoon(Math.min(ms * 2, 30000));
    }
  }, ms);
}

export function stopFleet() {
  clearTimeout(retryTimer);
  if (source) source.close();
  source = null;
  fleet.ready = false;
  fleet.connected = false;
  fleet.nodes = new Map();
}

/** Add or change a node locally (the dashboard just created or renamed it). */
export function upsertLocal(node) {
  const current = fleet.nodes.get(node.id);
  if (current) Object.assign(current, node);
  else
    fleet.nodes.set(node.id, {
      status: "down",
      connected: false,
      last_seen: null,
      cpu: null,
      memory: null,
      conntrack: null,
      rx: null,
      tx: null,
      alerts: 0,
      severity: null,
      alert_ts: null,
      enrolled: false,
      ...node,
    });
  emit({ kind: "update", changed: new Set([node.id]), removed: [] });
}

export function removeLocal(id) {
  fleet.nodes.delete(id);
  emit({ kind: "update", changed: new Set(), removed: [id] });
}
