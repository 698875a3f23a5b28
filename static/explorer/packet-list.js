// The packet list: a virtual scroller over the API's pages. Rows have a fixed height, a spacer
// gives the scrollbar its length, and only the rows in view exist in the page.
import { colour, element, errorMessage, getJSON, isAbort } from "./util.js";

export const PAGE_SIZE = 200;
const MAX_CACHED_PAGES = 60;
// Browsers cap an element's height (Chromium near 33.5 million px, Firefox near 17.9 million).
// Past this the scroll position is scaled, so ten million rows still scroll end to end.
const MAX_SCROLL_PX = 8_000_000;
// Rows fetched ahead of the visible ones, so that scrolling rarely shows empty rows.
const PREFETCH_ROWS = 100;

const CELLS = ["number", "time", "source", "destination", "protocol", "length", "info"];

export class PacketList {
  constructor(root, { packetsUrl, onSelect, onCounts, onError }) {
    this.root = root;
    this.packetsUrl = packetsUrl;
    this.onSelect = onSelect;
    this.onCounts = onCounts;
    this.onError = onError;
    this.header = root.querySelector(".packet-header");
    this.scroller = root.querySelector(".packet-scroll");
    this.rowsBox = root.querySelector(".packet-rows");
    this.spacer = root.querySelector(".packet-spacer");
    this.message = root.querySelector(".packet-list-message");
    this.inner = element("div", "packet-rows-inner");
    this.rowsBox.append(this.inner);
    this.rowHeight = parseFloat(getComputedStyle(root).getPropertyValue("--row-height")) || 20;

    this.query = { filter: "", timeFormat: root.dataset.timeFormat || "relative" };
    this.generation = 0;
    this.pages = new Map(); // page index -> rows, oldest use first
    this.inflight = new Map(); // page index -> {controller, promise}
    this.total = 0;
    this.displayed = 0;
    this.provisional = false;
    this.loaded = false;
    this.selectedIndex = -1;
    this.selectedNumber = null;
    this.virtualTop = 0;
    this.expectedScrollTop = null;
    this.viewport = 0;
    this.pool = [];
    this.frame = 0;
    this.marks = new Set(); // marked frame numbers
    this.annotated = new Set(); // frame numbers with annotations

    this.scroller.addEventListener("scroll", () => this.onScroll(), { passive: true });
    new ResizeObserver(() => this.scheduleRender()).observe(this.scroller);
    this.inner.addEventListener("mousedown", (event) => this.onRowClick(event));
    root.addEventListener("keydown", (event) => this.onKey(event));
  }

  // ---- data -------------------------------------------------------------------------------

  pageUrl(query, page) {
    const params = new URLSearchParams({
      filter: query.filter,
      offset: String(page * PAGE_SIZE),
      limit: String(PAGE_SIZE),
      time_format: query.timeFormat,
    });
    return `${this.packetsUrl}?${params}`;
  }

  abortAll() {
    for (const { controller } of this.inflight.values()) controller.abort();
    this.inflight.clear();
  }

  /** Show rows sent while the engine loads the capture, until the real list replaces them. */
  showProvisional(rows, total) {
    if (this.loaded) return;
    this.provisional = true;
    this.pages = new Map([[0, rows]]);
    this.total = total;
    this.displayed = rows.length;
    this.root.classList.add("provisional");
    this.render();
  }

  /**
   * Switch to a new filter or time format. The first page is fetched before the old list is
   * dropped, so a filter the engine refuses leaves the list as it was.
   * Resolves to {ok: true}, {error: message} or {stale: true} when a newer load overtook it.
   */
  async load(query, { keepScroll = false } = {}) {
    const generation = ++this.generation;
    this.abortAll();
    const controller = new AbortController();
    let result;
    try {
      result = await getJSON(this.pageUrl(query, 0), { signal: controller.signal });
    } catch (error) {
      if (isAbort(error) || generation !== this.generation) return { stale: true };
      return { error: "The server did not answer." };
    }
    if (generation !== this.generation) return { stale: true };
    if (!result.ok || !result.data) {
      return { error: errorMessage(result.data, `The packet list failed (HTTP ${result.status}).`) };
    }
    this.query = { ...query };
    this.root.dataset.timeFormat = query.timeFormat;
    this.pages = new Map([[0, result.data.packets]]);
    this.provisional = false;
    this.loaded = true;
    this.root.classList.remove("provisional");
    this.setCounts(result.data.total, result.data.displayed);
    if (!keepScroll) {
      this.selectedIndex = -1;
      this.scrollToVirtual(0);
    } else if (this.selectedIndex >= this.displayed) {
      this.selectedIndex = -1;
    }
    this.render();
    return { ok: true };
  }

  setCounts(total, displayed) {
    const changed = total !== this.total || displayed !== this.displayed;
    this.total = total;
    this.displayed = displayed;
    this.root.setAttribute("aria-rowcount", String(displayed));
    if (changed) this.scheduleRender();
    this.onCounts(total, displayed, this.provisional);
  }

  /** Resolve to the rows of a page (from the cache or the API), or null if it failed. */
  page(index) {
    const cached = this.pages.get(index);
    if (cached) {
      // Refresh its place in the use order.
      this.pages.delete(index);
      this.pages.set(index, cached);
      return Promise.resolve(cached);
    }
    if (this.provisional) return Promise.resolve(null);
    const pending = this.inflight.get(index);
    if (pending) return pending.promise;
    const controller = new AbortController();
    const generation = this.generation;
    const query = this.query;
    const promise = (async () => {
      try {
        const result = await getJSON(this.pageUrl(query, index), { signal: controller.signal });
        if (generation !== this.generation) return null;
        if (!result.ok || !result.data) {
          this.onError(errorMessage(result.data, `The packet list failed (HTTP ${result.status}).`));
          return null;
        }
        this.pages.set(index, result.data.packets);
        this.evict();
        this.setCounts(result.data.total, result.data.displayed);
        this.scheduleRender();
        return result.data.packets;
      } catch (error) {
        if (!isAbort(error) && generation === this.generation) this.onError("The server did not answer.");
        return null;
      } finally {
        if (this.inflight.get(index)?.controller === controller) this.inflight.delete(index);
      }
    })();
    this.inflight.set(index, { controller, promise });
    return promise;
  }

  evict() {
    if (this.pages.size <= MAX_CACHED_PAGES) return;
    const [first, last] = this.visibleRange();
    const keepFrom = Math.floor(Math.max(0, first - PREFETCH_ROWS) / PAGE_SIZE);
    const keepTo = Math.floor((last + PREFETCH_ROWS) / PAGE_SIZE);
    for (const index of this.pages.keys()) {
      if (this.pages.size <= MAX_CACHED_PAGES) break;
      if (index < keepFrom || index > keepTo) this.pages.delete(index);
    }
  }

  rowAt(index) {
    const rows = this.pages.get(Math.floor(index / PAGE_SIZE));
    return rows ? rows[index % PAGE_SIZE] : undefined;
  }

  /** Resolve to the list index of packet `number`, or -1 if the filter hides it. */
  async indexOf(number) {
    if (this.provisional) {
      const rows = this.pages.get(0) || [];
      return rows.findIndex((row) => row.number === number);
    }
    const generation = this.generation;
    if (!this.query.filter.trim() && this.displayed === this.total) {
      // Without a filter the list is every packet in order: packet N is row N-1.
      return number >= 1 && number <= this.displayed ? number - 1 : -1;
    }
    // Rows come in increasing packet number, and packet N is at most row N-1:
    // a binary search over pages finds it in a few requests.
    const pageCount = Math.ceil(this.displayed / PAGE_SIZE);
    let low = 0;
    let high = Math.min(pageCount - 1, Math.floor((number - 1) / PAGE_SIZE));
    while (low <= high) {
      const middle = (low + high) >> 1;
      const rows = await this.page(middle);
      if (generation !== this.generation || !rows || !rows.length) return -1;
      if (number < rows[0].number) high = middle - 1;
      else if (number > rows[rows.length - 1].number) low = middle + 1;
      else {
        const offset = rows.findIndex((row) => row.number === number);
        return offset < 0 ? -1 : middle * PAGE_SIZE + offset;
      }
    }
    return -1;
  }

  // ---- geometry ---------------------------------------------------------------------------

  get scaled() {
    return this.displayed * this.rowHeight > MAX_SCROLL_PX;
  }

  get maxVirtual() {
    return Math.max(0, this.displayed * this.rowHeight - this.viewport);
  }

  get maxScroll() {
    return Math.max(0, Math.min(this.displayed * this.rowHeight, MAX_SCROLL_PX) - this.viewport);
  }

  toVirtual(scrollTop) {
    if (!this.scaled) return scrollTop;
    return this.maxScroll ? (scrollTop / this.maxScroll) * this.maxVirtual : 0;
  }

  toScroll(virtualTop) {
    if (!this.scaled) return virtualTop;
    return this.maxVirtual ? (virtualTop / this.maxVirtual) * this.maxScroll : 0;
  }

  get visibleRows() {
    return Math.max(1, Math.floor(this.viewport / this.rowHeight));
  }

  visibleRange() {
    const first = Math.floor(this.virtualTop / this.rowHeight);
    return [first, first + Math.ceil(this.viewport / this.rowHeight)];
  }

  onScroll() {
    const scrollTop = this.scroller.scrollTop;
    // A scroll we caused keeps the exact virtual position we asked for; scaled, one pixel
    // of scrollbar may be several rows, and mapping back would land beside the target.
    if (this.expectedScrollTop === null || Math.abs(scrollTop - this.expectedScrollTop) >= 1) {
      this.virtualTop = this.toVirtual(scrollTop);
    }
    this.expectedScrollTop = null;
    this.scheduleRender();
  }

  scrollToVirtual(virtualTop) {
    this.virtualTop = Math.min(Math.max(0, virtualTop), this.maxVirtual);
    const scrollTop = this.toScroll(this.virtualTop);
    if (Math.abs(this.scroller.scrollTop - scrollTop) >= 1) {
      this.expectedScrollTop = scrollTop;
      this.scroller.scrollTop = scrollTop;
    }
    this.scheduleRender();
  }

  /** Scroll so that row `index` is in view: minimally, or centred. */
  scrollToIndex(index, { center = false } = {}) {
    const top = index * this.rowHeight;
    if (center) {
      this.scrollToVirtual(top - (this.viewport - this.rowHeight) / 2);
    } else if (top < this.virtualTop) {
      this.scrollToVirtual(top);
    } else if (top + this.rowHeight > this.virtualTop + this.viewport) {
      this.scrollToVirtual(top + this.rowHeight - this.viewport);
    }
  }

  // ---- rendering --------------------------------------------------------------------------

  scheduleRender() {
    if (this.frame) return;
    this.frame = requestAnimationFrame(() => {
      this.frame = 0;
      this.render();
    });
  }

  layout() {
    this.viewport = this.scroller.clientHeight;
    const height = Math.min(this.displayed * this.rowHeight, MAX_SCROLL_PX);
    this.rowsBox.style.height = `${this.viewport}px`;
    this.spacer.style.height = `${Math.max(0, height - this.viewport)}px`;
    // The header sits outside the scroller: keep its columns over the rows' columns.
    this.header.style.paddingRight = `${this.scroller.offsetWidth - this.scroller.clientWidth}px`;
    this.virtualTop = Math.min(Math.max(0, this.virtualTop), this.maxVirtual);
  }

  makeRow() {
    const row = element("div", "packet-row");
    row.setAttribute("role", "row");
    for (const name of CELLS) {
      const cell = element("span", `cell c-${name}`);
      cell.setAttribute("role", "gridcell");
      row.append(cell);
    }
    return row;
  }

  fill(row, index) {
    const data = this.rowAt(index);
    const key = data ? `${this.generation}:${index}:${data.number}` : `${this.generation}:${index}:-`;
    if (row.dataset.key !== key) {
      row.dataset.key = key;
      row.dataset.index = String(index);
      row.setAttribute("aria-rowindex", String(index + 1));
      const cells = row.children;
      if (data) {
        CELLS.forEach((name, i) => {
          cells[i].textContent = String(data[name] ?? "");
        });
        row.dataset.number = String(data.number);
        row.classList.remove("placeholder");
        row.style.backgroundColor = colour(data.bg);
        row.style.color = colour(data.fg);
      } else {
        CELLS.forEach((name, i) => {
          cells[i].textContent = "";
        });
        cells[0].textContent = "…";
        delete row.dataset.number;
        row.classList.add("placeholder");
        row.style.backgroundColor = "";
        row.style.color = "";
      }
    }
    row.classList.toggle("marked", Boolean(data) && this.marks.has(data.number));
    row.classList.toggle("annotated", Boolean(data) && this.annotated.has(data.number));
    const selected = index === this.selectedIndex;
    row.classList.toggle("selected", selected);
    row.setAttribute("aria-selected", selected ? "true" : "false");
  }

  render() {
    this.layout();
    const [first] = this.visibleRange();
    const count = Math.min(Math.ceil(this.viewport / this.rowHeight) + 1, Math.max(0, this.displayed - first));
    while (this.pool.length < count) {
      const row = this.makeRow();
      this.pool.push(row);
      this.inner.append(row);
    }
    this.pool.forEach((row, i) => {
      if (i < count) {
        row.hidden = false;
        this.fill(row, first + i);
      } else {
        row.hidden = true;
      }
    });
    this.inner.style.transform = `translateY(${-(this.virtualTop - first * this.rowHeight)}px)`;
    this.showMessage();
    // Fetch the pages in view and a margin around them.
    if (!this.provisional && this.loaded && this.displayed) {
      const from = Math.floor(Math.max(0, first - PREFETCH_ROWS) / PAGE_SIZE);
      const to = Math.floor(Math.min(this.displayed - 1, first + count + PREFETCH_ROWS) / PAGE_SIZE);
      for (let index = from; index <= to; index++) {
        if (!this.pages.has(index) && !this.inflight.has(index)) this.page(index);
      }
    }
  }

  showMessage() {
    let text = "";
    if (this.loaded && !this.displayed) {
      text = this.query.filter.trim() ? "No packets match the display filter." : "The capture has no packets.";
    }
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  setMessage(text) {
    this.message.textContent = text;
    this.message.hidden = !text;
  }

  /** Show these frame numbers as marked. */
  setMarks(numbers) {
    this.marks = new Set(numbers);
    this.render();
  }

  /** Show a comment glyph in the No. cell of these frame numbers. */
  setAnnotated(numbers) {
    this.annotated = new Set(numbers);
    this.render();
  }

  // ---- selection --------------------------------------------------------------------------

  /** Select row `index`; once its packet number is known, report it through onSelect. */
  async selectIndex(index, { scroll = true, center = false, notify = true } = {}) {
    if (!this.displayed) return;
    index = Math.min(Math.max(0, index), this.displayed - 1);
    this.selectedIndex = index;
    if (scroll) this.scrollToIndex(index, { center });
    this.render();
    let data = this.rowAt(index);
    if (!data) {
      const rows = await this.page(Math.floor(index / PAGE_SIZE));
      if (!rows || this.selectedIndex !== index) return;
      data = rows[index % PAGE_SIZE];
      if (!data) return;
    }
    const changed = data.number !== this.selectedNumber;
    this.selectedNumber = data.number;
    if (notify && changed) this.onSelect(data.number);
  }

  /** Select packet `number` if the list shows it; resolve to whether it does. */
  async selectNumber(number, { center = true, notify = true } = {}) {
    const generation = this.generation;
    const index = await this.indexOf(number);
    if (generation !== this.generation) return false;
    if (index < 0) {
      this.clearSelection();
      return false;
    }
    this.selectedNumber = notify ? null : number;
    await this.selectIndex(index, { center, notify });
    return true;
  }

  clearSelection() {
    this.selectedIndex = -1;
    this.selectedNumber = null;
    this.render();
  }

  onRowClick(event) {
    if (event.button !== 0) return;
    const row = event.target.closest(".packet-row");
    if (!row || row.dataset.index === undefined) return;
    this.root.focus({ preventScroll: true });
    event.preventDefault();
    this.selectIndex(Number(row.dataset.index), { scroll: true });
  }

  onKey(event) {
    if (event.target !== this.root || event.altKey || event.ctrlKey || event.metaKey) return;
    const current = this.selectedIndex;
    const page = Math.max(1, this.visibleRows - 1);
    const moves = {
      ArrowDown: current < 0 ? 0 : current + 1,
      ArrowUp: current < 0 ? 0 : current - 1,
      PageDown: current < 0 ? 0 : current + page,
      PageUp: current < 0 ? 0 : current - page,
      Home: 0,
      End: this.displayed - 1,
    };
    if (!(event.key in moves)) return;
    event.preventDefault();
    this.selectIndex(moves[event.key], { scroll: true });
  }
}
