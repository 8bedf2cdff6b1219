"""Listing stored images newest first, a page at a time, for every backend alike.

A backend hands over what it holds (id, when it was written, size); the order and the paging are decided here, once.
The order is (written, id) descending, and a cursor is the last item of a page, base64url-encoded: the next page is
everything strictly after it in that order. So an image stored or deleted between two requests never shifts a page
(no image is shown twice or skipped because of it), and a cursor is opaque to clients, who only hand it back.
On S3 "written" is LastModified, in whole seconds, and images of the same second are ordered by id: one written in
the very second of a page's last image may still appear on a later page.
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Iterable
from dataclasses import dataclass

from app.errors import InvalidRequest
from app.storage.ids import is_valid_id

MAX_PAGE = 100  # each listed image's provenance is read from its PNG: a page is at most this many reads
DEFAULT_PAGE = 24


@dataclass(frozen=True)
class StoredImage:
    id: str
    created: float  # seconds since the epoch: when the store wrote it (S3: LastModified, whole seconds)
    size: int  # bytes


@dataclass(frozen=True)
class ImagePage:
    images: list[StoredImage]
    next_cursor: str | None  # None: this was the last page


def encode_cursor(image: StoredImage) -> str:
    raw = json.dumps([image.created, image.id], separators=(",", ":")).encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[float, str]:
    bad = InvalidRequest("cursor must be a next_cursor from an earlier GET /images answer", field="cursor")
    try:
        created, image_id = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))
    except (binascii.Error, ValueError, TypeError, UnicodeDecodeError):
        raise bad from None
    if not isinstance(created, int | float) or isinstance(created, bool) or not isinstance(image_id, str):
        raise bad
    if not is_valid_id(image_id):
        raise bad
    return float(created), image_id


def page_of(images: Iterable[StoredImage], limit: int, cursor: str | None = None) -> ImagePage:
    """The page after `cursor` (the first without one) of `images`, newest first."""
    if not 1 <= limit <= MAX_PAGE:
        raise InvalidRequest(f"limit must be an integer between 1 and {MAX_PAGE}, got {limit}", field="limit")
    ordered = sorted(images, key=lambda i: (i.created, i.id), reverse=True)
    if cursor is not None:
        after = decode_cursor(cursor)
        ordered = [i for i in ordered if (i.created, i.id) < after]
    chosen = ordered[:limit]
    more = len(ordered) > limit
    return ImagePage(chosen, encode_cursor(chosen[-1]) if more else None)
