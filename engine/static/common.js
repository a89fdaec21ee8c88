// Helpers shared by the page's modules. Every piece of text from a user or the corpus (queries,
// captions, words) reaches the page as a text node or a property, never as HTML.

/** An element with properties (className, href, src, alt, type, hidden, …) and children (nodes or text). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [name, value] of Object.entries(props)) {
    if (value === undefined || value === null) continue;
    if (name === "dataset") Object.assign(node.dataset, value);
    else if (name.startsWith("aria-") || name === "role") node.setAttribute(name, String(value));
    else node[name] = value;
  }
  for (const child of children) {
    if (child === undefined || child === null || child === false) continue;
    node.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
  return node;
}

/** An engine error, with its JSON error code. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

/** GET or POST an engine endpoint; its JSON, or an ApiError with the engine's message. */
export async function api(path, options = {}) {
  let response;
  try {
    response = await fetch(path, options);
  } catch (err) {
    throw new ApiError(0, "network", "The engine cannot be reached: " + err.message);
  }
  let body = null;
  try {
    body = await response.json();
  } catch (err) {
    body = null;
  }
  if (!response.ok) {
    const message = body && body.message ? body.message : `The engine answered ${response.status}.`;
    throw new ApiError(response.status, body && body.error ? body.error : "http", message);
  }
  return body;
}

/** The corpus statistics, fetched once per page view (the footer, the language list, the analyses). */
let statsPromise = null;
export function stats() {
  if (statsPromise === null) statsPromise = api("/v1/stats");
  return statsPromise;
}

export function formatNumber(n) {
  return typeof n === "number" ? n.toLocaleString("en") : String(n ?? "");
}

export function formatScore(x) {
  return typeof x === "number" ? x.toFixed(2) : "";
}

/** A search link for words (and a language): the page's own address for that search. */
export function searchHref(q, lang) {
  const params = new URLSearchParams();
  if (q) params.set("q", q);
  if (lang) params.set("lang", lang);
  const query = params.toString();
  return "/" + (query ? "?" + query : "");
}

/** A thumbnail URL of a corpus image. */
export function thumbUrl(hit, size) {
  return `${hit.url}?size=${size}`;
}
