"""Server-Sent Events, decoded line by line, for `GET /jobs/{id}/events`.

The service sends `event: job` with one JSON `data:` line per change, and `: keep-alive` comments while nothing
changes. The decoder is fed lines by either client (sync or async), so the parsing exists once.
"""

from __future__ import annotations

from app.schemas import JobResponse


class SseDecoder:
    """The WHATWG event-stream rules the service's stream needs: fields, comments, a blank line ends an event."""

    def __init__(self) -> None:
        self._event = ""
        self._data: list[str] = []

    def feed(self, line: str) -> tuple[str, str] | None:
        """Takes one line (without its line break); returns (event, data) when the line completes an event."""
        if not line:
            event, data = self._event or "message", self._data
            self._event, self._data = "", []
            return (event, "\n".join(data)) if data else None
        if line.startswith(":"):
            return None  # a comment: the service's keep-alive
        name, _, value = line.partition(":")
        value = value.removeprefix(" ")
        if name == "event":
            self._event = value
        elif name == "data":
            self._data.append(value)
        return None  # `id:` and `retry:` do not matter here: a reconnect starts from the job's current state


class JobEventDecoder:
    def __init__(self) -> None:
        self._sse = SseDecoder()

    def feed(self, line: str) -> JobResponse | None:
        event = self._sse.feed(line)
        if event is None or event[0] != "job":
            return None
        return JobResponse.model_validate_json(event[1])
