// The capture view: wires the filter bar, the packet list, the details and the load progress,
// and keeps the state in the URL (?filter=&packet=&time=) so a reload or a copied link restores it.
import { Annotations } from "./annotations.js";
import { FilterBar } from "./filter-bar.js";
import { Marks } from "./marks.js";
import { PacketMenu } from "./packet-menu.js";
import { PacketDetail } from "./packet-detail.js";
import { PacketList } from "./packet-list.js";
import { otherViewers } from "./presence.js";
import { ReconnectingSocket } from "./socket.js";
import { csrfToken, debounce } from "./util.js";

const app = document.getElementById("capture-app");
const data = app.dataset;
const DEFAULT_TIME = "relative";
// Holding an arrow key moves through many packets: fetch details once it pauses.
const DETAIL_DELAY_MS = 60;
const SIZES_KEY = "captureExplorer.paneSizes";

const state = {
  filter: data.filter || "",
  timeFormat: data.timeFormat || DEFAULT_TIME,
  packet: data.packet ? Number(data.packet) : null,
  field: data.field || "",
  loaded: false,
};

const el = {
  timeFormat: document.getElementById("time-format"),
  loadState: document.getElementById("status-load"),
  loadProgress: document.getElementById("load-progress"),
  loadText: document.getElementById("load-text"),
  packets: document.getElementById("status-packets"),
  displayed: document.getElementById("status-displayed"),
  selected: document.getElementById("status-selected"),
  marked: document.getElementById("status-marked"),
  panes: document.getElementById("panes"),
  listRoot: document.getElementById("packet-list"),
};

// ---- URL state ----------------------------------------------------------------------------

function stateUrl() {
  const params = new URLSearchParams();
  if (state.filter) params.set("filter", state.filter);
  if (state.packet) params.set("packet", String(state.packet));
  if (state.packet && state.field) params.set("field", state.field);
  if (state.timeFormat !== DEFAULT_TIME) params.set("time", state.timeFormat);
  const query = params.toString();
  return `${location.pathname}${query ? `?${query}` : ""}`;
}

// The header's links marked data-carries-filter (the Flow graph draws the packets the list
// shows, Export… exports them) carry the current filter.
function updateFilterLinks() {
  for (const link of document.querySelectorAll("a[data-carries-filter]")) {
    const url = new URL(link.href);
    if (state.filter) url.searchParams.set("filter", state.filter);
    else url.searchParams.delete("filter");
    link.href = `${url.pathname}${url.search}`;
  }
}

function saveUrl(push) {
  updateFilterLinks();
  const url = stateUrl();
  if (url === `${location.pathname}${location.search}`) return;
  if (push) history.pushState(null, "", url);
  else history.replaceState(null, "", url);
}

// ---- status bar ---------------------------------------------------------------------------

function setLoadState(stateName, text, fraction = null) {
  el.loadState.dataset.state = stateName;
  el.loadText.textContent = text;
  el.loadProgress.hidden = fraction === null;
  if (fraction !== null) el.loadProgress.value = fraction;
}

function showCounts(total, displayed, provisional) {
  el.packets.dataset.value = String(total);
  el.packets.textContent = `Packets: ${total.toLocaleString()}`;
  if (provisional) {
    el.displayed.dataset.value = "";
    el.displayed.textContent = `Displayed: first ${displayed.toLocaleString()} (loading)`;
    return;
  }
  const percent = total ? ((100 * displayed) / total).toFixed(1) : "0.0";
  el.displayed.dataset.value = String(displayed);
  el.displayed.textContent = `Displayed: ${displayed.toLocaleString()} (${percent}%)`;
}

function showSelected(number) {
  el.selected.textContent = number ? `· Selected: ${number.toLocaleString()}` : "";
}

// ---- the three panes ----------------------------------------------------------------------

const detail = new PacketDetail(document.getElementById("packet-detail"), {
  detailUrl: data.detailUrl,
  menu: document.getElementById("field-menu"),
  onFilterAction: filterAction,
  field: state.field,
  onFieldSelect(field) {
    state.field = field;
    saveUrl(false);
  },
});

const loadDetail = debounce((number) => detail.load(number), DETAIL_DELAY_MS);

const list = new PacketList(el.listRoot, {
  packetsUrl: data.packetsUrl,
  onSelect(number) {
    state.packet = number;
    showSelected(number);
    saveUrl(false);
    loadDetail(number);
  },
  onCounts: showCounts,
  onError(message) {
    list.setMessage(message);
  },
});

const filterBar = new FilterBar({
  form: document.getElementById("filter-form"),
  input: document.getElementById("filter"),
  error: document.getElementById("filter-error"),
  completions: document.getElementById("filter-completions"),
  history: document.getElementById("filter-history"),
  historyButton: document.getElementById("filter-history-button"),
  clear: document.getElementById("filter-clear"),
  checkUrl: data.checkUrl,
  completeUrl: data.completeUrl,
  onApply: (text) => applyFilter(text, { push: true }),
});

/** Show the list through `text`; keep the selected packet if it still shows. */
let applying = 0;

async function applyFilter(text, { push = true, keepScroll = false } = {}) {
  const call = ++applying;
  if (!state.loaded) {
    // The engine is still loading: the API would wait for it anyway; apply when it is done.
    state.filter = text;
    if (push) saveUrl(true);
    return true;
  }
  if (text) {
    // Checking first costs little and keeps a refused filter from failing a list request.
    const problem = await filterBar.validate(text);
    if (call !== applying) return false;
    if (problem) {
      filterBar.showState("invalid", problem);
      return false;
    }
  }
  setLoadState("filtering", text ? "Filtering…" : "Loading…");
  const result = await list.load({ filter: text, timeFormat: state.timeFormat }, { keepScroll });
  if (result.stale) return false;
  if (result.error) {
    setLoadState("ready", "Ready");
    filterBar.showState("invalid", result.error);
    return false;
  }
  setLoadState("ready", "Ready");
  state.filter = text;
  if (text) filterBar.showState("valid");
  else filterBar.showState("empty");
  if (state.packet) {
    const shown = await list.selectNumber(state.packet, { center: !keepScroll });
    if (!shown) {
      state.packet = null;
      showSelected(null);
      loadDetail.cancel();
      detail.clear();
    } else {
      showSelected(state.packet);
    }
  }
  if (push) saveUrl(true);
  else saveUrl(false);
  return true;
}

function filterAction(action, expression) {
  if (!expression) return;
  const current = filterBar.text.trim();
  let text = expression;
  if (action.endsWith("-and") && current) text = `(${current}) && ${expression}`;
  else if (action.endsWith("-or") && current) text = `(${current}) || ${expression}`;
  else if (action === "apply-not") text = `!(${expression})`;
  filterBar.text = text;
  if (action.startsWith("apply")) filterBar.apply();
  else filterBar.focus();
}

el.timeFormat.addEventListener("change", async () => {
  state.timeFormat = el.timeFormat.value;
  saveUrl(false);
  if (state.loaded) await applyFilter(state.filter, { push: false, keepScroll: true });
});

window.addEventListener("popstate", async () => {
  const params = new URLSearchParams(location.search);
  const filter = params.get("filter") || "";
  const time = params.get("time") || DEFAULT_TIME;
  const packet = Number(params.get("packet")) || null;
  filterBar.text = filter;
  el.timeFormat.value = time;
  const sameList = filter === state.filter && time === state.timeFormat;
  state.timeFormat = el.timeFormat.value || DEFAULT_TIME;
  state.packet = packet;
  if (!state.loaded) {
    state.filter = filter;
    return;
  }
  if (!sameList) {
    await applyFilter(filter, { push: false });
  } else if (packet) {
    await list.selectNumber(packet, { center: true });
  } else {
    list.clearSelection();
    detail.clear();
    showSelected(null);
  }
});

// ---- marked packets -----------------------------------------------------------------------

const marks = new Marks({
  url: data.marksUrl,
  list,
  onChange(count) {
    el.marked.hidden = !count;
    el.marked.textContent = `· Marked: ${count.toLocaleString()}`;
  },
  onError: (message) => list.setMessage(message),
});

/** Select the next (step 1) or previous (step -1) marked packet the list displays. */
async function goToMark(step) {
  let number = state.packet;
  while ((number = marks.neighbour(number, step)) !== null) {
    if (await list.selectNumber(number, { center: true })) return;
  }
}

async function unmarkAll() {
  try {
    const response = await fetch(data.marksUrl, { method: "DELETE", headers: { "X-CSRFToken": csrfToken() } });
    if (response.ok) marks.set([]);
  } catch {
    list.setMessage("The server did not answer.");
  }
}

function packetAction(action, number) {
  switch (action) {
    case "is-marked":
      return marks.has(number);
    case "mark":
      return marks.toggle(number);
    case "next-mark":
      return goToMark(1);
    case "previous-mark":
      return goToMark(-1);
    case "unmark-all":
      return unmarkAll();
    default:
      return null;
  }
}

const packetMenu = new PacketMenu(document.getElementById("packet-menu"), {
  listRoot: el.listRoot,
  detailRoot: document.getElementById("packet-detail"),
  onSelect: (index) => list.selectIndex(index, { scroll: false }),
  onAction: packetAction,
});

document.addEventListener("keydown", (event) => {
  if (!(event.ctrlKey || event.metaKey) || event.altKey) return;
  const key = event.key.toLowerCase();
  if (key === "/") {
    // Ctrl-/ focuses the display filter, as in Wireshark.
    event.preventDefault();
    filterBar.focus();
  } else if (key === "m" && !event.shiftKey && state.packet && !event.target.closest("input, select, textarea")) {
    if (!document.querySelector("#packet-menu [data-action=mark]")) return; // read-only viewer
    event.preventDefault();
    marks.toggle(state.packet);
  } else if ((key === "n" || key === "b") && event.shiftKey) {
    event.preventDefault();
    goToMark(key === "n" ? 1 : -1);
  }
});

// The list's context-menu key and Shift+F10 open the packet menu at the selected row.
el.listRoot.addEventListener("keydown", (event) => {
  if (event.key !== "ContextMenu" && !(event.shiftKey && event.key === "F10")) return;
  const row = el.listRoot.querySelector(".packet-row.selected");
  if (!row || !state.packet) return;
  event.preventDefault();
  const rect = row.getBoundingClientRect();
  packetMenu.open(rect.left + 40, rect.bottom, state.packet);
});

// ---- loading the capture ------------------------------------------------------------------

async function loaded() {
  state.loaded = true;
  // Not "ready" yet: checking a filter from the URL takes a request, and until the list
  // holds the filtered rows the status must not say it is done (applyFilter says so).
  setLoadState("filtering", state.filter ? "Filtering…" : "Loading…");
  const applied = await applyFilter(state.filter, { push: false });
  if (!applied && state.filter) {
    // A bad filter in the URL: keep it in the bar with its error and show every packet.
    const error = document.getElementById("filter-error").textContent;
    state.filter = "";
    await applyFilter("", { push: false });
    filterBar.showState("invalid", error);
  }
  if (document.activeElement === document.body) el.listRoot.focus({ preventScroll: true });
}

// A dropped load socket is opened again this many times (the server then sends the progress
// from where the engine is); after that the API answers once the engine has loaded.
const LOAD_RETRIES = 3;
const LOAD_RETRY_MS = 500;

function followLoad() {
  const socket = new ReconnectingSocket(data.websocketPath, {
    retries: LOAD_RETRIES,
    firstRetryMs: LOAD_RETRY_MS,
    restartDelays: false,
    onGiveUp() {
      setLoadState("loading", "Loading…");
      loaded();
    },
    onMessage(message) {
      switch (message.type) {
        case "load.progress": {
          const fraction = message.file_size ? message.bytes_read / message.file_size : 0;
          setLoadState("loading", `Loading… ${Math.floor(fraction * 100)}%`, fraction);
          break;
        }
        case "load.rows":
          // The first rows, read while the engine loads; they are unfiltered. A reconnected
          // socket sends them again: they replace the ones shown, never add to them.
          if (!state.filter && Array.isArray(message.packets)) {
            list.showProvisional(message.packets, message.total);
          }
          break;
        case "load.done":
          socket.close();
          loaded();
          break;
        case "load.failed":
          socket.close();
          setLoadState("failed", `Loading failed: ${message.error}`);
          list.setMessage(`The capture could not be loaded: ${message.error}`);
          break;
        default:
          break;
      }
    },
  });
  socket.start();
}

// ---- resizable panes ----------------------------------------------------------------------

function restoreSizes() {
  try {
    const sizes = JSON.parse(localStorage.getItem(SIZES_KEY) || "{}");
    for (const name of ["list-h", "tree-h"]) {
      if (typeof sizes[name] === "number" && sizes[name] > 0) el.panes.style.setProperty(`--${name}`, `${sizes[name]}px`);
    }
  } catch {
    // Sizes are a convenience.
  }
}

function saveSize(name, pixels) {
  try {
    const sizes = JSON.parse(localStorage.getItem(SIZES_KEY) || "{}");
    sizes[name] = pixels;
    localStorage.setItem(SIZES_KEY, JSON.stringify(sizes));
  } catch {
    // Sizes are a convenience.
  }
}

function resize(splitter, pixels) {
  const name = splitter.dataset.resize;
  const limit = el.panes.clientHeight - 120;
  const size = Math.round(Math.min(Math.max(40, pixels), Math.max(40, limit)));
  el.panes.style.setProperty(`--${name}`, `${size}px`);
  saveSize(name, size);
}

el.panes.addEventListener("pointerdown", (event) => {
  const splitter = event.target.closest(".splitter[data-resize]");
  if (!splitter || event.button !== 0) return;
  event.preventDefault();
  const above = splitter.previousElementSibling;
  const startY = event.clientY;
  const startHeight = above.getBoundingClientRect().height;
  splitter.setPointerCapture(event.pointerId);
  splitter.classList.add("dragging");
  const move = (moveEvent) => resize(splitter, startHeight + moveEvent.clientY - startY);
  const up = () => {
    splitter.classList.remove("dragging");
    splitter.removeEventListener("pointermove", move);
    splitter.removeEventListener("pointerup", up);
    splitter.removeEventListener("pointercancel", up);
  };
  splitter.addEventListener("pointermove", move);
  splitter.addEventListener("pointerup", up);
  splitter.addEventListener("pointercancel", up);
});

el.panes.addEventListener("keydown", (event) => {
  const splitter = event.target.closest(".splitter[data-resize]");
  if (!splitter || (event.key !== "ArrowUp" && event.key !== "ArrowDown")) return;
  event.preventDefault();
  const height = splitter.previousElementSibling.getBoundingClientRect().height;
  resize(splitter, height + (event.key === "ArrowDown" ? 20 : -20));
});

// ---- start --------------------------------------------------------------------------------

restoreSizes();
showCounts(Number(data.total) || 0, 0, true);
el.displayed.textContent = "Displayed: …";
showSelected(state.packet);
setLoadState("loading", "Loading…");
followLoad();
marks.load();

// ---- annotations and live updates ---------------------------------------------------------

const annotations = new Annotations({
  panel: document.getElementById("annotations-panel"),
  toggle: document.getElementById("annotations-toggle"),
  list,
  selected: () => state.packet,
  onJump: jumpToPacket,
});

// The panel follows the list's selection: the packet a new comment goes to.
const selectPacket = list.onSelect;
list.onSelect = (number) => {
  selectPacket(number);
  annotations.setSelected(number);
};

async function jumpToPacket(number) {
  if (await list.selectNumber(number, { center: true })) {
    el.listRoot.focus({ preventScroll: true });
  } else {
    list.setMessage(`Packet ${number.toLocaleString()} is not displayed: clear the filter to see it.`);
  }
}

const presence = document.getElementById("status-presence");

function showPresence(message) {
  const others = otherViewers(message);
  presence.hidden = !others;
  presence.textContent = others ? `Also here: ${others}` : "";
}

// Live updates of the capture: who else is looking at it, and the annotations and marks
// anyone changes. After a drop, what was missed is fetched again.
const live = new ReconnectingSocket(document.getElementById("annotations-panel").dataset.livePath, {
  onMessage(message) {
    if (message.type === "presence") showPresence(message);
    else if (message.type.startsWith("annotation.")) annotations.apply(message);
    else if (message.type === "marks.changed" && Array.isArray(message.frames)) marks.set(message.frames);
  },
  onOpen({ reopened }) {
    if (!reopened) return;
    annotations.load();
    marks.load();
  },
});

annotations.load();
live.start();
