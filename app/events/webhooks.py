"""Events as signed webhook POSTs, in IGI's payload shape, delivered in the background with retries.

Each event type has its own lane (a bounded queue and a few workers), so a slow receiver of one event type
never delays the others, and `emit` only ever appends to a queue: generation cannot wait on a receiver.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import json
import logging
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import urlsplit

import httpx

from app.config import Settings, check_webhook_url
from app.events.base import EVENTS
from app.events.node_info import NodeInfo

logger = logging.getLogger(__name__)

ENV_NAMES = {event: "WEBHOOK_" + event.replace(".", "_").upper() for event in EVENTS}
RESERVED = {"event", "id", "timestamp", "node_info", "image"}


@dataclass(frozen=True)
class DeliveryPolicy:
    max_attempts: int = 5  # waits between attempts: 0.2, 0.4, 0.8, 1.6 s
    base_delay_s: float = 0.2
    timeout_s: float = 5.0  # per attempt, from connecting to the whole answer
    queue_size: int = 128  # per event type; beyond: dropped with a warning
    workers_per_event: int = 2
    close_timeout_s: float = 5.0  # how long shutdown waits for queued deliveries
    max_queued_image_bytes: int = 256 * 2**20  # PNGs waiting for image.stored (post_image only)


@dataclass
class _Delivery:
    event: str
    id: str
    timestamp: float
    data: dict[str, Any]
    image: bytes | None


@dataclass
class _Lane:
    url: str
    queue: asyncio.Queue[_Delivery]
    workers: list[asyncio.Task[None]] = field(default_factory=list)


class WebhookSink:
    def __init__(
        self,
        urls: Mapping[str, str],
        node_info: NodeInfo,
        *,
        secret: str | None = None,
        post_image: bool = False,
        policy: DeliveryPolicy | None = None,
    ):
        self.policy = policy or DeliveryPolicy()
        self.node_info = node_info
        self.post_image = post_image
        self.dropped = 0
        self._secret = secret.encode() if secret else None
        self._urls = dict(urls)
        self._lanes: dict[str, _Lane] = {}
        self._image_bytes = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: httpx.AsyncClient | None = None
        self._closing = False

    @classmethod
    def from_settings(cls, settings: Settings) -> WebhookSink:
        urls: dict[str, str] = {}
        for event in EVENTS:
            url = getattr(settings, "webhook_" + event.replace(".", "_"))
            if url:
                urls[event] = check_webhook_url(ENV_NAMES[event], url)  # again: Settings may be built unchecked
        secret = settings.webhook_secret.get_secret_value() if settings.webhook_secret else None
        return cls(urls, NodeInfo.from_settings(settings), secret=secret, post_image=settings.webhook_post_image)

    # --- EventSink ---------------------------------------------------------------------------------
    async def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._client = httpx.AsyncClient(timeout=self.policy.timeout_s, follow_redirects=False)
        for event, url in self._urls.items():
            lane = _Lane(url, asyncio.Queue(self.policy.queue_size))
            lane.workers = [
                asyncio.create_task(self._work(lane), name=f"webhook-{event}-{i}")
                for i in range(self.policy.workers_per_event)
            ]
            self._lanes[event] = lane

    def emit(self, event: str, data: dict[str, Any], *, image: bytes | None = None) -> None:
        """Never blocks, never raises; callable from any thread."""
        try:
            if event not in self._urls:
                return  # no receiver configured for this event type
            image = image if self.post_image and event == "image.stored" else None
            delivery = _Delivery(event, uuid.uuid4().hex, time.time(), dict(data), image)
            loop = self._loop
            if loop is None or loop.is_closed():
                return self._drop(delivery, "the sink is not running")
            try:
                running = asyncio.get_running_loop()
            except RuntimeError:
                running = None
            if running is loop:
                self._enqueue(delivery)
            else:
                loop.call_soon_threadsafe(self._enqueue, delivery)
        except Exception:
            logger.exception("could not queue the %s event", event)

    async def close(self) -> None:
        """Deliver what is queued within `close_timeout_s`, then stop."""
        self._closing = True
        pending = [lane.queue.join() for lane in self._lanes.values()]
        try:
            await asyncio.wait_for(asyncio.gather(*pending), self.policy.close_timeout_s)
        except TimeoutError:
            left = sum(lane.queue.qsize() for lane in self._lanes.values())
            logger.warning("webhooks: gave up on %d queued deliveries after %.0fs", left, self.policy.close_timeout_s)
        workers = [task for lane in self._lanes.values() for task in lane.workers]
        for task in workers:
            task.cancel()
        await asyncio.gather(*workers, return_exceptions=True)
        self._lanes.clear()
        if self._client is not None:
            await self._client.aclose()

    # --- queueing ----------------------------------------------------------------------------------
    def _enqueue(self, delivery: _Delivery) -> None:
        lane = self._lanes.get(delivery.event)
        if lane is None or self._closing:
            return self._drop(delivery, "the sink is stopping")
        size = len(delivery.image or b"")
        if self._image_bytes + size > self.policy.max_queued_image_bytes:
            return self._drop(delivery, "too many image bytes are waiting")
        try:
            lane.queue.put_nowait(delivery)
        except asyncio.QueueFull:
            return self._drop(delivery, "its queue is full")
        self._image_bytes += size

    def _drop(self, delivery: _Delivery, why: str) -> None:
        self.dropped += 1
        if self.dropped & (self.dropped - 1) == 0:  # 1st, 2nd, 4th, 8th…: a dead receiver must not flood the log
            logger.warning("webhooks: dropped a %s event: %s (%d dropped so far)", delivery.event, why, self.dropped)

    async def _work(self, lane: _Lane) -> None:
        while True:
            delivery = await lane.queue.get()
            try:
                await self._deliver(lane.url, delivery)
            except Exception:
                logger.exception("webhooks: delivering %s %s failed", delivery.event, delivery.id)
            finally:
                self._image_bytes -= len(delivery.image or b"")
                lane.queue.task_done()

    # --- delivery ----------------------------------------------------------------------------------
    async def _deliver(self, url: str, delivery: _Delivery) -> None:
        node_info = await self.node_info.snapshot()
        body = await asyncio.to_thread(_body, delivery, node_info)  # base64 + JSON of a PNG: off the loop
        host = urlsplit(url).hostname  # logs name the host only: webhook URLs often carry tokens
        why = "not sent"
        for attempt in range(1, self.policy.max_attempts + 1):
            failure = await self._post(url, delivery, body)
            if failure is None:
                return
            why, retry = failure
            if not retry:
                logger.warning("webhooks: %s to %s refused (%s); not retried", delivery.event, host, why)
                return
            if attempt < self.policy.max_attempts:
                logger.info("webhooks: %s to %s failed (%s), attempt %d", delivery.event, host, why, attempt)
                await asyncio.sleep(self.policy.base_delay_s * 2 ** (attempt - 1))
        attempts = self.policy.max_attempts
        logger.warning(
            "webhooks: gave up on %s %s to %s after %d attempts (%s)", delivery.event, delivery.id, host, attempts, why
        )

    async def _post(self, url: str, delivery: _Delivery, body: bytes) -> tuple[str, bool] | None:
        """POST once: None when delivered, else (why, whether to retry). A 4xx other than 429 says the
        receiver will never take this request (and redirects are not followed: the URL is wrong), so only
        connection failures, timeouts, 429 and 5xx are retried."""
        assert self._client is not None
        headers = {
            "Content-Type": "application/json",
            "X-Sdxl-Event": delivery.event,
            "X-Sdxl-Delivery": delivery.id,
        }
        if self._secret is not None:
            timestamp = str(int(time.time()))  # per attempt, so a late retry is not refused as stale
            headers["X-Sdxl-Timestamp"] = timestamp
            headers["X-Sdxl-Signature"] = "sha256=" + _sign(self._secret, timestamp, body)
        try:
            # httpx's timeout bounds each read and write, not the request: a receiver trickling a byte a second
            # would hold its lane for ever. So the whole attempt has the deadline too.
            async with asyncio.timeout(self.policy.timeout_s):
                response = await self._client.post(url, content=body, headers=headers)
        except httpx.HTTPError as exc:
            return type(exc).__name__, True
        except TimeoutError:
            return f"no whole answer within {self.policy.timeout_s:g}s", True
        status = response.status_code
        if response.is_success:
            return None
        return f"HTTP {status}", status == 429 or status >= 500


def _body(delivery: _Delivery, node_info: dict[str, Any]) -> bytes:
    payload: dict[str, Any] = {"event": delivery.event, "id": delivery.id, "timestamp": delivery.timestamp}
    payload.update((key, value) for key, value in delivery.data.items() if key not in RESERVED)
    if delivery.image is not None:
        payload["image"] = base64.b64encode(delivery.image).decode("ascii")
    payload["node_info"] = node_info
    return json.dumps(payload, separators=(",", ":"), default=str).encode()


def _sign(secret: bytes, timestamp: str, body: bytes) -> str:
    return hmac.new(secret, timestamp.encode() + b"." + body, hashlib.sha256).hexdigest()


def verify_signature(
    secret: str | bytes, timestamp: str | int, body: bytes, signature: str, tolerance_s: float = 300
) -> bool:
    """For receivers: True when `signature` (the X-Sdxl-Signature header) signs `timestamp` + `body` with
    `secret` and the timestamp is within `tolerance_s` of now (so a captured request cannot be replayed later)."""
    try:
        sent = int(timestamp)
    except (TypeError, ValueError):
        return False
    if abs(time.time() - sent) > tolerance_s or not signature.startswith("sha256="):
        return False
    key = secret.encode() if isinstance(secret, str) else secret
    expected = "sha256=" + _sign(key, str(timestamp), body)
    return hmac.compare_digest(signature.encode(), expected.encode())
