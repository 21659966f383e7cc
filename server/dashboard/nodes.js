// Nodes: enrolment (the one-line agent command with the node's token, shown once), a new
// token, delete. Used by the fleet view, the node view and Settings.

import { del, explain, post } from "./api.js";
import { confirmDialog, copyBlock, dialog, field, h, section, toast } from "./dom.js";
import { when } from "./format.js";
import { removeLocal, upsertLocal } from "./live.js";

export function enrolment(token) {
  const origin = window.location.origin;
  const oneLine = `ONECONNECT_AGENT_SERVER_URL=${origin} ONECONNECT_AGENT_TOKEN=${token} oneconnect-agent run`;
  const envFile = `ONECONNECT_AGENT_SERVER_URL=${origin}\nONECONNECT_AGENT_TOKEN=${token}\n`;
  return h(
    "div",
    { class: "enrolment" },
    h(
      "p",
      { class: "notice notice-warn" },
      "This token is shown only now. Copy it before closing; you can issue a new one later (the old one then stops working).",
    ),
    h("h3", null, "1. Install the agent on the VPN node"),
    copyBlock("pip install oneconnect-alert"),
    h("h3", null, "2. Start it with this node's token"),
    h("div", { class: "snippet", dataset: { token } }, copyBlock(oneLine)),
    h(
      "p",
      { class: "hint" },
      "For the systemd unit (deploy/systemd/oneconnect-agent.service), put these lines in /etc/oneconnect/agent.env instead:",
    ),
    copyBlock(envFile),
    h(
      "p",
      { class: "hint" },
      "The agent sends node-level health only — never anything about your VPN's users. `oneconnect-agent check` prints exactly what it would send.",
    ),
  );
}

export async function showToken(title, token) {
  await dialog({
    title,
    wide: true,
    body: enrolment(token),
    actions: [{ label: "Done", kind: "primary", value: "done" }],
  });
}

export async function addNodeDialog(ctx) {
  const name = h("input", { type: "text", name: "name", required: true, maxlength: 64, autocomplete: "off" });
  const error = h("p", { class: "form-error", role: "alert", hidden: true });
  const created = await dialog({
    title: "Add a node",
    body: [
      field("Node name", name, "A name you recognise, e.g. vpn-fra-1. Shown in alerts and webhooks."),
      error,
    ],
    actions: [
      { label: "Cancel", value: null },
      { label: "Create node", kind: "primary", submit: true },
    ],
    onSubmit: async () => {
      error.hidden = true;
      try {
        return await post("/api/v1/nodes", { name: name.value });
      } catch (err) {
        error.textContent = explain(err);
        error.hidden = false;
        return undefined;
      }
    },
  });
  setTimeout(() => name.focus(), 0);
  if (!created) return null;
  upsertLocal({ id: created.node.id, name: created.node.name, enrolled: false });
  ctx.nodesChanged?.();
  await showToken(`Enrol ${created.node.name}`, created.token);
  return created;
}

export function nodesSection(ctx, nodes) {
  const list = h("div", { class: "list" });
  if (!nodes.length) list.append(h("p", { class: "muted" }, "No nodes yet."));
  for (const node of nodes) {
    const rotate = h("button", { type: "button", class: "btn btn-small" }, "New token");
    rotate.addEventListener("click", async () => {
      const ok = await confirmDialog(
        `Issue a new token for ${node.name}?`,
        "The current token stops working at once and the node's agent is disconnected until it uses the new one.",
        { confirm: "Issue new token", danger: true },
      );
      if (!ok) return;
      try {
        const body = await post(`/api/v1/nodes/${node.id}/token`);
        await showToken(`New token for ${node.name}`, body.token);
      } catch (err) {
        toast(explain(err), "error");
      }
    });
    const remove = h("button", { type: "button", class: "btn btn-small btn-danger-quiet" }, "Delete");
    remove.addEventListener("click", async () => {
      const ok = await confirmDialog(`Delete ${node.name}?`, "Its token stops working and it leaves the fleet.", {
        confirm: "Delete node",
        danger: true,
      });
      if (!ok) return;
      try {
        await del(`/api/v1/nodes/${node.id}`);
        removeLocal(node.id);
        toast(`${node.name} deleted`, "ok");
        ctx.rerender();
      } catch (err) {
        toast(explain(err), "error");
      }
    });
    list.append(
      h(
        "div",
        { class: "list-item" },
        h(
          "div",
          { class: "list-main" },
          h("a", { href: `#/nodes/${node.id}`, class: "strong" }, node.name),
          h("span", { class: "muted" }, ` token ${node.token_prefix}…`, node.enrolled ? ` · enrolled ${when(node.enrolled_at)}` : " · agent never connected"),
        ),
        h("div", { class: "list-actions" }, rotate, remove),
      ),
    );
  }
  const add = h("button", { type: "button", class: "btn btn-primary" }, "Add node");
  add.addEventListener("click", async () => {
    if (await addNodeDialog(ctx)) ctx.rerender();
  });
  return section("nodes", "Nodes and enrolment", "Each node has its own token; the agent connects with it.", add, list);
}

