// Building DOM safely: every string becomes a text node or an attribute value, never markup.
// No HTML parsing of data anywhere in the dashboard; no style attributes (the CSP forbids them) — styles
// come from classes, or from the CSSOM (element.style.x = …) for computed values.

const REFUSED = /^(on|style$|srcdoc$|innerhtml$|outerhtml$|formaction$)/i;
const PROPERTIES = new Set(["value", "checked", "disabled", "selected", "indeterminate"]);

function safeUrl(value) {
  const url = String(value);
  // Internal links only (hash routes, same-origin paths) or plain http(s)/blob downloads.
  if (/^(#|\/(?!\/)|blob:)/.test(url)) return url;
  throw new Error("h(): refused a link that is not internal");
}

function append(el, child) {
  if (child === null || child === undefined || child === false) return;
  if (Array.isArray(child)) {
    for (const c of child) append(el, c);
  } else if (child instanceof Node) {
    el.append(child);
  } else {
    el.append(document.createTextNode(String(child)));
  }
}

/** h("button", {class: "btn", on: {click}}, "Text", child, ...) */
export function h(tag, props, ...children) {
  const el = document.createElement(tag);
  if (props) {
    for (const [key, value] of Object.entries(props)) {
      if (value === undefined || value === null || value === false) continue;
      if (key === "class") el.className = Array.isArray(value) ? value.filter(Boolean).join(" ") : value;
      else if (key === "on") for (const [ev, fn] of Object.entries(value)) el.addEventListener(ev, fn);
      else if (key === "dataset") for (const [k, v] of Object.entries(value)) el.dataset[k] = String(v);
      else if (key === "text") el.textContent = String(value);
      else if (REFUSED.test(key)) throw new Error(`h(): refused attribute ${key}`);
      else if (PROPERTIES.has(key)) el[key] = value;
      else if (key === "href" || key === "src") el.setAttribute(key, safeUrl(value));
      else el.setAttribute(key, value === true ? "" : String(value));
    }
  }
  append(el, children);
  return el;
}

export function clear(el) {
  while (el.firstChild) el.firstChild.remove();
  return el;
}

export function replace(el, ...children) {
  clear(el);
  append(el, children);
  return el;
}

/** Set text only when it changed (cheap no-op updates on live rows). */
export function setText(el, value) {
  const text = String(value);
  if (el.textContent !== text) el.textContent = text;
}

let ids = 0;
export function uid(prefix = "oc") {
  ids += 1;
  return `${prefix}-${ids}`;
}

/** A labelled form field: label + control (+ hint), wired with for/id and aria-describedby. */
export function field(label, control, hint) {
  const id = control.id || uid("f");
  control.id = id;
  const parts = [h("label", { for: id }, label), control];
  if (hint) {
    const hintId = uid("hint");
    control.setAttribute("aria-describedby", hintId);
    parts.push(h("p", { class: "hint", id: hintId }, hint));
  }
  return h("div", { class: "field" }, parts);
}

/** A settings card: <section id=s-{id}> with its heading (and a lead paragraph). */
export function section(id, title, lead, ...content) {
  return h(
    "section",
    { class: "card settings-section", id: `s-${id}`, "aria-labelledby": `s-${id}-title` },
    h("h2", { id: `s-${id}-title` }, title),
    lead ? h("p", { class: "muted" }, lead) : null,
    ...content,
  );
}

// -- toasts and dialogs ---------------------------------------------------------------------

export function toast(message, kind = "info") {
  const box = document.getElementById("toasts");
  if (!box) return;
  const item = h("div", { class: ["toast", `toast-${kind}`] }, message);
  box.append(item);
  setTimeout(() => item.remove(), kind === "error" ? 8000 : 4000);
}

/**
 * A modal <dialog> (Esc closes, focus is trapped by the browser). Resolves with the value of
 * the action chosen, or null when dismissed. `body` may be a node or an array of nodes; a
 * `form` action submits the dialog's form (so Enter works and the browser validates it).
 */
export function dialog({ title, body, actions = [], wide = false, onSubmit }) {
  return new Promise((resolve) => {
    const titleId = uid("dlg");
    const form = h("form", { class: "dialog-form", method: "dialog", novalidate: false });
    const footer = h("div", { class: "dialog-actions" });
    const dlg = h(
      "dialog",
      { class: ["dialog", wide && "dialog-wide"], "aria-labelledby": titleId },
      form,
    );
    let result = null;
    form.append(h("h2", { id: titleId }, title), h("div", { class: "dialog-body" }, body), footer);
    for (const action of actions) {
      const btn = h(
        "button",
        {
          type: action.submit ? "submit" : "button",
          class: ["btn", action.kind && `btn-${action.kind}`],
          value: action.value ?? "",
        },
        action.label,
      );
      if (!action.submit) {
        btn.addEventListener("click", () => {
          result = action.value ?? null;
          dlg.close();
        });
      }
      footer.append(btn);
    }
    form.addEventListener("submit", async (event) => {
      event.preventDefault();
      if (!onSubmit) {
        result = event.submitter ? event.submitter.value : "ok";
        dlg.close();
        return;
      }
      const buttons = footer.querySelectorAll("button");
      buttons.forEach((b) => (b.disabled = true));
      try {
        const value = await onSubmit(form);
        if (value !== undefined) {
          result = value;
          dlg.close();
        }
      } finally {
        buttons.forEach((b) => (b.disabled = false));
      }
    });
    dlg.addEventListener("close", () => {
      dlg.remove();
      resolve(result);
    });
    document.body.append(dlg);
    dlg.showModal();
  });
}

export async function confirmDialog(title, message, { confirm = "Confirm", danger = false } = {}) {
  const answer = await dialog({
    title,
    body: Array.isArray(message) ? message : [h("p", null, message)],
    actions: [
      { label: "Cancel", value: null },
      { label: confirm, kind: danger ? "danger" : "primary", value: "yes", submit: true },
    ],
  });
  return answer === "yes";
}

/** A copyable secret/snippet block with a Copy button. */
export function copyBlock(text, label = "Copy") {
  const code = h("code", null, text);
  const btn = h("button", { type: "button", class: "btn btn-small" }, label);
  btn.addEventListener("click", async () => {
    try {
      await navigator.clipboard.writeText(text);
      btn.textContent = "Copied";
    } catch {
      const range = document.createRange();
      range.selectNodeContents(code);
      const sel = window.getSelection();
      sel.removeAllRanges();
      sel.addRange(range);
      btn.textContent = "Selected — press Ctrl+C";
    }
    setTimeout(() => (btn.textContent = label), 2000);
  });
  return h("div", { class: "copy-block" }, h("pre", null, code), btn);
}
