"""I/O to the platform, and nothing above it: one account's IM connection and the platform's HTTP calls.

Owns: `AccountSession` (session.py: connect, register, heartbeat, token refresh, reconnect policy; read pushes with
`async for`, write with `send`), the WebSocket seam (connector.py), the MTOP client (mtop_client.py), the values a
session reads and writes (values.py), its errors as types (errors.py) and the process-wide limits (limits.py).
Imports `protocol` (and the top-level `config` and `outbound`); never the engine: what a push means is decided
by whoever reads the session (engine/pipeline.py).
"""
