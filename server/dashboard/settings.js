// Settings: plan and limits, saved monitoring (the consent), nodes and their enrolment
// (nodes.js), webhooks (webhooks.js), API keys, and the account's data: export and deletion.

import { ApiError, del, explain, get, patch, post } from "./api.js";
import { clear, confirmDialog, copyBlock, dialog, field, h, replace, section, toast } from "./dom.js";
import { count, when } from "./format.js";
import { stopFleet } from "./live.js";
import { nodesSection } from "./nodes.js";
import { webhooksSection } from "./webhooks.js";

const PLAN_TEXT = { free: "Free", pro: "Pro", business: "Business" };

// -- sections -------------------------------------------------------------------------------


function planSection(ctx, nodes) {
  const account = ctx.account;
  const limits = account.limits || {};
  const select = h(
    "select",
    { id: "plan-select" },
    Object.entries(PLAN_TEXT).map(([value, text]) => h("option", { value, selected: value === account.plan }, text)),
  );
  const save = h("button", { type: "button", class: "btn" }, "Change plan");
  save.addEventListener("click", async () => {
    try {
      const body = await patch("/api/v1/account", { plan: select.value });
      ctx.setAccount(body.account);
      toast(`Plan changed to ${PLAN_TEXT[body.account.plan]}`, "ok");
      ctx.rerender();
    } catch (err) {
      toast(explain(err), "error");
    }
  });
  const rows = [
    ["Nodes", `${count(nodes.length)} of ${count(limits.max_nodes)}`],
    ["Webhook endpoints", `up to ${count(limits.max_webhooks)}`],
    ["Shortest agent interval", `${limits.min_interval} s`],
    [
      "Saved monitoring",
      limits.saved_monitoring_included ? `included, kept ${limits.retention_days} days` : "not included",
    ],
  ];
  return section(
    "plan",
    "Plan and limits",
    null,
    h(
      "dl",
      { class: "facts" },
      h("div", null, h("dt", null, "Account"), h("dd", null, account.name, account.company ? ` · ${account.company}` : "")),
      h("div", null, h("dt", null, "E-mail"), h("dd", null, account.email)),
      h("div", null, h("dt", null, "Plan"), h("dd", null, PLAN_TEXT[account.plan] || account.plan)),
      rows.map(([k, v]) => h("div", null, h("dt", null, k), h("dd", null, v))),
    ),
    h(
      "div",
      { class: "inline-form" },
      h("label", { for: "plan-select" }, "Plan"),
      select,
      save,
      h("span", { class: "hint" }, "No billing yet: plans change at once. A plan your account already exceeds is refused."),
    ),
  );
}

const WHAT_IS_SAVED = [
  "every metric value your agents send (node-level health only — never anything about your VPN's users), plus per-minute and per-hour minimum, average and maximum",
  "alert history: each firing and resolved event, with its value",
  "webhook delivery attempts: time, HTTP status and latency — never response bodies",
  "a queue of webhooks still to deliver, so none is lost when the server restarts",
];

function whatIsStored(retention, planName, what) {
  // While on, the server's own list (recorded with the consent) is shown; while off, ours.
  const items = Array.isArray(what) && what.length ? what.map(String) : WHAT_IS_SAVED;
  return h(
    "div",
    { class: "explain" },
    h(
      "p",
      null,
      h("strong", null, "Off (the default): nothing monitored is stored. "),
      "Live metrics stay in the server's memory for the last 15 minutes only; alerts are delivered and then forgotten. A server restart forgets everything.",
    ),
    h("p", null, h("strong", null, "On: "), "for the nodes you choose, the server stores"),
    h("ul", { class: "what" }, items.map((item) => h("li", null, item))),
    h(
      "p",
      null,
      retention > 0
        ? ["It is kept for ", h("strong", null, `${retention} days`), ` (your ${planName} plan), then deleted by a purge job.`]
        : "Your plan does not include saved monitoring: Pro keeps 30 days, Business 90 days.",
    ),
    h(
      "p",
      null,
      "Turning it on records your consent — when, and from which session or API key. Turning it off stops saving at once and deletes what was saved, or, if you choose, keeps it until its retention ends.",
    ),
  );
}

function savedSection(ctx, nodes) {
  const account = ctx.account;
  const limits = account.limits || {};
  const retention = limits.retention_days || 0;
  const on = Boolean(account.saved_monitoring);
  const saved = account.saved || {};
  const switchBtn = h(
    "button",
    {
      type: "button",
      class: "switch",
      role: "switch",
      id: "saved-switch",
      "aria-checked": String(on),
      "aria-describedby": "saved-state",
      disabled: retention <= 0,
    },
    h("span", { class: "switch-knob", "aria-hidden": "true" }),
  );
  const stateText = h("p", { id: "saved-state", class: ["saved-state", on ? "is-on" : "is-off"] });
  if (retention <= 0) {
    stateText.textContent = "Not available on your plan.";
  } else if (on) {
    const scope = saved.nodes ? `${saved.nodes.length} chosen node${saved.nodes.length === 1 ? "" : "s"}` : "every node, including ones added later";
    stateText.append(
      h("strong", null, "On"),
      ` for ${scope}; kept ${saved.retention_days || retention} days.`,
      saved.consented_at ? ` Consent recorded ${when(saved.consented_at)}` : "",
      saved.consented_by ? ` by ${saved.consented_by}.` : saved.consented_at ? "." : "",
    );
  } else {
    stateText.append(h("strong", null, "Off"), " — nothing monitored is stored.");
  }

  const allNodes = h("input", { type: "radio", name: "saved-scope", value: "all", id: "scope-all", checked: !saved.nodes });
  const someNodes = h("input", { type: "radio", name: "saved-scope", value: "some", id: "scope-some", checked: Boolean(saved.nodes) });
  const chosen = new Set(saved.nodes || []);
  const nodeBoxes = nodes.map((n) => {
    const box = h("input", { type: "checkbox", value: n.id, id: `scope-${n.id}`, checked: chosen.has(n.id) });
    return h("label", { class: "check", for: `scope-${n.id}` }, box, " ", n.name);
  });
  const nodeList = h("div", { class: "scope-nodes", hidden: !saved.nodes }, nodeBoxes.length ? nodeBoxes : h("p", { class: "muted" }, "No nodes yet."));
  for (const radio of [allNodes, someNodes]) radio.addEventListener("change", () => (nodeList.hidden = !someNodes.checked));
  const scope = h(
    "fieldset",
    { class: "scope", disabled: retention <= 0 },
    h("legend", null, "Which nodes"),
    h("label", { class: "check", for: "scope-all" }, allNodes, " Every node, including ones added later"),
    h("label", { class: "check", for: "scope-some" }, someNodes, " Only the nodes I choose"),
    nodeList,
  );
  const selectedNodes = () =>
    someNodes.checked ? nodeBoxes.map((l) => l.querySelector("input")).filter((b) => b.checked).map((b) => b.value) : null;

  const apply = h("button", { type: "button", class: "btn", hidden: !on }, "Save node choice");
  apply.addEventListener("click", () => turnOn(selectedNodes()));

  async function turnOn(which) {
    try {
      const body = await patch("/api/v1/account", { saved_monitoring: true, saved_nodes: which });
      ctx.setAccount(body.account);
      toast("Saved monitoring is on — consent recorded", "ok");
      ctx.rerender();
    } catch (err) {
      toast(explain(err), "error");
    }
  }

  switchBtn.addEventListener("click", async () => {
    if (!on) {
      const which = selectedNodes();
      if (which && which.length === 0) {
        toast("Choose at least one node, or every node.", "error");
        return;
      }
      const ok = await confirmDialog(
        "Turn on saved monitoring?",
        [
          h("p", null, which ? `The server will store monitored data of ${which.length} node${which.length === 1 ? "" : "s"}` : "The server will store monitored data of every node", ` for ${retention} days, as described.`),
          h("p", null, "Your consent is recorded now, with the time and this session."),
        ],
        { confirm: "Turn on and record consent" },
      );
      if (ok) await turnOn(which);
      return;
    }
    const keep = h("input", { type: "checkbox", id: "keep-saved" });
    const answer = await dialog({
      title: "Turn off saved monitoring?",
      body: [
        h("p", null, "Saving stops at once. What was saved is deleted now — unless you keep it until its retention ends."),
        h("label", { class: "check", for: "keep-saved" }, keep, " Keep what was saved until its retention ends"),
      ],
      actions: [
        { label: "Cancel", value: null },
        { label: "Turn off", kind: "danger", value: "off", submit: true },
      ],
    });
    if (answer !== "off") return;
    try {
      const body = await patch("/api/v1/account", { saved_monitoring: false, keep_saved_data: keep.checked });
      ctx.setAccount(body.account);
      toast(keep.checked ? "Saved monitoring is off; saved data is kept until its retention ends" : "Saved monitoring is off; saved data deleted", "ok");
      ctx.rerender();
    } catch (err) {
      toast(explain(err), "error");
    }
  });

  return section(
    "saved",
    "Saved monitoring",
    null,
    h(
      "div",
      { class: "switch-row" },
      switchBtn,
      h("label", { for: "saved-switch", class: "switch-label" }, "Save monitored data for history charts and alert history"),
    ),
    stateText,
    whatIsStored(retention, PLAN_TEXT[account.plan] || account.plan, saved.what),
    scope,
    apply,
  );
}

function keysSection(ctx, keys) {
  const list = h("div", { class: "list" });
  for (const key of keys) {
    const revoke = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Revoke");
    revoke.addEventListener("click", async () => {
      const ok = await confirmDialog(`Revoke the key “${key.name}”?`, "Scripts using it stop working at once.", {
        confirm: "Revoke key",
        danger: true,
      });
      if (!ok) return;
      try {
        await del(`/api/v1/account/keys/${key.id}`);
        toast("Key revoked", "ok");
        ctx.rerender();
      } catch (err) {
        toast(explain(err), "error");
      }
    });
    list.append(
      h(
        "div",
        { class: "list-item" },
        h("div", { class: "list-main" }, h("span", { class: "strong" }, key.name), h("code", { class: "muted" }, ` ${key.prefix}…`), h("span", { class: "muted" }, ` created ${when(key.created_at)}`)),
        h("div", { class: "list-actions" }, revoke),
      ),
    );
  }
  if (!keys.length) list.append(h("p", { class: "muted" }, "No API keys."));
  const create = h("button", { type: "button", class: "btn" }, "Create API key");
  create.addEventListener("click", async () => {
    const name = h("input", { type: "text", required: true, maxlength: 64 });
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const made = await dialog({
      title: "Create an API key",
      body: [field("Name", name, "What uses it, e.g. “deploy script”."), error],
      actions: [
        { label: "Cancel", value: null },
        { label: "Create", kind: "primary", submit: true },
      ],
      onSubmit: async () => {
        try {
          return await post("/api/v1/account/keys", { name: name.value });
        } catch (err) {
          error.textContent = explain(err);
          error.hidden = false;
          return undefined;
        }
      },
    });
    if (!made) return;
    await dialog({
      title: `API key “${made.key.name}”`,
      body: [
        h("p", { class: "notice notice-warn" }, "Shown only now: copy it. The server keeps only a hash."),
        copyBlock(made.api_key),
        h("p", { class: "hint" }, "Use it as: Authorization: Bearer <key>"),
      ],
      actions: [{ label: "Done", kind: "primary", value: "done" }],
    });
    ctx.rerender();
  });
  return section("keys", "API keys", "For scripts and the HTTP API (Authorization: Bearer …). This page uses your sign-in session instead.", create, list);
}

export function deletionResult(deletion) {
  const holds = deletion.holds || [];
  const held = deletion.state === "held" || holds.length > 0;
  return h(
    "div",
    { class: "deletion", dataset: { state: deletion.state || "" } },
    h("h2", null, held ? "Deletion requested — some data is held" : "Your account has been deleted"),
    h(
      "p",
      null,
      held
        ? "Everything not covered by a legal hold is gone. The data below is kept only until its hold ends, then deleted as well."
        : "Your account, API keys, nodes and their tokens, webhook endpoints and any saved data are gone.",
    ),
    holds.length
      ? h(
          "ul",
          { class: "holds" },
          holds.map((hold) =>
            h(
              "li",
              null,
              h("strong", null, String(hold.kind || "hold").replaceAll("_", " ")),
              ": keeps ",
              (hold.categories || []).join(", ") || "some data",
              hold.ends_at ? ` until ${when(hold.ends_at)}` : "",
            ),
          ),
        )
      : null,
    deletion.id ? h("p", { class: "muted" }, `Request ${deletion.id}`) : null,
    deletion.status_url ? statusLink(deletion.status_url) : null,
  );
}

function statusLink(url) {
  // The status URL needs no credential and is shown only once: keep it, and check it here.
  const check = h("button", { type: "button", class: "btn btn-small" }, "Check the status now");
  const box = h(
    "div",
    { class: "status-url" },
    h("p", { class: "muted" }, "Status (keep this link; it is shown once):"),
    copyBlock(window.location.origin + url),
    check,
  );
  check.addEventListener("click", async () => {
    try {
      const body = await get(url, { quiet401: true });
      box.closest(".deletion").replaceWith(deletionResult(body.deletion));
    } catch (err) {
      toast(explain(err), "error");
    }
  });
  return box;
}

function dataSection(ctx) {
  const exportLink = h("a", { class: "btn", href: "/api/v1/account/export", download: "oneconnect-export.json" }, "Download my data (JSON)");
  const request = h("button", { type: "button", class: "btn btn-danger" }, "Delete my account…");
  request.addEventListener("click", async () => {
    const confirmEmail = h("input", { type: "email", required: true, autocomplete: "off" });
    const error = h("p", { class: "form-error", role: "alert", hidden: true });
    const result = await dialog({
      title: "Delete your account?",
      body: [
        h(
          "p",
          null,
          "Everything is deleted: the account, API keys, nodes and their tokens, webhook endpoints and saved monitoring data. Running agents are disconnected.",
        ),
        h(
          "p",
          null,
          "Only data under an active legal hold (an unresolved dispute or outstanding credit, legal, tax or audit retention, fraud prevention) is kept, until the hold ends — you will see which.",
        ),
        field("Type your e-mail address to confirm", confirmEmail),
        error,
      ],
      actions: [
        { label: "Cancel", value: null },
        { label: "Delete everything", kind: "danger", submit: true },
      ],
      onSubmit: async () => {
        if (confirmEmail.value.trim().toLowerCase() !== String(ctx.account.email).toLowerCase()) {
          error.textContent = "That is not this account's e-mail address.";
          error.hidden = false;
          return undefined;
        }
        try {
          return await del("/api/v1/account");
        } catch (err) {
          error.textContent = explain(err);
          error.hidden = false;
          return undefined;
        }
      },
    });
    if (result && result.deletion) {
      stopFleet();
      ctx.deleted(result.deletion);
    }
  });
  return section(
    "data",
    "Your data",
    "Export everything stored about your account, or delete it.",
    h("div", { class: "button-row" }, exportLink, request),
  );
}

export function settingsView(ctx) {
  const body = h("div", { class: "settings-body" }, h("p", { class: "muted" }, "Loading…"));
  const nav = h(
    "nav",
    { class: "settings-nav", "aria-label": "Settings sections" },
    [
      ["plan", "Plan"],
      ["saved", "Saved monitoring"],
      ["nodes", "Nodes"],
      ["webhooks", "Webhooks"],
      ["keys", "API keys"],
      ["data", "Your data"],
    ].map(([id, label]) => {
      const a = h("a", { href: `#/settings?s=${id}` }, label);
      return a;
    }),
  );
  const el = h(
    "section",
    { class: "view settings", "aria-labelledby": "settings-title" },
    h("div", { class: "view-head" }, h("h1", { id: "settings-title" }, "Settings")),
    h("div", { class: "settings-layout" }, nav, body),
  );
  let alive = true;

  async function render() {
    try {
      const [account, nodes, keys] = await Promise.all([
        get("/api/v1/account"),
        get("/api/v1/nodes"),
        get("/api/v1/account/keys"),
      ]);
      if (!alive) return;
      ctx.setAccount(account.account);
      const sections = [
        planSection(ctx, nodes.nodes),
        savedSection(ctx, nodes.nodes),
        nodesSection(ctx, nodes.nodes),
        webhooksSection(ctx, nodes.nodes),
        keysSection(ctx, keys.keys),
        dataSection(ctx),
      ];
      replace(body, sections);
      const wanted = ctx.query.get("s");
      if (wanted) document.getElementById(`s-${wanted}`)?.scrollIntoView({ block: "start" });
    } catch (err) {
      if (!(err instanceof ApiError && err.status === 401)) replace(body, h("p", { class: "form-error" }, explain(err)));
    }
  }

  ctx.rerender = () => render();
  ctx.nodesChanged = () => {};
  render();
  return {
    el,
    title: "Settings",
    destroy() {
      alive = false;
      clear(body);
    },
  };
}

