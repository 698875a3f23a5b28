// Marked packets, kept on the server with the capture: Wireshark's Ctrl+M marks or unmarks
// the selected packet, Ctrl+Shift+N and Ctrl+Shift+B go to the next and previous marked one.
import { csrfToken, getJSON } from "./util.js";

export class Marks {
  constructor({ url, list, onChange, onError }) {
    this.url = url;
    this.list = list;
    this.onChange = onChange;
    this.onError = onError;
    this.numbers = [];
  }

  async load() {
    try {
      const result = await getJSON(this.url);
      if (result.ok && Array.isArray(result.data?.frames)) this.set(result.data.frames);
    } catch {
      // Marks are shown once the server answers; the packet list works without them.
    }
  }

  set(numbers) {
    this.numbers = [...new Set(numbers)].sort((a, b) => a - b);
    this.list.setMarks(this.numbers);
    this.onChange(this.numbers.length);
  }

  has(number) {
    return this.list.marks.has(number);
  }

  async toggle(number) {
    if (!number) return;
    const marked = this.has(number);
    let response;
    try {
      response = await fetch(`${this.url}/${number}`, {
        method: marked ? "DELETE" : "PUT",
        headers: { "X-CSRFToken": csrfToken(), Accept: "application/json" },
      });
    } catch {
      this.onError("The server did not answer.");
      return;
    }
    if (!response.ok) {
      this.onError(`Marking packet ${number} failed (HTTP ${response.status}).`);
      return;
    }
    this.set(marked ? this.numbers.filter((n) => n !== number) : [...this.numbers, number]);
  }

  /** Return the marked frame after (step 1) or before (step -1) number, or null. */
  neighbour(number, step) {
    const from = number || 0;
    const candidates = step > 0 ? this.numbers.filter((n) => n > from) : this.numbers.filter((n) => n < from);
    if (!candidates.length) return null;
    return step > 0 ? candidates[0] : candidates[candidates.length - 1];
  }
}
