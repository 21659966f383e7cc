// Sign in and sign up.

import { ApiError, explain, post } from "./api.js";
import { field, h } from "./dom.js";

function errorBox() {
  return h("p", { class: "form-error", role: "alert", hidden: true });
}

function showError(box, err) {
  box.textContent = explain(err);
  box.hidden = false;
}

function shell(title, lead, form, footer) {
  return h(
    "section",
    { class: "auth" },
    h(
      "div",
      { class: "auth-card" },
      h("div", { class: "auth-brand" }, h("span", { class: "logo", "aria-hidden": "true" }), "OneConnect Alert"),
      h("h1", null, title),
      h("p", { class: "muted" }, lead),
      form,
      h("p", { class: "auth-footer" }, footer),
    ),
  );
}

export function loginView(ctx) {
  const email = h("input", { type: "email", name: "email", autocomplete: "username", required: true });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: "current-password",
    required: true,
  });
  const error = errorBox();
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Sign in");
  const form = h(
    "form",
    {
      class: "form",
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.hidden = true;
          submit.disabled = true;
          try {
            const session = await post("/api/v1/session", {
              email: email.value,
              password: password.value,
            }, { quiet401: true });
            await ctx.signedIn(session);
          } catch (err) {
            showError(error, err);
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    field("E-mail address", email),
    field("Password", password),
    error,
    submit,
  );
  const el = shell(
    "Sign in",
    "Your VPN fleet's health, live — monitored data stays in memory unless you choose to save it.",
    form,
    ["New here? ", h("a", { href: "#/signup" }, "Create an account")],
  );
  setTimeout(() => email.focus(), 0);
  return { el };
}

export function signupView(ctx) {
  const name = h("input", { type: "text", name: "name", autocomplete: "name", required: true, maxlength: 200 });
  const email = h("input", { type: "email", name: "email", autocomplete: "email", required: true });
  const company = h("input", { type: "text", name: "company", autocomplete: "organization", maxlength: 200 });
  const password = h("input", {
    type: "password",
    name: "password",
    autocomplete: "new-password",
    required: true,
    minlength: 12,
  });
  const plan = h(
    "select",
    { name: "plan" },
    h("option", { value: "free" }, "Free — 3 nodes, 30 s interval, no saved monitoring"),
    h("option", { value: "pro" }, "Pro — 50 nodes, 5 s interval, 30 days saved monitoring"),
    h("option", { value: "business" }, "Business — 1,000 nodes, 1 s interval, 90 days saved monitoring"),
  );
  const error = errorBox();
  const submit = h("button", { type: "submit", class: "btn btn-primary btn-block" }, "Create account");
  const form = h(
    "form",
    {
      class: "form",
      on: {
        submit: async (event) => {
          event.preventDefault();
          error.hidden = true;
          submit.disabled = true;
          try {
            const body = {
              name: name.value,
              email: email.value,
              password: password.value,
              plan: plan.value,
            };
            if (company.value.trim()) body.company = company.value;
            const created = await post("/api/v1/accounts", body, { quiet401: true });
            const session = await post("/api/v1/session", {
              email: email.value,
              password: password.value,
            }, { quiet401: true });
            await ctx.signedIn(session, { apiKey: created.api_key });
          } catch (err) {
            if (err instanceof ApiError && err.field) {
              const target = { name, email, company, password, plan }[err.field];
              if (target) target.setAttribute("aria-invalid", "true");
            }
            showError(error, err);
          } finally {
            submit.disabled = false;
          }
        },
      },
    },
    field("Your name", name),
    field("E-mail address", email),
    field("Company (optional)", company),
    field("Password", password, "At least 12 characters."),
    field("Plan", plan, "You can change plans later in Settings."),
    error,
    submit,
  );
  const el = shell(
    "Create your account",
    "Watch every VPN node's health and get alerts where you work. Nothing about your VPN's users is collected.",
    form,
    ["Already have an account? ", h("a", { href: "#/login" }, "Sign in")],
  );
  setTimeout(() => name.focus(), 0);
  return { el };
}
