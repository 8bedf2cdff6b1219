"""uvicorn with a graceful stop that starts at the signal, not after it."""

from __future__ import annotations

from types import FrameType

import uvicorn


class GracefulServer(uvicorn.Server):
    """On SIGTERM/SIGINT, tell the service first (so /ready turns 503 and queued jobs are answered at once),
    then let uvicorn drain in-flight requests (the running job) before the lifespan stops the engine."""

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        app = self.config.app
        service = getattr(getattr(app, "state", None), "service", None)
        if service is not None:
            service.request_shutdown()
        super().handle_exit(sig, frame)
