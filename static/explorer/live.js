// Live updates of a capture: who else is looking at it, and the annotations and marks anyone
// changes, pushed by the server over a websocket that reconnects when it drops.

const FIRST_RETRY_MS = 1000;
const LAST_RETRY_MS = 30000;

export class LiveUpdates {
  /**
   * onMessage receives every event ({type: "presence" | "annotation.created" | …});
   * onReconnect runs when a dropped connection is back, as events may have been missed.
   */
  constructor({ path, onMessage, onReconnect }) {
    this.path = path;
    this.onMessage = onMessage;
    this.onReconnect = onReconnect;
    this.retry = FIRST_RETRY_MS;
    this.opened = false;
    this.socket = null;
  }

  start() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}${this.path}`);
    } catch {
      this.later();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      this.retry = FIRST_RETRY_MS;
      if (this.opened) this.onReconnect();
      this.opened = true;
    });
    socket.addEventListener("message", (event) => {
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message.type === "string") this.onMessage(message);
    });
    socket.addEventListener("close", () => {
      if (this.socket === socket) this.later();
    });
  }

  later() {
    this.socket = null;
    setTimeout(() => this.start(), this.retry);
    this.retry = Math.min(this.retry * 2, LAST_RETRY_MS);
  }
}

/** Return "alice, bob (2), anonymous link holder" for the viewers other than `you`, one per connection. */
export function otherViewers(message) {
  const counts = new Map();
  for (const viewer of message.viewers || []) {
    if (viewer.id === message.you || typeof viewer.name !== "string") continue;
    counts.set(viewer.name, (counts.get(viewer.name) || 0) + 1);
  }
  return [...counts].map(([name, count]) => (count > 1 ? `${name} (${count})` : name)).join(", ");
}
