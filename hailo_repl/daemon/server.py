"""`EngineServer`: the engine process's side of the socket (docs: ENGINE.md §3-§5).

The contract, for the process that owns it (hailo_repl.daemon.__main__ / lifetime):

    server = EngineServer(open_engine=open_local_engine, expected_uid=os.getuid())
    task = asyncio.ensure_future(server.serve(sock))  # sock: an AF_UNIX socket, bound and listening
    await server.stop_requested.wait()                # set by chat/quit, daemon/stop, or shutdown()
    await server.shutdown("stopping")                 # idempotent; see below
    task.cancel()

- `EngineServer(open_engine, expected_uid=None)`.
  `open_engine(request: protocol.OpenRequest) -> LocalEngine` builds the backend, the Chat and
  the LocalEngine over it, *not loaded* (the server loads it). It runs in an executor thread
  (imports and opening a device hold the GIL); it raises BackendError / ModelNotFoundError /
  EngineError for a line to show. The real one is `hailo_repl.daemon.opening.open_local_engine`.
  `expected_uid`: the uid a peer must have (SO_PEERCRED); None means this process's (os.getuid()).
- `async serve(sock: socket.socket) -> None`: serve clients on `sock` until cancelled or shut
  down (asyncio.start_unix_server(sock=sock, limit=protocol.MAX_LINE)).
- `async shutdown(reason: str = "stopping") -> None`: stop the reply in flight (kept
  interrupted), `engine.quit()` in a thread (keeps the device context, releases the model),
  `client/detached{reason}` to every client, close them, stop accepting. Idempotent. `reason` is
  one of protocol.DETACH_REASONS ("stopping" for SIGTERM, "idle" for the keep-alive, "quit").
- `stop_requested: asyncio.Event`: set when the process should exit (chat/quit, daemon/stop, a
  model that failed to load, shutdown()). The owner then calls shutdown() (a no-op if done) and exits.
- `idle_seconds() -> float | None`: seconds since the last client detached, with no turn running
  and no request under way; None while a client is attached or the engine is busy. With no
  engine opened yet: seconds since the server started serving.
- `last_save_failed: bool` (property): the chat's last autosave failed; the keep-alive must not
  exit then (the latest turns are in no file).
- `status() -> dict`: {"pid", "version", "model", "backend", "state", "chat", "attached": tty or
  None, "idle_seconds", "turn_running", "unsaved"}; the answer to `daemon/status` too.

One chat per engine process (v1), one controlling client at a time (ENGINE.md §4's table).
"""
