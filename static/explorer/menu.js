// Context menus: placing one inside the window, and moving through its items with the keys.

const ITEMS = "button:not(:disabled):not([hidden]), a[role=menuitem]:not([hidden])";

/** Show menu at (x, y), kept inside the window, and focus its first item. */
export function openMenuAt(menu, x, y) {
  menu.hidden = false;
  const width = menu.offsetWidth;
  const height = menu.offsetHeight;
  menu.style.left = `${Math.max(0, Math.min(x, window.innerWidth - width - 4))}px`;
  menu.style.top = `${Math.max(0, y + height > window.innerHeight ? y - height : y)}px`;
  menu.querySelector(ITEMS)?.focus();
}

/** Handle Escape, Tab and the arrow keys in an open menu; close() hides it. */
export function onMenuKey(menu, event, close) {
  const items = Array.from(menu.querySelectorAll(ITEMS));
  const index = items.indexOf(document.activeElement);
  if (event.key === "Escape") {
    event.preventDefault();
    close();
  } else if (event.key === "ArrowDown" || event.key === "ArrowUp") {
    event.preventDefault();
    const next = (index + (event.key === "ArrowDown" ? 1 : -1) + items.length) % items.length;
    items[next]?.focus();
  } else if (event.key === "Tab") {
    close();
  }
}
