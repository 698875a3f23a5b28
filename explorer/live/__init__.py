"""Live captures: packets recorded as they arrive, shown to viewers at once, stored when done.

- recording.py: one live capture being recorded in this process, from its first bytes until
  it is stored; its channel for stop requests, viewers' hellos and a worker's reports.
- interface.py: recording from one of the server's interfaces (dumpcap).
- remote.py, route.py: a capture stream sent by another machine (`PUT /api/live/NAME`), read as
  it arrives by an ASGI route below Django.
- framing.py: the record boundaries of a growing pcap or pcapng stream.
- ring.py: the files a recording writes, one or a ring buffer's.
- staging.py: the names of those files, by which other processes find them.
- feeds.py: tshark decoders fed from the files, one per display filter, and their rows.
- decoders.py: who decodes a recording, behind one interface: feeds in its own process, or
  link.py, the recording's side of a worker that decodes it (worker.py is the worker's side).
- messages.py: what crosses the channel layer, with one sender per kind.
- consumers.py: the live view's websocket.

Who may watch, stop, stream or capture is decided in explorer/access.py; the pages are in
explorer/views/livecapture.py.
"""
