// Who else is looking at a capture, from the presence messages of its live updates.

/** Return "alice, bob (2), anonymous link holder" for the viewers other than `you`, one per connection. */
export function otherViewers(message) {
  const counts = new Map();
  for (const viewer of message.viewers || []) {
    if (viewer.id === message.you || typeof viewer.name !== "string") continue;
    counts.set(viewer.name, (counts.get(viewer.name) || 0) + 1);
  }
  return [...counts].map(([name, count]) => (count > 1 ? `${name} (${count})` : name)).join(", ");
}
