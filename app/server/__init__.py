"""Serving the app over HTTP: uvicorn with a graceful stop, a strict HTTP/1.1 reader, time limits on slow clients
and a cap on open connections. One `server_config` is used by the CLI, the tests and the benchmarks."""
