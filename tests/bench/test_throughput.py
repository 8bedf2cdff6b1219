"""bench.throughput.Paired: each service round is set against the bare runs just before and just after it."""

from __future__ import annotations

import pytest

from bench.throughput import Paired


def test_each_round_against_the_mean_of_its_two_neighbouring_bare_runs() -> None:
    # The machine slows down in the middle: bare 10 -> 6 -> 8 images/s.
    paired = Paired(clients=8, service_ips=[7.2, 6.3], bare_ips=[10.0, 6.0, 8.0], mean_batch=4.0)
    assert paired.ratios == pytest.approx([7.2 / 8.0, 6.3 / 7.0])
    assert paired.ratio == pytest.approx((0.9 + 0.9) / 2)


def test_the_median_is_robust_to_one_disturbed_round() -> None:
    paired = Paired(clients=8, service_ips=[9.0, 2.0, 9.0], bare_ips=[10.0] * 4, mean_batch=4.0)
    assert paired.ratio == pytest.approx(0.9)
