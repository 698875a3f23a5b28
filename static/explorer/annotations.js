// Annotations of a capture in a side panel: comments on packets or on the whole capture, with
// their author and time. Anyone who may write adds them; only the author (or staff) edits or
// deletes one; the capture file's own comments are shown as they are. Everything a person
// wrote goes into the page as text.
import { csrfToken, element, errorMessage, getJSON } from "./util.js";

const OPEN_KEY = "captureExplorer.annotationsOpen";
const CONFIRM_MS = 4000;

function byPlace(a, b) {
  // The capture's comments first, then by frame; the file's own first, then oldest first.
  const frameA = a.frame ?? 0;
  const frameB = b.frame ?? 0;
  if (frameA !== frameB) return frameA - frameB;
  if (a.from_file !== b.from_file) return a.from_file ? -1 : 1;
  if (a.created_at !== b.created_at) return a.created_at < b.created_at ? -1 : 1;
  return a.id - b.id;
}

function shortTime(iso) {
  const date = new Date(iso);
  return Number.isNaN(date.getTime()) ? "" : date.toLocaleString(undefined, { dateStyle: "medium", timeStyle: "short" });
}

export class Annotations {
  constructor({ panel, toggle, list, selected, onJump }) {
    this.panel = panel;
    this.toggle = toggle;
    this.list = list;
    this.selected = selected;
    this.onJump = onJump;
    const data = panel.dataset;
    this.url = data.url;
    this.me = data.me || "";
    this.staff = data.staff === "true";
    this.canWrite = data.canWrite === "true";
    this.items = new Map(); // id -> annotation
    this.editing = null; // {id, draft} while an annotation is edited
    this.confirming = null; // id of the annotation whose delete waits for a second click
    this.loadedOnce = false;

    this.listBox = panel.querySelector("#annotation-list");
    this.empty = panel.querySelector("#annotations-empty");
    this.error = panel.querySelector("#annotations-error");
    this.form = panel.querySelector("#annotation-form");
    this.toggle.addEventListener("click", () => this.setOpen(this.panel.hidden));
    panel.querySelector("#annotations-close").addEventListener("click", () => this.setOpen(false));
    this.listBox.addEventListener("click", (event) => this.onListClick(event));
    this.listBox.addEventListener("input", (event) => {
      if (this.editing && event.target.matches(".annotation-editor")) this.editing.draft = event.target.value;
    });
    this.listBox.addEventListener("keydown", (event) => {
      if (event.target.matches(".annotation-editor")) this.onEditorKey(event);
    });
    if (this.form) this.setUpForm();
  }

  // ---- data -------------------------------------------------------------------------------

  async load() {
    let result;
    try {
      result = await getJSON(this.url);
    } catch {
      this.showError("The annotations could not be loaded: the server did not answer.");
      return;
    }
    if (!result.ok || !Array.isArray(result.data)) {
      this.showError(errorMessage(result.data, `The annotations could not be loaded (HTTP ${result.status}).`));
      return;
    }
    this.items = new Map(result.data.map((annotation) => [annotation.id, annotation]));
    if (!this.loadedOnce) {
      this.loadedOnce = true;
      const remembered = this.remembered();
      this.setOpen(remembered === null ? this.items.size > 0 : remembered, { remember: false });
    }
    this.showError("");
    this.render();
  }

  /** Apply an `annotation.*` event pushed by the server (ours included). */
  apply(message) {
    const annotation = message.annotation;
    if (!annotation || typeof annotation.id !== "number") return;
    if (message.type === "annotation.deleted") {
      this.items.delete(annotation.id);
      if (this.editing?.id === annotation.id) this.editing = null;
    } else {
      this.items.set(annotation.id, annotation);
    }
    this.render();
  }

  mayChange(annotation) {
    if (!this.canWrite || annotation.from_file) return false;
    return this.staff || (annotation.author !== null && annotation.author === this.me);
  }

  async send(method, url, body) {
    let response;
    try {
      response = await fetch(url, {
        method,
        headers: { "X-CSRFToken": csrfToken(), Accept: "application/json", "Content-Type": "application/json" },
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch {
      return { error: "The server did not answer." };
    }
    let data = null;
    try {
      data = response.status === 204 ? null : await response.json();
    } catch {
      data = null;
    }
    if (!response.ok) return { error: errorMessage(data, `The server refused (HTTP ${response.status}).`) };
    return { data };
  }

  // ---- the panel --------------------------------------------------------------------------

  remembered() {
    try {
      const value = localStorage.getItem(OPEN_KEY);
      return value === null ? null : value === "1";
    } catch {
      return null;
    }
  }

  setOpen(open, { remember = true } = {}) {
    this.panel.hidden = !open;
    this.toggle.setAttribute("aria-expanded", open ? "true" : "false");
    if (!remember) return;
    try {
      localStorage.setItem(OPEN_KEY, open ? "1" : "0");
    } catch {
      // Remembering is a convenience.
    }
  }

  showError(text) {
    this.error.textContent = text;
    this.error.hidden = !text;
  }

  /** Follow the packet list's selection: the form's target and the highlighted annotations. */
  setSelected(number) {
    if (this.form) this.updateTarget(number);
    for (const item of this.listBox.children) {
      item.classList.toggle("current", number !== null && item.dataset.frame === String(number));
    }
  }

  render() {
    const annotations = [...this.items.values()].sort(byPlace);
    const frames = new Set(annotations.filter((a) => a.frame !== null).map((a) => a.frame));
    this.list.setAnnotated([...frames]);
    this.toggle.textContent = `Annotations: ${annotations.length.toLocaleString()}`;
    this.empty.hidden = annotations.length > 0;
    const selected = this.selected();
    // A change pushed while someone edits must not take the caret out of their text.
    const active = document.activeElement;
    const caret = active?.classList.contains("annotation-editor") ? [active.selectionStart, active.selectionEnd] : null;
    this.listBox.replaceChildren(...annotations.map((annotation) => this.item(annotation, selected)));
    const editor = this.listBox.querySelector(".annotation-editor");
    if (editor && caret) {
      editor.focus();
      editor.setSelectionRange(...caret);
    }
  }

  item(annotation, selected) {
    const item = element("li", "annotation");
    item.dataset.id = String(annotation.id);
    item.dataset.frame = annotation.frame === null ? "" : String(annotation.frame);
    if (annotation.from_file) item.classList.add("from-file");
    if (annotation.frame !== null && annotation.frame === selected) item.classList.add("current");

    const meta = element("div", "annotation-meta");
    if (annotation.frame === null) {
      meta.append(element("span", "annotation-place", "Capture"));
    } else {
      const jump = element("a", "annotation-place annotation-jump", `Packet ${annotation.frame.toLocaleString()}`);
      jump.href = `${location.pathname}?packet=${annotation.frame}`;
      jump.dataset.frame = String(annotation.frame);
      jump.title = `Go to packet ${annotation.frame}`;
      meta.append(jump);
    }
    const author = annotation.from_file ? "in the file" : annotation.author ?? "a former user";
    meta.append(element("span", "annotation-author", author));
    if (!annotation.from_file) {
      const time = element("time", "annotation-time", shortTime(annotation.created_at));
      time.dateTime = annotation.created_at;
      time.title = annotation.created_at;
      meta.append(time);
      if (Date.parse(annotation.updated_at) - Date.parse(annotation.created_at) > 1000) {
        const edited = element("span", "annotation-edited", "edited");
        edited.title = `Edited ${shortTime(annotation.updated_at)}`;
        meta.append(edited);
      }
    }
    item.append(meta);

    if (this.editing?.id === annotation.id) {
      item.append(this.editor(annotation));
      return item;
    }
    item.append(element("p", "annotation-text", annotation.text));
    if (this.mayChange(annotation)) {
      const actions = element("div", "annotation-actions");
      const edit = element("button", "link-button annotation-edit", "Edit");
      edit.type = "button";
      const confirming = this.confirming === annotation.id;
      const remove = element("button", "link-button annotation-delete", confirming ? "Delete for everyone?" : "Delete");
      remove.type = "button";
      if (confirming) remove.classList.add("confirming");
      actions.append(edit, remove);
      item.append(actions);
    }
    return item;
  }

  editor(annotation) {
    const box = element("div", "annotation-editing");
    const text = element("textarea", "annotation-editor");
    text.value = this.editing.draft ?? annotation.text;
    text.maxLength = 10000;
    text.rows = 3;
    text.setAttribute("aria-label", "Annotation text");
    const actions = element("div", "annotation-actions");
    const save = element("button", "button annotation-save", "Save");
    save.type = "button";
    const cancel = element("button", "link-button annotation-cancel", "Cancel");
    cancel.type = "button";
    actions.append(save, cancel);
    box.append(text, actions);
    if (this.editing.error) box.append(element("p", "annotation-error", this.editing.error));
    return box;
  }

  // ---- actions ----------------------------------------------------------------------------

  onListClick(event) {
    const target = event.target;
    const item = target.closest(".annotation");
    if (!item) return;
    const id = Number(item.dataset.id);
    if (target.closest(".annotation-jump")) {
      event.preventDefault();
      this.onJump(Number(target.closest(".annotation-jump").dataset.frame));
    } else if (target.closest(".annotation-edit")) {
      this.editing = { id, draft: null };
      this.confirming = null;
      this.render();
      this.listBox.querySelector(".annotation-editor")?.focus();
    } else if (target.closest(".annotation-cancel")) {
      this.editing = null;
      this.render();
    } else if (target.closest(".annotation-save")) {
      this.save(id, item.querySelector(".annotation-editor").value);
    } else if (target.closest(".annotation-delete")) {
      this.remove(id);
    }
  }

  onEditorKey(event) {
    if (event.key === "Escape") {
      event.preventDefault();
      this.editing = null;
      this.render();
    } else if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
      event.preventDefault();
      this.save(this.editing.id, event.target.value);
    }
  }

  async save(id, text) {
    const result = await this.send("PATCH", `${this.url}/${id}`, { text });
    if (result.error) {
      this.editing = { id, draft: text, error: result.error };
    } else {
      this.editing = null;
      this.items.set(result.data.id, result.data);
    }
    this.render();
  }

  async remove(id) {
    if (this.confirming !== id) {
      this.confirming = id;
      this.render();
      setTimeout(() => {
        if (this.confirming !== id) return;
        this.confirming = null;
        this.render();
      }, CONFIRM_MS);
      return;
    }
    this.confirming = null;
    const result = await this.send("DELETE", `${this.url}/${id}`);
    if (result.error) this.showError(result.error);
    else this.items.delete(id);
    this.render();
  }

  // ---- adding -----------------------------------------------------------------------------

  setUpForm() {
    this.text = this.form.querySelector("#annotation-text");
    this.onPacket = this.form.querySelector("#annotation-on-packet");
    this.onCapture = this.form.querySelector("#annotation-on-capture");
    this.packetLabel = this.form.querySelector("#annotation-packet-label");
    this.formError = this.form.querySelector("#annotation-form-error");
    this.captureChosen = false;
    this.updateTarget(this.selected());
    this.form.addEventListener("change", (event) => {
      if (event.target.name === "target") this.captureChosen = this.onCapture.checked;
    });
    this.form.addEventListener("submit", (event) => {
      event.preventDefault();
      this.add();
    });
    this.text.addEventListener("keydown", (event) => {
      if (event.key === "Enter" && (event.ctrlKey || event.metaKey)) {
        event.preventDefault();
        this.add();
      }
    });
  }

  /** Offer the selected packet as the new comment's place, unless the capture was chosen. */
  updateTarget(number) {
    this.onPacket.disabled = !number;
    this.packetLabel.textContent = number ? `Packet ${number.toLocaleString()}` : "Packet (select one)";
    if (!number) this.onCapture.checked = true;
    else if (!this.captureChosen) this.onPacket.checked = true;
  }

  async add() {
    const text = this.text.value;
    const frame = this.onPacket.checked ? this.selected() : null;
    this.formError.hidden = true;
    const result = await this.send("POST", this.url, { frame, text });
    if (result.error) {
      this.formError.textContent = result.error;
      this.formError.hidden = false;
      return;
    }
    this.text.value = "";
    this.items.set(result.data.id, result.data);
    this.render();
  }
}
