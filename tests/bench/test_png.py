"""bench/png.py runs and compares every encoder on each picture (each decoded back and checked)."""

from __future__ import annotations

import pytest

from bench import png


def test_prints_every_encoder_for_each_picture(capsys: pytest.CaptureFixture[str]) -> None:
    assert png.main(["--no-tiny", "--size", "128", "--repeats", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 3 * len(png.ENCODERS)  # the photo, the smooth and the flat picture
    assert all("1.00" in row for row in rows[:: len(png.ENCODERS)])  # the first of each picture's rows is the reference
