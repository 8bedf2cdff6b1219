"""What the sync and async clients share: their settings, how a `Call` becomes an httpx request, and the
check that turns an error answer into its exception."""

from __future__ import annotations

from typing import Any

import httpx

from app.client.calls import Call
from app.client.errors import error_from_response
from app.client.retry import RetryPolicy

DEFAULT_URL = "http://127.0.0.1:8000"
# A synchronous /generate waits for the queue (the service gives up at SDXL_QUEUE_TIMEOUT_S, 45 s by default)
# and then for the pipeline (seconds on a GPU).
DEFAULT_TIMEOUT_S = 300.0
_USER_AGENT = "sdxl-serve-client/0.1"


class ClientBase:
    """base_url: the service (a path prefix behind a proxy is kept). api_key: sent as X-API-Key.
    timeout: seconds for one answer (connecting gets at most 10). max_retries / max_retry_wait: see
    app.client.retry. transport: replaces httpx's own (tests inject faults with httpx.MockTransport)."""

    def __init__(
        self,
        base_url: str = DEFAULT_URL,
        *,
        api_key: str | None = None,
        timeout: float = DEFAULT_TIMEOUT_S,
        max_retries: int = 2,
        max_retry_wait: float = 60.0,
        transport: httpx.BaseTransport | httpx.AsyncBaseTransport | None = None,
    ):
        url = httpx.URL(base_url)
        if url.scheme not in ("http", "https") or not url.host:
            raise ValueError(f"base_url must be an http:// or https:// URL, got {base_url!r}")
        if max_retries < 0:
            raise ValueError(f"max_retries must be >= 0, got {max_retries}")
        self.base_url = str(url).rstrip("/")
        self.api_key = api_key
        self.retry = RetryPolicy(max_retries=max_retries, max_wait=max_retry_wait)
        # Connecting should be quick even when the answer is not: a dead address fails in seconds.
        timeouts = httpx.Timeout(timeout, connect=min(timeout, 10.0))
        self._open(base_url=self.base_url, timeout=timeouts, headers={"User-Agent": _USER_AGENT}, transport=transport)

    def _open(self, **options: Any) -> None:
        """Creates the httpx client (sync or async) from httpx's own options."""
        raise NotImplementedError

    def _request(self, http: httpx.Client | httpx.AsyncClient, call: Call[Any]) -> httpx.Request:
        headers = dict(call.headers)
        if self.api_key and call.authenticated:
            # X-API-Key, not Authorization: behind dstack, Authorization carries dstack's own token.
            headers["X-API-Key"] = self.api_key
        return http.build_request(call.method, call.url, json=call.json, headers=headers)


def check(response: httpx.Response) -> httpx.Response:
    """The response if it succeeded (2xx, or a redirect to follow); its error otherwise (body already read)."""
    if response.is_error:
        raise error_from_response(response)
    return response
