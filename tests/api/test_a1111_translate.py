"""The A1111 names and texts onto ours: samplers and schedules, <lora:...> tags, the infotext reader."""

from __future__ import annotations

import pytest

from app.api.a1111 import infotext, samplers
from app.api.a1111.translate import lora_tags
from app.errors import InvalidRequest


@pytest.mark.parametrize(
    ("sampler", "schedule", "ours"),
    [
        ("Euler a", None, "euler_a"),
        ("euler a", "automatic", "euler_a"),
        ("DPM++ 2M Karras", None, "dpmpp_2m_karras"),  # the combined, pre-1.9 spelling
        ("DPM++ 2M", "Karras", "dpmpp_2m_karras"),
        ("DPM++ 2M", "karras", "dpmpp_2m_karras"),
        ("k_euler", None, "euler"),
        ("UniPC", "Automatic", "unipc"),
        (None, None, None),
        ("", "automatic", None),
    ],
)
def test_samplers_resolve(sampler: str | None, schedule: str | None, ours: str | None) -> None:
    assert samplers.resolve(sampler, schedule) == ours


@pytest.mark.parametrize(
    ("sampler", "schedule", "field"),
    [("DPM++ SDE", None, "sampler_name"), ("Euler", "Karras", "scheduler"), ("Euler", "Exponential", "scheduler")],
)
def test_samplers_refused_naming_the_field(sampler: str, schedule: str | None, field: str) -> None:
    with pytest.raises(InvalidRequest) as refused:
        samplers.resolve(sampler, schedule)
    assert refused.value.field == field


def test_labels_round_trip() -> None:
    for label, ours in samplers.SAMPLERS.items():
        assert samplers.label(ours) == label and samplers.resolve(label, None) == ours
    assert samplers.label("dpmpp_2m_karras") == "DPM++ 2M Karras"


def test_lora_tags_become_loras() -> None:
    assert lora_tags("a cat <lora:tiny-lora:0.5>, <LORA:other>  sitting") == (
        "a cat , sitting",
        [{"name": "tiny-lora", "scale": 0.5}, {"name": "other", "scale": 1.0}],
    )
    with pytest.raises(InvalidRequest):
        lora_tags("<lora:x:strong>")


def test_infotext_parse() -> None:
    text = "a boat\nmore\nNegative prompt: rain\nSteps: 2, Sampler: euler_a, CFG scale: 5, Seed: 9, Size: 256x256"
    parsed = infotext.parse(text)
    assert parsed["Prompt"] == "a boat\nmore" and parsed["Negative prompt"] == "rain"
    assert (parsed["Steps"], parsed["Sampler"], parsed["Size"]) == ("2", "euler_a", "256x256")
    assert infotext.parse("just a prompt") == {"Prompt": "just a prompt", "Negative prompt": ""}
