"""Who is looking at a stored capture, and the changes to its annotations and marks they see live.

- messages.py: what crosses the channel layer (presence, and the capture's change events),
  with one sender per kind; the API publishes changes through it.
- consumers.py: the capture page's websocket, which keeps the list of viewers and passes the
  events on to the page.
"""
