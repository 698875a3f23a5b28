// "Copy link": makes a share link of exactly this view (its path and query: filter, packet,
// field, open view) and copies it; the link is also shown, for browsers that refuse to copy.
import { csrfToken } from "./util.js";

const button = document.getElementById("copy-link");
const popover = document.getElementById("share-popover");
const field = document.getElementById("share-url");
const note = document.getElementById("share-note");

async function copyLink() {
  button.disabled = true;
  const body = new URLSearchParams({ view: `${location.pathname}${location.search}` });
  try {
    const response = await fetch(button.dataset.shareUrl, {
      method: "POST",
      headers: { Accept: "application/json", "X-CSRFToken": csrfToken() },
      body,
    });
    const answer = await response.json().catch(() => null);
    if (!response.ok || !answer?.url) {
      note.textContent = `The link could not be made (HTTP ${response.status}).`;
      field.value = "";
    } else {
      field.value = answer.url;
      let copied = false;
      try {
        await navigator.clipboard.writeText(answer.url);
        copied = true;
      } catch {
        copied = false;
      }
      const who = answer.anonymous ? "Anyone holding it can look, read-only." : "Only people who may see this capture can open it.";
      note.textContent = `${copied ? "Copied. " : ""}${who}`;
    }
  } catch {
    note.textContent = "The server did not answer.";
  } finally {
    button.disabled = false;
  }
  popover.hidden = false;
  field.focus();
  field.select();
}

if (button) {
  button.addEventListener("click", copyLink);
  document.addEventListener("pointerdown", (event) => {
    if (!popover.hidden && !popover.contains(event.target) && event.target !== button) popover.hidden = true;
  });
  document.addEventListener("keydown", (event) => {
    if (event.key === "Escape") popover.hidden = true;
  });
}
