// The capture search: filters left empty stay out of the request, so the URL pushed to the
// history (and shared from the address bar) holds only what was asked for. Without this
// script the plain GET form sends every field, which the server reads the same way.
const FILTERS = ["q", "owner", "tag", "uploaded_after", "uploaded_before"];

document.body.addEventListener("htmx:configRequest", (event) => {
  const { elt, parameters } = event.detail;
  if (!elt.matches("#capture-search, #capture-table-refresh")) return;
  for (const name of FILTERS) {
    if (parameters[name] === "") delete parameters[name];
  }
});
