"""bench/png.py runs and compares both encoders on each picture (each decoded back and checked)."""

from __future__ import annotations

import pytest

from bench import png


def test_prints_both_encoders_for_each_picture(capsys: pytest.CaptureFixture[str]) -> None:
    assert png.main(["--no-tiny", "--size", "128", "--repeats", "1"]) == 0
    rows = capsys.readouterr().out.splitlines()[1:]
    assert len(rows) == 2 * len(png.STRATEGIES)
    assert all("1.00" in row for row in rows[:: len(png.STRATEGIES)])  # the first of each pair is the reference
