"""The strict h11 reader: folded header lines and Content-Length + Transfer-Encoding are protocol errors; what a
normal client sends reads as h11 reads it."""

from __future__ import annotations

from typing import Any

import h11
import pytest

from app.server.strict_h11 import BOTH_FRAMINGS, FOLDED, StrictConnection


def _read(raw: bytes) -> tuple[StrictConnection, list[Any]]:
    seen: list[Any] = []
    conn = StrictConnection(seen.append, 16 * 1024)
    conn.receive_data(raw)
    events = []
    while (event := conn.next_event()) is not h11.NEED_DATA:
        events.append(event)
        if isinstance(event, h11.EndOfMessage):
            break
    assert seen == events  # the watcher sees every event, in order
    return conn, events


def test_a_plain_request_reads_as_in_h11() -> None:
    raw = b"POST /generate HTTP/1.1\r\nHost: x\r\nX-API-Key: k\r\nContent-Length: 2\r\n\r\n{}"
    _, events = _read(raw)
    request, data, end = events
    assert request.method == b"POST" and request.target == b"/generate"
    assert (b"x-api-key", b"k") in request.headers
    assert data.data == b"{}" and isinstance(end, h11.EndOfMessage)
    plain = h11.Connection(h11.SERVER)  # the reader is h11's own, less the fold: same events as h11's
    plain.receive_data(raw)
    plain_request = plain.next_event()
    assert isinstance(plain_request, h11.Request)
    assert plain_request.headers == request.headers


def test_chunked_alone_is_read() -> None:
    _, events = _read(b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\n\r\n")
    assert b"".join(e.data for e in events if isinstance(e, h11.Data)) == b"{}"


@pytest.mark.parametrize("fold", [b" ", b"\t", b"   \t"])
def test_a_folded_header_is_refused(fold: bytes) -> None:
    raw = b"GET /models HTTP/1.1\r\nHost: x\r\nX-API-Key:\r\n" + fold + b"secret\r\n\r\n"
    plain = h11.Connection(h11.SERVER)  # h11 alone joins the lines: the key would authenticate
    plain.receive_data(raw)
    plain_request = plain.next_event()
    assert isinstance(plain_request, h11.Request)
    assert (b"x-api-key", b"secret") in plain_request.headers
    with pytest.raises(h11.RemoteProtocolError, match="folded"):
        _read(raw)
    conn = StrictConnection(lambda _: None, 16 * 1024)
    conn.receive_data(raw)
    with pytest.raises(h11.RemoteProtocolError):
        conn.next_event()
    assert conn.refusal == FOLDED


@pytest.mark.parametrize("order", ["cl-first", "te-first"])
def test_content_length_with_transfer_encoding_is_refused(order: str) -> None:
    cl, te = b"Content-Length: 4\r\n", b"Transfer-Encoding: chunked\r\n"
    headers = cl + te if order == "cl-first" else te + cl
    conn = StrictConnection(lambda _: None, 16 * 1024)
    conn.receive_data(b"POST /generate HTTP/1.1\r\nHost: x\r\n" + headers + b"\r\n0\r\n\r\n")
    with pytest.raises(h11.RemoteProtocolError, match="both Content-Length and Transfer-Encoding"):
        conn.next_event()
    assert conn.refusal == BOTH_FRAMINGS


def test_other_protocol_errors_keep_no_client_text() -> None:
    conn = StrictConnection(lambda _: None, 16 * 1024)
    conn.receive_data(b"GET / HTTP/1.1\r\nHost: x\r\nbad header <script>\r\n\r\n")
    with pytest.raises(h11.RemoteProtocolError):
        conn.next_event()
    assert conn.refusal is None  # uvicorn's own fixed message answers it
