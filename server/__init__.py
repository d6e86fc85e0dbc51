"""runform.server: the processes (CLI, edge pipeline, cue engine, storage, HTTP/WebSocket API, auth)."""
