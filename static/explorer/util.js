// Small helpers shared by the page scripts.

/** Return the value of the csrftoken cookie, or "" when there is none. */
export function csrfToken() {
  const match = document.cookie.match(/(?:^|;\s*)csrftoken=([^;]+)/);
  return match ? decodeURIComponent(match[1]) : "";
}

/** Fetch JSON; resolve to {ok, status, data}; network errors and aborts reject as fetch does. */
export async function getJSON(url, { signal } = {}) {
  const response = await fetch(url, { signal, headers: { Accept: "application/json" } });
  let data = null;
  try {
    data = await response.json();
  } catch {
    data = null;
  }
  return { ok: response.ok, status: response.status, data };
}

/** Return fn delayed until calls pause for ms; .cancel() drops a pending call. */
export function debounce(fn, ms) {
  let timer = 0;
  const wrapped = (...args) => {
    clearTimeout(timer);
    timer = setTimeout(() => fn(...args), ms);
  };
  wrapped.cancel = () => clearTimeout(timer);
  return wrapped;
}

const HEX_COLOUR = /^[0-9a-fA-F]{6}$/;

/** Return "#rrggbb" for a colour from the API, or "" if it is not one. */
export function colour(hex) {
  return typeof hex === "string" && HEX_COLOUR.test(hex) ? `#${hex}` : "";
}

/** Return the message of an API error body, or a fallback. */
export function errorMessage(data, fallback) {
  if (data && typeof data.error === "string" && data.error) return data.error;
  return fallback;
}

/** Create an element with a class and text; text always goes in as text. */
export function element(tag, className = "", text = "") {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text) node.textContent = text;
  return node;
}

export function isAbort(error) {
  return error && error.name === "AbortError";
}
