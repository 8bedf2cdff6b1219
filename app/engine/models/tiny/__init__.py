"""The offline tiny SDXL models: `build.py` builds and publishes them, `parts.py` holds their configs."""

from app.engine.models.tiny.build import TINY_VERSION, TinyModelPaths, ensure_tiny_models

__all__ = ["TINY_VERSION", "TinyModelPaths", "ensure_tiny_models"]
