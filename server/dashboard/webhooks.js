// Settings → webhook endpoints: add, edit, enable/disable, rotate the signing secret, send a
// test (its outcome shown), delivery health and the last attempts.

import { del, explain, get, patch, post } from "./api.js";
import { confirmDialog, copyBlock, dialog, field, h, replace, toast } from "./dom.js";
import { ago, when } from "./format.js";
import { serverNow } from "./live.js";

const FORMATS = {
  generic: "Generic JSON (signed)",
  slack: "Slack",
  discord: "Discord",
  teams: "Microsoft Teams",
  pagerduty: "PagerDuty",
  alertmanager: "Alertmanager-compatible",
};
const SEVERITIES = ["info", "warning", "critical"];
const GRACE = [
  [0, "No overlap: the old secret stops now"],
  [3600, "1 hour"],
  [86400, "24 hours"],
  [7 * 86400, "7 days"],
];

function endpointForm(nodes, current) {
  const filters = (current && current.filters) || { severities: [], nodes: [], rules: [] };
  const url = h("input", { type: "url", required: true, maxlength: 2048, value: current ? current.url : "", placeholder: "https://hooks.example.com/oneconnect" });
  const name = h("input", { type: "text", maxlength: 64, value: current ? current.name : "" });
  const format = h(
    "select",
    null,
    Object.entries(FORMATS).map(([value, text]) => h("option", { value, selected: current ? current.format === value : value === "generic" }, text)),
  );
  const routingKey = h("input", {
    type: "text",
    maxlength: 64,
    autocomplete: "off",
    placeholder: current && current.routing_key_set ? "set — leave empty to keep it" : "",
  });
  const routingField = field("PagerDuty routing key", routingKey, "The integration key of your PagerDuty service.");
  const enabled = h("input", { type: "checkbox", id: "wh-enabled", checked: current ? current.enabled : true });
  const sev = SEVERITIES.map((s) => h("input", { type: "checkbox", value: s, id: `wh-sev-${s}`, checked: filters.severities.includes(s) }));
  const nodeBoxes = nodes.map((n) => h("input", { type: "checkbox", value: n.id, id: `wh-node-${n.id}`, checked: filters.nodes.includes(n.id) }));
  const rules = h("input", { type: "text", value: filters.rules.join(", "), placeholder: "e.g. node_down, disk_nearly_full" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const syncRouting = () => (routingField.hidden = format.value !== "pagerduty");
  format.addEventListener("change", syncRouting);
  syncRouting();
  const body = [
    field("URL", url, "Where alerts are POSTed. Private and loopback addresses are refused unless the server allows them."),
    field("Name (optional)", name),
    field("Format", format),
    routingField,
    h(
      "fieldset",
      { class: "inline-checks" },
      h("legend", null, "Severities (none checked: all)"),
      SEVERITIES.map((s, i) => h("label", { class: "check", for: `wh-sev-${s}` }, sev[i], ` ${s}`)),
    ),
    nodes.length
      ? h(
          "fieldset",
          { class: "inline-checks" },
          h("legend", null, "Nodes (none checked: all)"),
          nodes.map((n, i) => h("label", { class: "check", for: `wh-node-${n.id}` }, nodeBoxes[i], ` ${n.name}`)),
        )
      : null,
    field("Rules (optional, comma-separated; empty: all)", rules),
    h("label", { class: "check", for: "wh-enabled" }, enabled, " Enabled"),
    error,
  ];
  function values() {
    const out = {
      url: url.value.trim(),
      format: format.value,
      enabled: enabled.checked,
      filters: {
        severities: sev.filter((b) => b.checked).map((b) => b.value),
        nodes: nodeBoxes.filter((b) => b.checked).map((b) => b.value),
        rules: rules.value.split(",").map((r) => r.trim()).filter(Boolean),
      },
    };
    if (name.value.trim()) out.name = name.value.trim();
    if (routingKey.value.trim()) out.routing_key = routingKey.value.trim();
    return out;
  }
  return { body, values, error };
}

async function showSecret(title, secret) {
  await dialog({
    title,
    body: [
      h("p", { class: "notice notice-warn" }, "The signing secret is shown only now. Your receiver verifies each delivery's webhook-signature header with it (Standard Webhooks)."),
      copyBlock(secret),
    ],
    actions: [{ label: "Done", kind: "primary", value: "done" }],
  });
}

function healthBadge(endpoint) {
  const status = endpoint.enabled ? (endpoint.health && endpoint.health.status) || "healthy" : "disabled";
  const text = { healthy: "Healthy", unhealthy: "Failing", disabled: "Disabled" }[status] || status;
  return h("span", { class: "badge", dataset: { health: status } }, text);
}

function outcomeText(result) {
  const status = result.status ? `HTTP ${result.status}` : result.error || "no response";
  const verdict = result.delivered ? "Delivered" : result.outcome === "retry" ? "Failed (would be retried)" : "Failed";
  return `${verdict}: ${status} in ${result.latency_ms} ms${result.delivered ? "" : ` — ${result.reason || result.detail || ""}`}`;
}

function attemptsTable(endpoint) {
  const attempts = (endpoint.health && endpoint.health.last_attempts) || [];
  if (!attempts.length) return h("p", { class: "muted small" }, "No delivery attempts yet (kept in memory, since the server started).");
  return h(
    "details",
    { class: "attempts" },
    h("summary", null, `Last ${attempts.length} attempt${attempts.length === 1 ? "" : "s"}`),
    h(
      "div",
      { class: "table-wrap" },
      h(
        "table",
        null,
        h("thead", null, h("tr", null, ["When", "Try", "Status", "Latency", "Outcome", "Detail"].map((t) => h("th", { scope: "col" }, t)))),
        h(
          "tbody",
          null,
          attempts
            .slice()
            .reverse()
            .map((a) =>
              h(
                "tr",
                { dataset: { outcome: a.outcome } },
                h("td", null, when(a.at)),
                h("td", null, String(a.attempt)),
                h("td", null, a.status === null || a.status === undefined ? "—" : String(a.status)),
                h("td", null, `${a.latency_ms} ms`),
                h("td", null, a.outcome),
                h("td", { class: "detail" }, a.detail || ""),
              ),
            ),
        ),
      ),
    ),
  );
}

export function webhooksSection(ctx, nodes) {
  const list = h("div", { class: "list webhooks" }, h("p", { class: "muted" }, "Loading…"));
  const add = h("button", { type: "button", class: "btn btn-primary" }, "Add endpoint");
  const el = h(
    "section",
    { class: "card settings-section", id: "s-webhooks", "aria-labelledby": "s-webhooks-title" },
    h("h2", { id: "s-webhooks-title" }, "Webhooks"),
    h("p", { class: "muted" }, "Every alert, firing and resolved, goes to each enabled endpoint whose filters match. Deliveries are signed and retried with backoff."),
    add,
    list,
  );

  async function load() {
    try {
      const body = await get("/api/v1/webhooks");
      render(body.webhooks);
    } catch (err) {
      replace(list, h("p", { class: "form-error" }, explain(err)));
    }
  }

  function card(endpoint, outcome = h("p", { class: "outcome", role: "status", "aria-live": "polite" })) {
    const test = h("button", { type: "button", class: "btn btn-small" }, "Send test");
    test.addEventListener("click", async () => {
      test.disabled = true;
      outcome.dataset.result = "pending";
      outcome.textContent = "Sending a signed test event…";
      try {
        const result = await post(`/api/v1/webhooks/${endpoint.id}/test`);
        outcome.dataset.result = result.delivered ? "ok" : "fail";
        outcome.textContent = outcomeText(result);
        const fresh = await get(`/api/v1/webhooks/${endpoint.id}`);
        item.replaceWith(card(fresh.webhook, outcome));
      } catch (err) {
        outcome.dataset.result = "fail";
        outcome.textContent = explain(err);
      } finally {
        test.disabled = false;
      }
    });
    const edit = h("button", { type: "button", class: "btn btn-small" }, "Edit");
    edit.addEventListener("click", async () => {
      const form = endpointForm(nodes, endpoint);
      const changed = await dialog({
        title: `Edit ${endpoint.name}`,
        wide: true,
        body: form.body,
        actions: [
          { label: "Cancel", value: null },
          { label: "Save", kind: "primary", submit: true },
        ],
        onSubmit: async () => {
          try {
            return await patch(`/api/v1/webhooks/${endpoint.id}`, form.values());
          } catch (err) {
            form.error.textContent = explain(err);
            form.error.hidden = false;
            return undefined;
          }
        },
      });
      if (changed) {
        toast("Endpoint saved", "ok");
        load();
      }
    });
    const toggle = h("button", { type: "button", class: "btn btn-small" }, endpoint.enabled ? "Disable" : "Enable");
    toggle.addEventListener("click", async () => {
      try {
        await patch(`/api/v1/webhooks/${endpoint.id}`, { enabled: !endpoint.enabled });
        load();
      } catch (err) {
        toast(explain(err), "error");
      }
    });
    const rotate = h("button", { type: "button", class: "btn btn-small" }, "Rotate secret");
    rotate.addEventListener("click", async () => {
      const grace = h("select", null, GRACE.map(([s, text]) => h("option", { value: String(s), selected: s === 86400 }, text)));
      const rotated = await dialog({
        title: `Rotate the signing secret of ${endpoint.name}?`,
        body: [
          h("p", null, "A new secret signs every delivery from now on. During the overlap, deliveries carry both signatures, so you can switch your receiver over without missing any."),
          field("Overlap with the old secret", grace),
        ],
        actions: [
          { label: "Cancel", value: null },
          { label: "Rotate", kind: "primary", submit: true },
        ],
        onSubmit: async () => {
          try {
            return await post(`/api/v1/webhooks/${endpoint.id}/secret`, { grace_seconds: Number(grace.value) });
          } catch (err) {
            toast(explain(err), "error");
            return null;
          }
        },
      });
      if (rotated && rotated.secret) {
        await showSecret("New signing secret", rotated.secret);
        load();
      }
    });
    const remove = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Delete");
    remove.addEventListener("click", async () => {
      if (!(await confirmDialog(`Delete ${endpoint.name}?`, "Pending deliveries to it end.", { confirm: "Delete endpoint", danger: true }))) return;
      try {
        await del(`/api/v1/webhooks/${endpoint.id}`);
        load();
      } catch (err) {
        toast(explain(err), "error");
      }
    });
    const f = endpoint.filters || { severities: [], nodes: [], rules: [] };
    const names = new Map(nodes.map((n) => [n.id, n.name]));
    const scope = [
      f.severities.length ? f.severities.join(", ") : "all severities",
      f.nodes.length ? f.nodes.map((id) => names.get(id) || id.slice(0, 8)).join(", ") : "all nodes",
      f.rules.length ? f.rules.join(", ") : "all rules",
    ].join(" · ");
    const health = endpoint.health || {};
    const facts = [
      `secret ${endpoint.secret_prefix}…`,
      endpoint.previous_secret_expires_at ? `old secret also signs until ${when(endpoint.previous_secret_expires_at)}` : null,
      health.last_success_at ? `last delivered ${ago(health.last_success_at, serverNow())}` : null,
      health.failing_since ? `failing since ${when(health.failing_since)} (${health.consecutive_failures} in a row)` : null,
      health.pending ? `${health.pending} pending` : null,
      endpoint.disabled_reason ? `disabled: ${endpoint.disabled_reason}` : null,
    ].filter(Boolean);
    const item = h(
      "article",
      { class: "webhook", dataset: { id: endpoint.id } },
      h(
        "div",
        { class: "webhook-head" },
        h("h3", null, endpoint.name),
        healthBadge(endpoint),
        h("span", { class: "badge badge-quiet" }, FORMATS[endpoint.format] || endpoint.format),
      ),
      h("p", { class: "webhook-url" }, h("code", null, endpoint.url)),
      h("p", { class: "muted small" }, scope),
      h("p", { class: "muted small" }, facts.join(" · ")),
      h("div", { class: "list-actions" }, test, edit, toggle, rotate, remove),
      outcome,
      attemptsTable(endpoint),
    );
    return item;
  }

  function render(endpoints) {
    replace(list, endpoints.length ? endpoints.map((e) => card(e)) : h("p", { class: "muted" }, "No endpoints yet. Add one to get alerts in Slack, Discord, Teams, PagerDuty or your own service."));
  }

  add.addEventListener("click", async () => {
    const form = endpointForm(nodes, null);
    const created = await dialog({
      title: "Add a webhook endpoint",
      wide: true,
      body: form.body,
      actions: [
        { label: "Cancel", value: null },
        { label: "Add endpoint", kind: "primary", submit: true },
      ],
      onSubmit: async () => {
        try {
          return await post("/api/v1/webhooks", form.values());
        } catch (err) {
          form.error.textContent = explain(err);
          form.error.hidden = false;
          return undefined;
        }
      },
    });
    if (!created) return;
    await showSecret(`Signing secret of ${created.webhook.name}`, created.secret);
    load();
  });
  load();
  return el;
}
