// Upload zone: every file goes to the API in its own request, with a progress bar each.
// Without this script the form posts the files to the page's own upload view instead.
import { csrfToken, element } from "./util.js";

// A few uploads at a time: the rest wait, so that the first ones finish early.
const MAX_PARALLEL = 3;

const form = document.getElementById("upload-form");
const input = document.getElementById("upload-input");
const list = document.getElementById("upload-list");
const apiUrl = form.dataset.apiUrl;
const maxBytes = Number(form.dataset.maxUploadMb) * 1024 * 1024;

const queue = [];
let running = 0;

function setState(item, state, text) {
  item.li.dataset.state = state;
  item.status.textContent = text;
}

function addItem(file) {
  const li = element("li", "upload-item");
  const name = element("span", "upload-name", file.name);
  name.title = file.name;
  const progress = element("progress", "upload-progress");
  progress.max = 1;
  progress.value = 0;
  const status = element("span", "upload-status");
  li.append(name, progress, status);
  list.prepend(li);
  const item = { file, li, progress, status };
  setState(item, "queued", "Waiting…");
  return item;
}

function refreshTable() {
  // #capture-table-refresh listens for this event and fetches the table again.
  if (window.htmx) window.htmx.trigger(document.body, "captures-changed");
}

function finish(item) {
  running -= 1;
  refreshTable();
  next();
}

function showResult(item, xhr) {
  let body = null;
  try {
    body = JSON.parse(xhr.responseText);
  } catch {
    body = null;
  }
  item.progress.hidden = true;
  const stored = body && Array.isArray(body.captures) ? body.captures : [];
  const errors = body && Array.isArray(body.errors) ? body.errors : [];
  if (xhr.status === 201 && stored.length) {
    const capture = stored[0];
    setState(item, "done", "");
    const link = element("a", "upload-link", "Open");
    link.href = capture.url;
    item.status.append(
      document.createTextNode(`Stored · ${Number(capture.packets).toLocaleString()} packets · `),
      link,
    );
    if (capture.warning) {
      item.status.append(element("span", "upload-error", ` ⚠ ${capture.warning}`));
    }
    return;
  }
  let message = "";
  if (errors.length && errors[0].error) message = errors[0].error;
  else if (body && typeof body.error === "string") message = body.error;
  else message = `upload failed (HTTP ${xhr.status})`;
  setState(item, "error", message);
}

function start(item) {
  running += 1;
  if (item.file.size > maxBytes) {
    item.progress.hidden = true;
    setState(item, "error", `larger than the configured limit of ${form.dataset.maxUploadMb} MB`);
    finish(item);
    return;
  }
  setState(item, "uploading", "Uploading…");
  const xhr = new XMLHttpRequest();
  xhr.open("POST", apiUrl);
  xhr.setRequestHeader("X-CSRFToken", csrfToken());
  xhr.setRequestHeader("Accept", "application/json");
  xhr.upload.addEventListener("progress", (event) => {
    if (!event.lengthComputable) return;
    item.progress.value = event.loaded / event.total;
    const percent = Math.floor((100 * event.loaded) / event.total);
    item.status.textContent = `Uploading… ${percent}%`;
  });
  xhr.upload.addEventListener("load", () => {
    // The body is sent; the server now reads the file with capinfos before it answers.
    item.progress.removeAttribute("value");
    setState(item, "indexing", "Indexing…");
  });
  xhr.addEventListener("load", () => {
    showResult(item, xhr);
    finish(item);
  });
  xhr.addEventListener("error", () => {
    item.progress.hidden = true;
    setState(item, "error", "the upload failed: the connection was lost");
    finish(item);
  });
  const body = new FormData();
  body.append("file", item.file, item.file.name);
  // A key log chosen beside the captures decrypts each of them.
  const keylog = document.getElementById("upload-keylog");
  if (keylog && keylog.files.length) body.append("keylog", keylog.files[0], keylog.files[0].name);
  xhr.send(body);
}

function next() {
  while (running < MAX_PARALLEL && queue.length) start(queue.shift());
}

function uploadAll(files) {
  for (const file of files) queue.push(addItem(file));
  next();
}

input.addEventListener("change", () => {
  uploadAll(Array.from(input.files));
  input.value = "";
});

form.addEventListener("submit", (event) => {
  event.preventDefault();
  uploadAll(Array.from(input.files));
  input.value = "";
});

// Dragging over children fires leave/enter pairs; count them to know when the drag left the zone.
let depth = 0;
form.addEventListener("dragenter", (event) => {
  event.preventDefault();
  depth += 1;
  form.classList.add("dragover");
});
form.addEventListener("dragover", (event) => {
  event.preventDefault();
  event.dataTransfer.dropEffect = "copy";
});
form.addEventListener("dragleave", () => {
  depth = Math.max(0, depth - 1);
  if (depth === 0) form.classList.remove("dragover");
});
form.addEventListener("drop", (event) => {
  event.preventDefault();
  depth = 0;
  form.classList.remove("dragover");
  if (event.dataTransfer && event.dataTransfer.files.length) uploadAll(Array.from(event.dataTransfer.files));
});
// A file dropped beside the zone would make the browser navigate away to show it.
for (const type of ["dragover", "drop"]) {
  window.addEventListener(type, (event) => {
    if (!form.contains(event.target)) event.preventDefault();
  });
}
