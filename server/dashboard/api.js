// The server's JSON API, called with the session cookie; every write carries X-CSRF-Token.

let csrfToken = null;
const unauthorizedHandlers = new Set();

export function setCsrf(token) {
  csrfToken = token;
}

export function onUnauthorized(fn) {
  unauthorizedHandlers.add(fn);
}

export class ApiError extends Error {
  constructor(status, code, message, field) {
    super(message);
    this.status = status;
    this.code = code;
    this.field = field;
  }
}

export async function api(path, { method = "GET", body, signal, quiet401 = false } = {}) {
  const headers = { Accept: "application/json" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  if (method !== "GET" && method !== "HEAD" && csrfToken) headers["X-CSRF-Token"] = csrfToken;
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: "same-origin",
      signal,
    });
  } catch (err) {
    if (err && err.name === "AbortError") throw err;
    throw new ApiError(0, "network", "The server cannot be reached. Check your connection.");
  }
  if (response.status === 204) return null;
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  if (!response.ok) {
    const error = (data && data.error) || {};
    if (response.status === 401 && !quiet401) unauthorizedHandlers.forEach((fn) => fn());
    throw new ApiError(
      response.status,
      error.code || "error",
      error.message || `${response.status} ${response.statusText}`,
      error.field,
    );
  }
  return data;
}

export const get = (path, opts) => api(path, opts);
export const post = (path, body, opts) => api(path, { ...opts, method: "POST", body: body ?? {} });
export const patch = (path, body, opts) => api(path, { ...opts, method: "PATCH", body });
export const del = (path, opts) => api(path, { ...opts, method: "DELETE" });

/** Human-readable message for an error thrown by api(). */
export function explain(err) {
  if (err instanceof ApiError) {
    return err.field ? `${err.message}` : err.message;
  }
  return String((err && err.message) || err);
}
