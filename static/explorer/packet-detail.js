// Packet details and bytes: the server renders the tree and hex dumps (an htmx fragment);
// this links them: a selected field highlights its bytes, a clicked byte selects its field.
import { onMenuKey, openMenuAt } from "./menu.js";
import { element } from "./util.js";

const EXPANDED_KEY = "captureExplorer.expandedSubtrees";
const EXPANDED_LIMIT = 400;
const FIELD_NAME = /^([A-Za-z_][A-Za-z0-9_.-]*)(?:\s|$)/;

function loadExpanded() {
  try {
    const value = JSON.parse(localStorage.getItem(EXPANDED_KEY) || "[]");
    return new Set(Array.isArray(value) ? value.filter((item) => typeof item === "string") : []);
  } catch {
    return new Set();
  }
}

function labelOf(node) {
  return node.querySelector(".tree-label")?.textContent || "";
}

/**
 * Return what identifies a subtree across packets, as Wireshark's subtree types do: the
 * field name of its filter ("tcp.flags"), else its label up to the colon, digits masked.
 */
export function subtreeKey(node) {
  const match = (node.dataset.filter || "").match(FIELD_NAME);
  if (match) return `f:${match[1]}`;
  return `l:${labelOf(node).split(":")[0].replace(/\d+/g, "#").slice(0, 80)}`;
}

function visible(node) {
  return typeof node.checkVisibility === "function" ? node.checkVisibility() : node.offsetParent !== null;
}

/** Return the tree node whose subtree holds node (null at the top). */
function parentNode(node) {
  const own = node.tagName === "SUMMARY" ? node.parentElement : null;
  const details = (own ? own.parentElement : node).closest("details.tree-branch");
  return details ? details.querySelector(":scope > summary.tree-node") : null;
}

export class PacketDetail {
  constructor(container, { detailUrl, menu, onFilterAction, onFieldSelect = () => {}, field = "" }) {
    this.container = container;
    this.onFieldSelect = onFieldSelect;
    // A field named in the URL: selected (and revealed) once its packet's tree is shown.
    this.pendingField = field;
    this.detailUrl = detailUrl;
    this.menu = menu;
    this.onFilterAction = onFilterAction;
    this.expanded = loadExpanded();
    this.selected = null;
    this.lastKey = null;
    this.highlighted = [];
    this.dumps = new Map();
    this.menuNode = null;
    // The button's glyph comes from CSS, so that a node's textContent stays its label.
    this.menuButton = element("button", "node-menu-button");
    this.menuButton.type = "button";
    this.menuButton.title = "Field actions";
    this.menuButton.setAttribute("aria-label", "Field actions");
    this.menuButton.setAttribute("aria-haspopup", "menu");

    container.addEventListener("click", (event) => this.onClick(event));
    container.addEventListener("dblclick", (event) => this.onDoubleClick(event));
    container.addEventListener("contextmenu", (event) => this.onContextMenu(event));
    container.addEventListener("keydown", (event) => this.onKey(event));
    // toggle does not bubble: listen while it passes down.
    container.addEventListener("toggle", (event) => this.onToggle(event), true);
    // A slow answer for a packet no longer selected must not replace the current one.
    container.addEventListener("htmx:beforeSwap", (event) => {
      if (event.detail.requestConfig?.path !== this.currentUrl()) event.detail.shouldSwap = false;
    });
    container.addEventListener("htmx:afterSwap", () => this.init());
    container.addEventListener("htmx:responseError", (event) => {
      if (event.detail.requestConfig?.path !== this.currentUrl()) return;
      this.showMessage(`The packet details failed to load (HTTP ${event.detail.xhr.status}).`);
    });
    container.addEventListener("htmx:sendError", () => this.showMessage("The server did not answer."));

    menu.addEventListener("click", (event) => this.onMenuClick(event));
    menu.addEventListener("keydown", (event) => this.onMenuKey(event));
    document.addEventListener("mousedown", (event) => {
      if (!menu.hidden && !menu.contains(event.target) && event.target !== this.menuButton) this.closeMenu();
    });
    window.addEventListener("resize", () => this.closeMenu());
    window.addEventListener("blur", () => this.closeMenu());

    const tree = container.querySelector(".detail-tree");
    this.current = tree && !tree.dataset.pending && tree.dataset.packet ? Number(tree.dataset.packet) : null;
    this.init();
  }

  // ---- loading ----------------------------------------------------------------------------

  currentUrl() {
    return this.current === null ? null : this.detailUrl.replace("{number}", String(this.current));
  }

  /** Fetch and show packet `number`; hx-sync on the container queues only the latest request. */
  load(number) {
    if (number === this.current) return;
    this.current = number;
    window.htmx
      .ajax("GET", this.currentUrl(), { source: this.container, target: this.container, swap: "innerHTML" })
      .catch(() => this.showMessage("The server did not answer."));
  }

  /** Show the empty panes; an answer still on its way is dropped when it comes. */
  clear() {
    this.current = null;
    this.showMessage("No packet selected.", { muted: true });
  }

  showMessage(text, { muted = false } = {}) {
    const tree = element("section", "pane detail-tree");
    tree.id = "detail-tree";
    tree.setAttribute("aria-label", "Packet details");
    tree.append(element("p", muted ? "detail-message muted" : "detail-message detail-error", text));
    const splitter = this.container.querySelector(".splitter");
    const bytes = element("section", "pane detail-bytes");
    bytes.id = "detail-bytes";
    bytes.setAttribute("aria-label", "Packet bytes");
    this.container.replaceChildren(tree, splitter || element("div", "splitter"), bytes);
    this.init();
  }

  init() {
    this.closeMenu();
    this.selected = null;
    this.highlighted = [];
    this.tree = this.container.querySelector("#packet-tree");
    this.dumps = new Map();
    for (const dump of this.container.querySelectorAll(".hex-dump")) {
      this.dumps.set(Number(dump.dataset.source), {
        element: dump,
        hex: Array.from(dump.querySelectorAll(".hex-byte")),
        ascii: Array.from(dump.querySelectorAll(".ascii-byte")),
      });
    }
    if (!this.tree) return;
    // Open the subtrees the user opened in other packets, as Wireshark does.
    for (const summary of this.tree.querySelectorAll("summary.tree-node")) {
      if (this.expanded.has(subtreeKey(summary))) summary.parentElement.open = true;
    }
    if (this.pendingField) {
      const named = Array.from(this.tree.querySelectorAll(".tree-node[data-filter]")).find(
        (node) => subtreeKey(node) === `f:${this.pendingField}`,
      );
      this.pendingField = "";
      if (named) {
        this.reveal(named);
        this.selectNode(named, { focus: false });
        return;
      }
    }
    // Keep the same field selected from packet to packet.
    if (this.lastKey && this.lastKey.startsWith("f:")) {
      const same = Array.from(this.tree.querySelectorAll(".tree-node[data-filter]")).find(
        (node) => subtreeKey(node) === this.lastKey && visible(node),
      );
      if (same) this.selectNode(same, { focus: false });
    }
  }

  // ---- tree -------------------------------------------------------------------------------

  onToggle(event) {
    const details = event.target;
    if (!(details instanceof HTMLDetailsElement) || !details.classList.contains("tree-branch")) return;
    const key = subtreeKey(details.querySelector(":scope > summary"));
    this.expanded.delete(key);
    if (details.open) this.expanded.add(key);
    while (this.expanded.size > EXPANDED_LIMIT) this.expanded.delete(this.expanded.values().next().value);
    try {
      localStorage.setItem(EXPANDED_KEY, JSON.stringify(Array.from(this.expanded)));
    } catch {
      // Storage full or disabled: remembering is a convenience.
    }
  }

  toggle(node, open) {
    if (node.tagName !== "SUMMARY") return;
    const details = node.parentElement;
    details.open = open === undefined ? !details.open : open;
  }

  selectNode(node, { scroll = true, focus = true } = {}) {
    if (this.selected && this.selected !== node) {
      this.selected.classList.remove("selected");
      this.selected.setAttribute("aria-selected", "false");
    }
    this.selected = node;
    this.lastKey = subtreeKey(node);
    this.onFieldSelect(this.lastKey.startsWith("f:") ? this.lastKey.slice(2) : "");
    node.classList.add("selected");
    node.setAttribute("aria-selected", "true");
    node.append(this.menuButton);
    if (focus) node.focus({ preventScroll: true });
    if (scroll) node.scrollIntoView({ block: "nearest" });
    this.highlight(node);
  }

  reveal(node) {
    let details = (node.tagName === "SUMMARY" ? node.parentElement.parentElement : node).closest("details");
    while (details) {
      details.open = true;
      details = details.parentElement.closest("details");
    }
  }

  visibleNodes() {
    return this.tree ? Array.from(this.tree.querySelectorAll(".tree-node")).filter(visible) : [];
  }

  onClick(event) {
    const tab = event.target.closest(".bytes-tab");
    if (tab) {
      this.showSource(Number(tab.dataset.source));
      return;
    }
    const byte = event.target.closest(".hex-byte, .ascii-byte");
    if (byte) {
      this.selectByte(Number(byte.closest(".hex-dump").dataset.source), Number(byte.dataset.offset));
      return;
    }
    if (event.target.closest(".node-menu-button")) {
      event.preventDefault();
      const rect = this.menuButton.getBoundingClientRect();
      this.openMenu(this.selected, rect.left, rect.bottom);
      return;
    }
    const node = event.target.closest(".tree-node");
    if (!node) return;
    if (node.tagName === "SUMMARY") {
      // A click selects, as in Wireshark; the arrow, a double click or the keyboard toggle.
      event.preventDefault();
      if (event.target.closest(".tree-toggle")) this.toggle(node);
    }
    this.selectNode(node, { scroll: false });
  }

  onDoubleClick(event) {
    const node = event.target.closest("summary.tree-node");
    if (node && !event.target.closest(".tree-toggle, .node-menu-button")) this.toggle(node);
  }

  onContextMenu(event) {
    const node = event.target.closest(".tree-node");
    if (!node) return;
    event.preventDefault();
    this.selectNode(node, { scroll: false });
    this.openMenu(node, event.clientX, event.clientY);
  }

  onKey(event) {
    const node = event.target.closest(".tree-node");
    if (!node || event.target.closest(".node-menu-button") || event.altKey || event.ctrlKey || event.metaKey) {
      return;
    }
    const nodes = () => this.visibleNodes();
    let target = null;
    switch (event.key) {
      case "ArrowDown":
      case "ArrowUp": {
        const list = nodes();
        const index = list.indexOf(node) + (event.key === "ArrowDown" ? 1 : -1);
        target = list[Math.min(Math.max(index, 0), list.length - 1)];
        break;
      }
      case "Home":
        target = nodes()[0];
        break;
      case "End":
        target = nodes().at(-1);
        break;
      case "ArrowRight":
        if (node.tagName === "SUMMARY" && !node.parentElement.open) this.toggle(node, true);
        else if (node.tagName === "SUMMARY") target = node.parentElement.querySelector(":scope > ul .tree-node");
        break;
      case "ArrowLeft":
        if (node.tagName === "SUMMARY" && node.parentElement.open) this.toggle(node, false);
        else target = parentNode(node);
        break;
      case "Enter":
      case " ":
        this.toggle(node);
        break;
      case "ContextMenu":
        {
          const rect = node.getBoundingClientRect();
          this.openMenu(node, rect.left + 24, rect.bottom);
        }
        break;
      case "F10":
        if (!event.shiftKey) return;
        {
          const rect = node.getBoundingClientRect();
          this.openMenu(node, rect.left + 24, rect.bottom);
        }
        break;
      default:
        return;
    }
    event.preventDefault();
    if (target) this.selectNode(target);
  }

  // ---- bytes ------------------------------------------------------------------------------

  showSource(index) {
    if (!this.dumps.has(index)) return;
    for (const [source, dump] of this.dumps) dump.element.classList.toggle("active", source === index);
    for (const tab of this.container.querySelectorAll(".bytes-tab")) {
      const active = Number(tab.dataset.source) === index;
      tab.classList.toggle("active", active);
      tab.setAttribute("aria-selected", active ? "true" : "false");
    }
    this.activeSource = index;
  }

  highlight(node) {
    for (const span of this.highlighted) span.classList.remove("highlight");
    this.highlighted = [];
    if (node.dataset.start === undefined) return;
    const source = Number(node.dataset.source);
    const dump = this.dumps.get(source);
    if (!dump) return;
    this.showSource(source);
    const start = Number(node.dataset.start);
    const end = Math.min(start + Number(node.dataset.length), dump.hex.length);
    for (let offset = start; offset < end; offset++) {
      dump.hex[offset].classList.add("highlight");
      dump.ascii[offset].classList.add("highlight");
      this.highlighted.push(dump.hex[offset], dump.ascii[offset]);
    }
    if (end > start) {
      const pane = dump.element.closest(".hex-dumps");
      const line = dump.hex[start].parentElement.parentElement;
      const top = line.getBoundingClientRect().top - pane.getBoundingClientRect().top + pane.scrollTop;
      // Scroll the bytes pane only: scrollIntoView would move the tree pane as well.
      if (top < pane.scrollTop || top + line.offsetHeight > pane.scrollTop + pane.clientHeight) {
        pane.scrollTop = Math.max(0, top - pane.clientHeight / 3);
      }
    }
  }

  /** Select the smallest field covering a byte, opening the subtrees above it. */
  selectByte(source, offset) {
    if (!this.tree) return;
    let best = null;
    let bestLength = Infinity;
    for (const node of this.tree.querySelectorAll(".tree-node[data-start]")) {
      if (Number(node.dataset.source) !== source) continue;
      const start = Number(node.dataset.start);
      const length = Number(node.dataset.length);
      // On a tie the later node wins: it is the deeper one.
      if (length > 0 && start <= offset && offset < start + length && length <= bestLength) {
        best = node;
        bestLength = length;
      }
    }
    if (!best) return;
    this.reveal(best);
    this.selectNode(best);
  }

  // ---- field menu -------------------------------------------------------------------------

  openMenu(node, x, y) {
    if (!node) return;
    this.menuNode = node;
    const hasFilter = Boolean(node.dataset.filter);
    for (const button of this.menu.querySelectorAll("button")) {
      button.disabled = !hasFilter && button.dataset.action !== "copy-label";
    }
    openMenuAt(this.menu, x, y);
  }

  closeMenu() {
    if (this.menu.hidden) return;
    this.menu.hidden = true;
    if (this.menu.contains(document.activeElement)) this.menuNode?.focus({ preventScroll: true });
  }

  onMenuClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    const node = this.menuNode;
    this.closeMenu();
    if (!node) return;
    const action = button.dataset.action;
    if (action === "copy-filter" || action === "copy-label") {
      const text = action === "copy-filter" ? node.dataset.filter : labelOf(node);
      navigator.clipboard?.writeText(text).catch(() => {});
      return;
    }
    this.onFilterAction(action, node.dataset.filter);
  }

  onMenuKey(event) {
    onMenuKey(this.menu, event, () => this.closeMenu());
  }
}
