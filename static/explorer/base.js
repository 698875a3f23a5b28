// Mark the page as scripted, so that styles meant for the no-JavaScript page step aside.
document.documentElement.classList.add("js");
