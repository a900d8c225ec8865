"""The fast timestamp of event lines and log notes says exactly what ``iso`` says."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from spoolq.jobs import iso, stamp


@given(st.floats(min_value=0, max_value=4_000_000_000, allow_nan=False, allow_infinity=False))
def test_stamp_matches_iso(ts: float) -> None:
    assert stamp(ts) == iso(ts)


def test_stamp_at_second_and_rounding_boundaries() -> None:
    for ts in (1_700_000_000.0, 1_700_000_000.9999996, 1_700_000_000.0009995, 1_699_999_999.5):
        assert stamp(ts) == iso(ts)
