// The packet list's context menu: mark the packet, and open the views that start from it
// (follow its streams, the flow graph of its stream), as the server lists them in its details.
import { onMenuKey, openMenuAt } from "./menu.js";
import { element } from "./util.js";

export class PacketMenu {
  constructor(menu, { listRoot, detailRoot, onSelect, onAction }) {
    this.menu = menu;
    this.listRoot = listRoot;
    this.detailRoot = detailRoot;
    this.onSelect = onSelect;
    this.onAction = onAction;
    this.number = null;
    this.views = menu.querySelector(".packet-menu-views");

    listRoot.addEventListener("contextmenu", (event) => this.onContextMenu(event));
    menu.addEventListener("click", (event) => this.onClick(event));
    menu.addEventListener("keydown", (event) => onMenuKey(menu, event, () => this.close()));
    // The details of the packet arrive after the menu opens: list its views then.
    detailRoot.addEventListener("htmx:afterSwap", () => this.listViews());
    document.addEventListener("pointerdown", (event) => {
      if (!menu.hidden && !menu.contains(event.target)) this.close();
    });
    window.addEventListener("resize", () => this.close());
    window.addEventListener("blur", () => this.close());
  }

  async onContextMenu(event) {
    const row = event.target.closest(".packet-row");
    if (!row || row.dataset.number === undefined) return;
    event.preventDefault();
    this.number = Number(row.dataset.number);
    await this.onSelect(Number(row.dataset.index));
    this.open(event.clientX, event.clientY);
  }

  /** Open the menu for the selected packet, at (x, y). */
  open(x, y, number = this.number) {
    this.number = number;
    if (!number) return;
    // Read-only viewers have no mark item.
    const mark = this.menu.querySelector("[data-action=mark]");
    if (mark) mark.textContent = this.onAction("is-marked", number) ? "Unmark Packet" : "Mark Packet";
    this.listViews();
    openMenuAt(this.menu, x, y);
  }

  listViews() {
    this.views.replaceChildren();
    const tree = this.detailRoot.querySelector("#detail-tree");
    const links = Number(tree?.dataset.packet) === this.number ? tree.querySelectorAll(".follow-links a") : [];
    for (const link of links) {
      // A follow link reads "<hidden>Follow </hidden>TCP stream"; its last text is the kind.
      const kind = link.lastChild.textContent.trim().replace(/ stream$/, "");
      const label = link.id === "flow-stream-link" ? link.textContent.trim() : `Follow ${kind} Stream`;
      const item = element("a", "menu-link", label);
      item.href = link.getAttribute("href");
      item.setAttribute("role", "menuitem");
      this.views.append(item);
    }
    this.views.hidden = !links.length;
  }

  close() {
    if (this.menu.hidden) return;
    this.menu.hidden = true;
    if (this.menu.contains(document.activeElement)) this.listRoot.focus({ preventScroll: true });
  }

  onClick(event) {
    const button = event.target.closest("button[data-action]");
    if (!button || button.disabled) return;
    this.close();
    this.onAction(button.dataset.action, this.number);
  }
}
