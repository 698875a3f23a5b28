// The live view: rows of a capture being recorded arrive over a websocket, in batches; the
// view follows the newest row unless paused; a display filter asks the server for the rows it
// matches. Packet data is untrusted: it is inserted as text only. A clicked row's details come
// rendered (and escaped) by the server, as in the stored capture's view.

import { PacketDetail } from "./packet-detail.js";
import { ReconnectingSocket } from "./socket.js";
import { colour } from "./util.js";

// Rows kept in the page: older ones are dropped (the stored capture has them all).
const MAX_ROWS = 5000;
const COLUMNS = ["number", "time", "source", "destination", "protocol", "length", "info"];

const app = document.getElementById("live-app");
const rowsBox = document.getElementById("live-rows");
const scroller = document.getElementById("live-scroll");
const statusLine = document.getElementById("live-status");
const followButton = document.getElementById("live-follow");
const filterForm = document.getElementById("live-filter-form");
const filterInput = document.getElementById("live-display-filter");
const filterError = document.getElementById("live-filter-error");
const ended = document.getElementById("live-ended");
const endedText = document.getElementById("live-ended-text");
const captureLink = document.getElementById("live-capture-link");

let following = true;
let displayFilter = "";
let finished = app.dataset.state !== "running";
let lastStatus = null;
let selectedNumber = null;

const detail = new PacketDetail(document.getElementById("live-detail"), {
  detailUrl: app.dataset.detailUrl,
  menu: document.getElementById("field-menu"),
  onFilterAction: filterAction,
});

// Field menu actions write the live view's display filter, as the stored view's do.
function filterAction(action, expression) {
  if (!expression) return;
  const current = filterInput.value.trim();
  let text = expression;
  if (action.endsWith("-and") && current) text = `(${current}) && ${expression}`;
  else if (action.endsWith("-or") && current) text = `(${current}) || ${expression}`;
  else if (action === "apply-not") text = `!(${expression})`;
  filterInput.value = text;
  if (action.startsWith("apply")) filterForm.requestSubmit();
  else filterInput.focus();
}

function rowElement(row) {
  const tr = document.createElement("tr");
  tr.className = "live-row";
  tr.dataset.number = String(row.number);
  for (const column of COLUMNS) {
    const td = document.createElement("td");
    td.className = `c-${column}`;
    td.textContent = String(row[column] ?? "");
    tr.append(td);
  }
  tr.style.backgroundColor = colour(row.bg);
  tr.style.color = colour(row.fg);
  if (row.number === selectedNumber) tr.classList.add("selected");
  return tr;
}

function addRows(rows) {
  if (!Array.isArray(rows) || rows.length === 0) return;
  const fragment = document.createDocumentFragment();
  for (const row of rows.slice(-MAX_ROWS)) fragment.append(rowElement(row));
  rowsBox.append(fragment);
  while (rowsBox.childElementCount > MAX_ROWS) rowsBox.firstElementChild.remove();
  if (following) scroller.scrollTop = scroller.scrollHeight;
}

function showStatus(status) {
  if (!status || finished) return;
  lastStatus = status;
  let text = `${status.packets} packets · ${status.rate} packets/s · ${status.seconds} s`;
  text += status.behind > 0 ? ` · behind by ${status.behind}` : " · up to date";
  if (!following) text += " · paused";
  statusLine.textContent = text;
}

function showEnded(message) {
  finished = true;
  socket.stopReconnecting();
  const state = message.state === "stored" ? "Stored" : "Failed";
  endedText.textContent = message.message ? `${state}: ${message.message}` : state;
  if (message.capture_url && message.capture_url.startsWith("/")) {
    captureLink.href = message.capture_url;
    captureLink.hidden = false;
  }
  ended.hidden = false;
  const packets = message.status ? `${message.status.packets} packets · ` : "";
  statusLine.textContent = `${packets}${state.toLowerCase()}`;
  const stopForm = document.getElementById("live-stop-form");
  if (stopForm) stopForm.hidden = true;
}

function onMessage(message) {
  switch (message.type) {
    case "live.snapshot":
      if (message.filter !== displayFilter) return;
      rowsBox.replaceChildren();
      addRows(message.rows);
      showStatus(message.status);
      break;
    case "live.rows":
      if (message.filter === displayFilter) addRows(message.rows);
      break;
    case "live.status":
      showStatus(message.status);
      break;
    case "live.filter_refused":
      filterError.textContent = message.message || "invalid display filter";
      filterError.hidden = false;
      break;
    case "live.ended":
      showEnded(message);
      break;
    case "live.silent":
      if (!finished) statusLine.textContent = String(message.message || "");
      break;
  }
}

const socket = new ReconnectingSocket(app.dataset.websocketPath, {
  onMessage,
  onOpen() {
    if (displayFilter) socket.send({ filter: displayFilter });
  },
  onDrop() {
    statusLine.textContent = "connection lost: reconnecting…";
  },
});

rowsBox.addEventListener("click", (event) => {
  const row = event.target.closest("tr.live-row");
  if (!row) return;
  for (const selected of rowsBox.querySelectorAll("tr.selected")) selected.classList.remove("selected");
  row.classList.add("selected");
  selectedNumber = Number(row.dataset.number);
  detail.load(selectedNumber);
});

followButton.addEventListener("click", () => {
  following = !following;
  followButton.textContent = following ? "Pause" : "Resume";
  followButton.setAttribute("aria-pressed", String(following));
  if (following) scroller.scrollTop = scroller.scrollHeight;
  showStatus(lastStatus);
});

filterForm.addEventListener("submit", (event) => {
  event.preventDefault();
  filterError.hidden = true;
  displayFilter = filterInput.value.trim();
  rowsBox.replaceChildren();
  socket.send({ filter: displayFilter });
});

// A capture that had ended when the page opened connects once, to hear how it ended.
if (finished) socket.stopReconnecting();
socket.start();
