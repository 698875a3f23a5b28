// The display filter bar: syntax check while typing, field name completion, recent filters.
import { debounce, element, getJSON, isAbort } from "./util.js";

const RECENT_KEY = "captureExplorer.recentFilters";
const RECENT_LIMIT = 20;
const CHECK_DELAY_MS = 150;
// The field name being typed: the run of name characters that ends at the caret.
const FIELD_AT_END = /[A-Za-z_][A-Za-z0-9_.-]*$/;
const KEYWORDS = new Set(["and", "or", "not", "xor", "eq", "ne", "gt", "lt", "ge", "le", "contains", "matches", "in"]);

function loadRecent() {
  try {
    const value = JSON.parse(localStorage.getItem(RECENT_KEY) || "[]");
    return Array.isArray(value) ? value.filter((item) => typeof item === "string") : [];
  } catch {
    return [];
  }
}

/** A list of choices under the input, driven by the keyboard or the mouse. */
class Dropdown {
  constructor(list, input, onPick) {
    this.list = list;
    this.input = input;
    this.onPick = onPick;
    this.items = [];
    this.active = -1;
    // mousedown, not click: the input must not lose focus (and close the list) first.
    list.addEventListener("mousedown", (event) => {
      const li = event.target.closest("li[data-index]");
      if (!li) return;
      event.preventDefault();
      this.onPick(this.items[Number(li.dataset.index)]);
    });
  }

  get open() {
    return !this.list.hidden;
  }

  show(items, render) {
    this.items = items;
    this.active = -1;
    this.list.replaceChildren(
      ...items.map((item, index) => {
        const li = render(item);
        li.dataset.index = String(index);
        li.setAttribute("role", "option");
        li.id = `${this.list.id}-${index}`;
        return li;
      }),
    );
    this.list.hidden = items.length === 0;
    this.sync();
  }

  hide() {
    this.list.hidden = true;
    this.active = -1;
    this.sync();
  }

  move(delta) {
    if (!this.items.length) return;
    const count = this.items.length;
    this.active = this.active < 0 ? (delta > 0 ? 0 : count - 1) : (this.active + delta + count) % count;
    this.sync();
    this.list.children[this.active]?.scrollIntoView({ block: "nearest" });
  }

  current() {
    return this.active >= 0 ? this.items[this.active] : undefined;
  }

  sync() {
    Array.from(this.list.children).forEach((li, index) => {
      li.classList.toggle("active", index === this.active);
      li.setAttribute("aria-selected", index === this.active ? "true" : "false");
    });
    if (this.active >= 0) this.input.setAttribute("aria-activedescendant", `${this.list.id}-${this.active}`);
    else this.input.removeAttribute("aria-activedescendant");
  }
}

export class FilterBar {
  constructor({ form, input, error, completions, history, historyButton, clear, checkUrl, completeUrl, onApply }) {
    this.form = form;
    this.input = input;
    this.error = error;
    this.checkUrl = checkUrl;
    this.completeUrl = completeUrl;
    this.onApply = onApply;
    this.historyButton = historyButton;
    this.checkController = null;
    this.completeController = null;
    this.completions = new Dropdown(completions, input, (item) => this.acceptCompletion(item.field));
    this.history = new Dropdown(history, input, (text) => {
      this.history.hide();
      this.text = text;
      this.apply();
    });
    this.changed = debounce(() => {
      this.check();
      this.complete();
    }, CHECK_DELAY_MS);

    input.addEventListener("input", () => {
      this.history.hide();
      this.changed();
    });
    input.addEventListener("keydown", (event) => this.onKey(event));
    input.addEventListener("blur", () => {
      this.completions.hide();
      this.history.hide();
      this.expanded();
    });
    form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.apply();
    });
    clear.addEventListener("click", (event) => {
      event.preventDefault();
      this.text = "";
      this.apply();
    });
    historyButton.hidden = false;
    historyButton.addEventListener("mousedown", (event) => event.preventDefault());
    historyButton.addEventListener("click", () => {
      if (this.history.open) this.history.hide();
      else this.showHistory();
      this.input.focus();
      this.expanded();
    });
    if (this.text.trim()) this.check();
  }

  get text() {
    return this.input.value;
  }

  set text(value) {
    this.input.value = value;
    this.changed.cancel();
    this.completions.hide();
    this.check();
  }

  focus() {
    this.input.focus();
    this.input.select();
  }

  async apply() {
    this.changed.cancel();
    this.completions.hide();
    this.history.hide();
    this.expanded();
    const text = this.text.trim();
    const ok = await this.onApply(text);
    if (ok && text) this.remember(text);
  }

  remember(text) {
    const recent = [text, ...loadRecent().filter((item) => item !== text)].slice(0, RECENT_LIMIT);
    try {
      localStorage.setItem(RECENT_KEY, JSON.stringify(recent));
    } catch {
      // Storage full or disabled: recent filters are a convenience.
    }
  }

  showHistory() {
    const recent = loadRecent();
    this.completions.hide();
    if (!recent.length) {
      const li = element("li", "dropdown-empty", "No recent filters");
      this.history.show([], () => li);
      this.history.list.replaceChildren(li);
      this.history.list.hidden = false;
      return;
    }
    this.history.show(recent, (text) => {
      const li = element("li");
      li.append(element("span", "history-filter", text));
      li.title = text;
      return li;
    });
  }

  expanded() {
    const open = this.completions.open || this.history.open;
    this.input.setAttribute("aria-expanded", open ? "true" : "false");
    this.historyButton.setAttribute("aria-expanded", this.history.open ? "true" : "false");
  }

  /** Show the engine's verdict: green when valid, red with its message when not. */
  showState(state, message = "") {
    this.input.classList.toggle("filter-valid", state === "valid");
    this.input.classList.toggle("filter-invalid", state === "invalid");
    this.input.setAttribute("aria-invalid", state === "invalid" ? "true" : "false");
    this.error.textContent = message;
    this.error.hidden = !message;
  }

  async check() {
    this.checkController?.abort();
    const text = this.text.trim();
    if (!text) {
      this.showState("empty");
      return;
    }
    const controller = (this.checkController = new AbortController());
    try {
      const { ok, data } = await getJSON(`${this.checkUrl}?${new URLSearchParams({ filter: text })}`, {
        signal: controller.signal,
      });
      if (controller !== this.checkController || !ok || !data) return;
      if (data.valid) this.showState("valid");
      else this.showState("invalid", data.error || "Invalid display filter");
    } catch (error) {
      if (!isAbort(error)) this.showState("empty");
    }
  }

  /** Resolve to the engine's message if `text` is not a valid filter, else null. */
  async validate(text) {
    try {
      const { ok, data } = await getJSON(`${this.checkUrl}?${new URLSearchParams({ filter: text })}`);
      if (ok && data && !data.valid) return data.error || "Invalid display filter";
    } catch {
      // Let the packet list request report the problem.
    }
    return null;
  }

  /** Return the field name being typed at the caret, with where it starts, or null. */
  tokenAtCaret() {
    const caret = this.input.selectionStart ?? this.text.length;
    if (caret !== (this.input.selectionEnd ?? caret)) return null;
    const before = this.text.slice(0, caret);
    // Inside a quoted string the words are values, not field names.
    if ((before.match(/(?<!\\)"/g) || []).length % 2) return null;
    const match = before.match(FIELD_AT_END);
    if (!match) return null;
    const start = caret - match[0].length;
    // Part of a number or an address such as 10.0.0.1 or 00:1b:...
    if (start > 0 && /[0-9:]/.test(before[start - 1])) return null;
    if (KEYWORDS.has(match[0].toLowerCase())) return null;
    return { text: match[0], start, end: caret };
  }

  async complete() {
    this.completeController?.abort();
    const token = document.activeElement === this.input ? this.tokenAtCaret() : null;
    if (!token) {
      this.completions.hide();
      this.expanded();
      return;
    }
    const controller = (this.completeController = new AbortController());
    try {
      const { ok, data } = await getJSON(`${this.completeUrl}?${new URLSearchParams({ prefix: token.text })}`, {
        signal: controller.signal,
      });
      if (controller !== this.completeController || !ok || !Array.isArray(data)) return;
      const current = this.tokenAtCaret();
      if (!current || current.text !== token.text) return;
      const items = data.filter((item) => item && typeof item.field === "string");
      if (!items.length || (items.length === 1 && items[0].field === token.text)) {
        this.completions.hide();
      } else {
        this.completions.show(items, (item) => {
          const li = element("li", "completion");
          li.dataset.field = item.field;
          li.append(element("span", "completion-field", item.field));
          if (item.name) li.append(element("span", "completion-name", item.name));
          return li;
        });
      }
    } catch (error) {
      if (!isAbort(error)) this.completions.hide();
    }
    this.expanded();
  }

  acceptCompletion(field) {
    const token = this.tokenAtCaret();
    if (!token) return;
    const value = this.text;
    this.input.value = value.slice(0, token.start) + field + value.slice(token.end);
    const caret = token.start + field.length;
    this.input.setSelectionRange(caret, caret);
    this.completions.hide();
    this.expanded();
    this.changed.cancel();
    this.check();
  }

  onKey(event) {
    const dropdown = this.completions.open ? this.completions : this.history.open ? this.history : null;
    if (dropdown) {
      if (event.key === "ArrowDown" || event.key === "ArrowUp") {
        event.preventDefault();
        dropdown.move(event.key === "ArrowDown" ? 1 : -1);
        return;
      }
      if (event.key === "Escape") {
        event.preventDefault();
        dropdown.hide();
        this.expanded();
        return;
      }
      const item = dropdown.current();
      if (dropdown === this.completions && event.key === "Tab" && !event.shiftKey) {
        event.preventDefault();
        this.acceptCompletion((item || this.completions.items[0]).field);
        return;
      }
      if (event.key === "Enter" && item !== undefined) {
        event.preventDefault();
        if (dropdown === this.completions) this.acceptCompletion(item.field);
        else dropdown.onPick(item);
        return;
      }
    } else if (event.key === "ArrowDown" && !this.text.trim()) {
      event.preventDefault();
      this.showHistory();
      this.expanded();
    }
    // Enter with nothing chosen submits the form, which applies the filter.
  }
}
