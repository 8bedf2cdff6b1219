"""Image ids and record names: made by the server, checked strictly before any storage access.

An id is 32 lowercase hex characters (a uuid4 without dashes); a record name is "<kind>/<id>.json". Nothing
else is ever turned into a file name or an object key, so no request can name a path outside the store.
"""

from __future__ import annotations

import re
import uuid

from app.errors import InvalidId

ID_PATTERN = r"^[0-9a-f]{32}$"
_ID_RE = re.compile(ID_PATTERN)
_RECORD_NAME_RE = re.compile(r"[a-z]+/[0-9a-f]{32}\.json")


def new_id() -> str:
    return uuid.uuid4().hex


def is_valid_id(value: str) -> bool:
    # fullmatch, not match: "$" would also accept a trailing newline.
    return _ID_RE.fullmatch(value) is not None


def check_id(value: str, field: str = "id") -> str:
    if not is_valid_id(value):
        raise InvalidId(f"{field} must be 32 lowercase hex characters, as returned by the server", field=field)
    return value


def check_record_name(name: str) -> str:
    if not _RECORD_NAME_RE.fullmatch(name):
        raise ValueError(f"not a record name: {name!r}")
    return name
