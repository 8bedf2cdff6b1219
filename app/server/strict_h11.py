"""h11, refusing what a proxy in front of us might read differently (request smuggling).

h11 accepts two things RFC 9112 lets a server refuse, and a proxy may frame them otherwise than we do:
- obsolete line folding (a header line continued on the next line that starts with a space or tab): h11 joins the
  lines, a proxy may drop or split them, so a folded `X-API-Key` could authenticate here while the proxy saw none;
- both `Content-Length` and `Transfer-Encoding` (h11 lets Transfer-Encoding win; a proxy that reads Content-Length
  sees a different next request in the same bytes).
Both become h11 protocol errors, which uvicorn answers 400 and closes. The reader is h11's own request-head reader
(h11 0.16, pinned by the lock; tests/server/test_strict_h11.py fails if h11's internals move) with the fold check.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import h11
from h11._readers import _decode_header_lines, maybe_read_from_IDLE_client, request_line_re
from h11._receivebuffer import ReceiveBuffer
from h11._util import LocalProtocolError, validate

FOLDED = "a header line is folded onto the next line (obsolete line folding); send each header on one line"
BOTH_FRAMINGS = "the request has both Content-Length and Transfer-Encoding; send one of them"


def read_request_head(buf: ReceiveBuffer) -> h11.Request | None:
    """h11's `maybe_read_from_IDLE_client`, refusing folded header lines instead of joining them."""
    lines: list[bytes] | None = buf.maybe_extract_lines()  # type: ignore[assignment]  # bytearrays, as h11 reads them
    if lines is None:
        if buf.is_next_line_obviously_invalid_request_line():
            raise LocalProtocolError("illegal request line")
        return None
    if not lines:
        raise LocalProtocolError("no request line received")
    if any(line.startswith((b" ", b"\t")) for line in lines[1:]):
        raise LocalProtocolError(FOLDED)
    matches = validate(request_line_re, lines[0], "illegal request line: {!r}", lines[0])
    return h11.Request(headers=list(_decode_header_lines(lines[1:])), _parsed=True, **matches)


class StrictConnection(h11.Connection):
    """An h11 server connection with the strict head reader; `watch` sees every event it yields (connections.py
    times the head and the body by them)."""

    def __init__(self, watch: Callable[[Any], None], max_incomplete_event_size: int) -> None:
        super().__init__(h11.SERVER, max_incomplete_event_size)
        self._watch = watch
        self.refusal: str | None = None  # why the last request was refused, for the 400's body

    def _get_io_object(self, role: Any, event: Any, io_dict: Any) -> Any:
        reader = super()._get_io_object(role, event, io_dict)
        return read_request_head if reader is maybe_read_from_IDLE_client else reader

    def next_event(self) -> Any:
        try:
            event = super().next_event()
        except h11.RemoteProtocolError as exc:
            self.refusal = FOLDED if str(exc) == FOLDED else None  # other h11 messages echo the client's bytes
            raise
        if isinstance(event, h11.Request):
            names = {name.lower() for name, _ in event.headers}
            if b"content-length" in names and b"transfer-encoding" in names:
                self.refusal = BOTH_FRAMINGS
                raise h11.RemoteProtocolError(BOTH_FRAMINGS)
        self._watch(event)
        return event
