// The API client: same-origin fetches, the API key header, problem+json errors.

const KEY_STORAGE = "index-builder.api-key";
const PROBLEM = "application/problem+json";

/** An error answer of the API (RFC 9457 problem details), or a network failure. */
export class ApiError extends Error {
  constructor({ title, detail, status, type, field, instance }) {
    super(detail || title || "request failed");
    this.name = "ApiError";
    this.title = title || "Request failed";
    this.detail = detail || "";
    this.status = status ?? 0;
    this.type = type || "";
    this.field = field || null;
    this.instance = instance || null;
  }
}

/** The API key of this tab (sessionStorage only; never logged, never in a URL). */
export function getApiKey() {
  try {
    return sessionStorage.getItem(KEY_STORAGE) || "";
  } catch {
    return "";
  }
}

/** Keep (or, when empty, forget) the API key for this tab. */
export function setApiKey(value) {
  try {
    if (value) sessionStorage.setItem(KEY_STORAGE, value);
    else sessionStorage.removeItem(KEY_STORAGE);
  } catch {
    // storage disabled: the key lives in the input field only
  }
}

/** Observers of every response (the health strip shows the last X-Cache). */
const listeners = new Set();
export function onResponse(listener) {
  listeners.add(listener);
}

async function problemOf(response) {
  const type = response.headers.get("content-type") || "";
  let body = null;
  try {
    body = type.includes("json") ? await response.json() : null;
  } catch {
    body = null;
  }
  if (body && (type.startsWith(PROBLEM) || body.title || body.detail)) {
    return new ApiError({ ...body, status: body.status ?? response.status });
  }
  return new ApiError({
    title: response.statusText || `HTTP ${response.status}`,
    detail: `the server answered ${response.status} without problem details`,
    status: response.status,
  });
}

/**
 * One API request. `body` is sent as JSON; the API key (when one is set) goes in
 * X-API-Key. Resolves to the Response (ok, or a status listed in `accept`);
 * otherwise throws an ApiError made from the problem+json body.
 */
export async function request(path, { method = "GET", body, accept = [], signal } = {}) {
  const headers = { Accept: "application/json, application/problem+json" };
  const key = getApiKey();
  if (key) headers["X-API-Key"] = key;
  if (body !== undefined) headers["Content-Type"] = "application/json";
  let response;
  try {
    response = await fetch(path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      signal,
      credentials: "same-origin",
    });
  } catch (error) {
    if (error.name === "AbortError") throw error;
    throw new ApiError({
      title: "Network error",
      detail: `could not reach the server (${error.message})`,
      status: 0,
    });
  }
  for (const listener of listeners) listener(path, response);
  if (!response.ok && !accept.includes(response.status)) throw await problemOf(response);
  return response;
}

/** GET a JSON document. */
export async function getJson(path, params = {}, options = {}) {
  const query = new URLSearchParams();
  for (const [name, value] of Object.entries(params)) {
    if (value !== null && value !== undefined && value !== "") query.set(name, value);
  }
  const search = query.toString();
  const url = search ? `${path}?${search}` : path;
  const response = await request(url, options);
  return response.json();
}

/** The file name of a Content-Disposition header. */
export function filenameOf(response, fallback) {
  const header = response.headers.get("content-disposition") || "";
  const star = /filename\*=(?:UTF-8'')?([^;]+)/i.exec(header);
  if (star) return decodeURIComponent(star[1].trim().replace(/^"|"$/g, ""));
  const plain = /filename="?([^";]+)"?/i.exec(header);
  return plain ? plain[1] : fallback;
}
