"""SDXL's invisible watermark, applied by us to the final 8-bit image.

diffusers' own watermarker runs on the float image inside the pipeline and crashes when the width is at
least 256 but the height is not. We turn it off at load (`add_watermarker=False`) and mark the finished
uint8 image here instead: that also decodes exactly, and it runs off the GPU owner's thread.
"""

from __future__ import annotations

from functools import lru_cache
from typing import Any

import numpy as np
from PIL import Image

# The bits SDXL's reference code embeds (diffusers.pipelines.stable_diffusion_xl.watermark.WATERMARK_BITS);
# copied so that marking an image does not import diffusers.
WATERMARK_MESSAGE = 0b101100111110110010010000011110111011000110011110
WATERMARK_BITS = [int(bit) for bit in bin(WATERMARK_MESSAGE)[2:]]
MIN_SIDE = 256  # the dwtDct encoder cannot mark (or decode) anything smaller


@lru_cache(maxsize=1)
def _encoder() -> Any:
    from imwatermark import WatermarkEncoder

    encoder = WatermarkEncoder()
    encoder.set_watermark("bits", WATERMARK_BITS)
    return encoder


def check_available() -> None:
    """Fail at startup, not on the first request, when the package is missing."""
    _encoder()


def apply_watermark(image: Image.Image) -> Image.Image:
    if image.width < MIN_SIDE or image.height < MIN_SIDE:
        return image
    # float32 in, as diffusers does: with uint8 the encoder's colour-space round trip would wrap around.
    bgr = np.ascontiguousarray(np.asarray(image.convert("RGB"), dtype=np.float32)[:, :, ::-1])
    marked = _encoder().encode(bgr, "dwtDct")[:, :, ::-1]
    return Image.fromarray(np.clip(np.rint(marked), 0, 255).astype(np.uint8), "RGB")
