"""OpenAI's vocabulary in our terms, rule by rule (no server)."""

from __future__ import annotations

import pytest

from app.api import openai_translate as t

NAMES = ["tiny", "tiny-b"]


@pytest.mark.parametrize("name", ["dall-e-2", "dall-e-3", "gpt-image-1", "gpt-image-1-mini", "gpt-image-1.5"])
def test_openai_names_mean_the_configured_model_or_the_default(name: str) -> None:
    assert t.model_for(name, NAMES, None) is None  # None: the default model
    assert t.model_for(name, NAMES, "tiny-b") == "tiny-b"


def test_registry_names_and_others_pass_through() -> None:
    assert t.model_for("tiny-b", NAMES, "tiny") == "tiny-b"
    assert t.model_for(None, NAMES, "tiny-b") is None
    assert t.model_for("dall-e", NAMES, None) == "dall-e"  # not one of OpenAI's: refused later with the choices


def test_response_format_defaults_as_openai() -> None:
    assert t.response_format_for(None, "gpt-image-1") == "b64_json"
    assert t.response_format_for(None, "dall-e-3") == "url"
    assert t.response_format_for(None, None) == "url"
    assert t.response_format_for("b64_json", None) == "b64_json"


@pytest.mark.parametrize(
    ("size", "native", "expected"),
    [
        ("1792x1024", 1024, (1344, 768)),
        ("1024x1792", 1024, (768, 1344)),
        ("1536x1024", 1024, (1216, 832)),
        ("1024x1536", 1024, (832, 1216)),
        ("1792x1024", 512, (672, 384)),
        ("1792x1024", 256, (448, 256)),  # the short side stays at the API's smallest
        ("auto", 1024, None),
        (None, 1024, None),
        ("1024x1024", 256, (1024, 1024)),  # squares and other sizes are taken as they are
        ("512x768", 1024, (512, 768)),
    ],
)
def test_sizes(size: str | None, native: int, expected: tuple[int, int] | None) -> None:
    assert t.size_for(size, native) == expected
    if expected is not None:
        assert all(side % 8 == 0 for side in expected)


def test_quality_is_a_share_of_the_default_steps() -> None:
    assert [t.steps_for(q, 30, 100) for q in ("low", "medium", "standard", "auto", "high", "hd", None)] == [
        15,
        22,
        None,
        None,
        45,
        45,
        None,
    ]
    assert t.steps_for("high", 4, 4) == 4  # never over the model's ceiling (turbo)
    assert t.steps_for("low", 1, 4) == 1
