"""Builds the configured event sink."""

from __future__ import annotations

from app.config import Settings
from app.events.base import EventSink, NoEvents


def build_events(settings: Settings) -> EventSink:
    urls = (
        settings.webhook_model_loaded,
        settings.webhook_model_unloaded,
        settings.webhook_image_generated,
        settings.webhook_image_stored,
    )
    if not any(urls):
        return NoEvents()
    from app.events.webhooks import WebhookSink

    return WebhookSink.from_settings(settings)
