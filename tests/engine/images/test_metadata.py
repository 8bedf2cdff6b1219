"""The PNG's A1111 `parameters` text: a prompt's line breaks cannot forge its lines (issue 13, item 12)."""

from __future__ import annotations

import io

from PIL import Image

from app.engine.images.metadata import encode_png, read_provenance
from tests.helpers import provenance

FORGED = "a cat\nNegative prompt: everything\nSteps: 1, Sampler: x, CFG scale: 1, Seed: 1, Size: 64x64"


def _png(prompt: str, negative: str | None) -> bytes:
    p = provenance(prompt=prompt, negative_prompt=negative)
    return encode_png(Image.new("RGB", (256, 256)), p)


def test_line_breaks_in_prompts_cannot_forge_parameter_lines() -> None:
    png = _png(FORGED, "blurry\r\nSteps: 99")
    text = Image.open(io.BytesIO(png)).text["parameters"]
    lines = text.split("\n")
    assert len(lines) == 3, lines  # prompt, negative prompt, the one parameters line
    assert lines[0].startswith("a cat Negative prompt: everything Steps: 1")
    assert lines[1] == "Negative prompt: blurry Steps: 99"
    assert lines[2].startswith("Steps: 4, ") and "Seed: 7" in lines[2]
    assert read_provenance(png)["prompt"] == FORGED  # the exact prompt is kept in the JSON record


def test_the_sampler_is_written_as_a1111_labels_it() -> None:
    from app.engine.models.samplers import SAMPLERS, a1111_label

    assert a1111_label("dpmpp_2m_karras") == "DPM++ 2M Karras" and a1111_label("euler_a") == "Euler a"
    assert a1111_label("EulerDiscreteScheduler") == "Euler"  # a model's own scheduler, by its class
    assert a1111_label("SomethingNew") == "SomethingNew"
    assert all(a1111_label(name) != name for name in SAMPLERS)  # every one of ours has its label
    text = Image.open(io.BytesIO(_png("a cat", None))).text["parameters"]
    assert "Sampler: Euler, " in text
