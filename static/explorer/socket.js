// The page scripts' websocket to the server, opened again when it drops: the capture's load
// progress, its live updates (presence, annotations, marks) and the live capture view all use
// it. Messages are JSON objects with a string "type"; anything else is ignored.

export class ReconnectingSocket {
  /**
   * path: the websocket's path on this host, e.g. "/ws/captures/1/".
   * onMessage(message): every message, parsed.
   * onOpen({ reopened }): each time the connection opens; reopened is true after a drop, when
   *   messages may have been missed.
   * onDrop(): the connection dropped and will be opened again.
   * onGiveUp(): it dropped more often than `retries` allows; it stays closed.
   * retries: how many times it is opened again after a drop (by default, always).
   * firstRetryMs, lastRetryMs: the wait before opening it again, doubled after each drop up to
   *   the last; restartDelays: a connection that opened starts the waits over from the first.
   */
  constructor(path, {
    onMessage,
    onOpen = () => {},
    onDrop = () => {},
    onGiveUp = () => {},
    retries = Infinity,
    firstRetryMs = 1000,
    lastRetryMs = 30000,
    restartDelays = true,
  }) {
    this.path = path;
    this.handlers = { onMessage, onOpen, onDrop, onGiveUp };
    this.retries = retries;
    this.firstRetryMs = firstRetryMs;
    this.lastRetryMs = lastRetryMs;
    this.restartDelays = restartDelays;
    this.delay = firstRetryMs;
    this.drops = 0;
    this.opened = false;
    this.reconnecting = true;
    this.socket = null;
  }

  /** Open the connection (once; it opens again by itself). */
  start() {
    const scheme = location.protocol === "https:" ? "wss:" : "ws:";
    let socket;
    try {
      socket = new WebSocket(`${scheme}//${location.host}${this.path}`);
    } catch {
      this.dropped();
      return;
    }
    this.socket = socket;
    socket.addEventListener("open", () => {
      if (this.socket !== socket) return;
      if (this.restartDelays) this.delay = this.firstRetryMs;
      const reopened = this.opened;
      this.opened = true;
      this.handlers.onOpen({ reopened });
    });
    socket.addEventListener("message", (event) => {
      if (this.socket !== socket) return;
      let message;
      try {
        message = JSON.parse(event.data);
      } catch {
        return;
      }
      if (message && typeof message.type === "string") this.handlers.onMessage(message);
    });
    // An error is always followed by a close: the close alone decides what comes next.
    socket.addEventListener("close", () => {
      if (this.socket === socket) this.dropped();
    });
  }

  /** Send a message as JSON if the connection is open; return whether it was sent. */
  send(message) {
    if (!this.socket || this.socket.readyState !== WebSocket.OPEN) return false;
    this.socket.send(JSON.stringify(message));
    return true;
  }

  /** Leave the connection as it is, but do not open it again once it closes. */
  stopReconnecting() {
    this.reconnecting = false;
  }

  /** Close the connection now, for good. */
  close() {
    this.reconnecting = false;
    const socket = this.socket;
    this.socket = null;
    if (socket) socket.close();
  }

  dropped() {
    this.socket = null;
    if (!this.reconnecting) return;
    if (this.drops >= this.retries) {
      this.reconnecting = false;
      this.handlers.onGiveUp();
      return;
    }
    this.drops += 1;
    this.handlers.onDrop();
    setTimeout(() => this.start(), this.delay);
    this.delay = Math.min(this.delay * 2, this.lastRetryMs);
  }
}
