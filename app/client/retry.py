"""When the client tries again, decided in one place for both the sync and the async client.

Retried, up to `max_retries` times:
- 429 (queue full) and 503 (not ready, shutting down, queue timeout, out of memory, storage unreachable): the
  service did no lasting work, so any request may go again. The wait is the answer's `Retry-After`, capped at
  `max_wait`; without one it backs off exponentially (`backoff`, doubling).
- A connection that could not be made (refused, connect timeout): the server never saw the request.
- Any other transport failure (reset, read timeout) only for GET and HEAD: a POST may have been acted on
  (an image generated and stored) before the connection broke, so sending it again could do the work twice.
Never retried: every other status (400, 401, 404, 409, 413, 422, 500, 507, ...): the same request would fail again.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any

from app.client.calls import Call
from app.client.errors import SdxlConnectionError, SdxlError

logger = logging.getLogger(__name__)

RETRY_STATUSES = frozenset({429, 503})


@dataclass(frozen=True)
class RetryPolicy:
    max_retries: int = 2
    backoff: float = 0.5  # seconds before the first retry when the service gives no Retry-After
    max_wait: float = 60.0  # the most one wait may last, whatever Retry-After says

    def delay(self, attempt: int, call: Call[Any], error: SdxlError) -> float | None:
        """Seconds to wait before sending `call` again after try `attempt` (0-based) failed; None: give up."""
        if attempt >= self.max_retries or not call.retry:
            return None
        if error.status_code in RETRY_STATUSES:
            wait = error.retry_after if error.retry_after is not None else self.backoff * 2**attempt
        elif isinstance(error, SdxlConnectionError) and (not error.request_sent or call.idempotent):
            wait = self.backoff * 2**attempt
        else:
            return None
        wait = min(wait, self.max_wait)
        logger.info(
            "%s %s: %s; retry %d of %d in %.1fs", call.method, call.url, error, attempt + 1, self.max_retries, wait
        )
        return wait
