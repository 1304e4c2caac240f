"""Pure LCG arithmetic: R9 target and largest-remainder quotas, R10 warnings, SRM."""

from __future__ import annotations

from decimal import Decimal

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from store import lcg, strata
from store.errors import ValidationError

# R10 worked example: int_field 20/80 x region Moscow/SPb/Kazan.
SIZES = {
    "20\x1fMoscow": 6,
    "20\x1fSPb": 7,
    "20\x1fKazan": 7,
    "80\x1fMoscow": 28,
    "80\x1fSPb": 26,
    "80\x1fKazan": 26,
}


@pytest.mark.parametrize(
    ("value", "bp"),
    [
        ("5", 500),
        ("5.25", 525),
        (5.25, 525),
        (Decimal("0.01"), 1),
        ("99.99", 9999),
        (15, 1500),
        (" 7.5 % ", 750),
    ],
)
def test_parse_percent_exact_basis_points(value, bp):
    assert lcg.parse_percent(value) == bp


@pytest.mark.parametrize(
    "value", ["abc", "", None, True, "0", "100", "-1", "5.255", 0.1 + 0.2, "nan", "inf", 100.0]
)
def test_parse_percent_refuses(value):
    with pytest.raises(ValidationError):
        lcg.parse_percent(value)


@pytest.mark.parametrize("value", [0, -3, "1.5", "x", True, 2.5])
def test_parse_limit_refuses(value):
    with pytest.raises(ValidationError):
        lcg.parse_limit(value)


def test_round_half_up_is_exact_decimal():
    # 5 % of 10 = 0.5 -> 1 (half up, not banker's); 2.5 % of 100 = 2.5 -> 3
    assert lcg.target_total(500, 10, None) == 1
    assert lcg.target_total(250, 100, None) == 3
    assert lcg.target_total(1, 4999, None) == 0  # 0.4999 -> 0
    assert lcg.target_total(1, 5000, None) == 1  # 0.5 -> 1
    assert lcg.target_total(1500, 100, 12) == 12


def test_r10_worked_example_quotas_without_limit():
    total = lcg.target_total(1500, 100, None)
    assert total == 15
    assert list(lcg.apportion(total, SIZES).values()) == [1, 1, 1, 4, 4, 4]
    assert lcg.stratification_warnings(1500, None, SIZES, {}) == []


def test_r10_worked_example_with_limit_12_warns():
    total = lcg.target_total(1500, 100, 12)
    quotas = lcg.apportion(total, SIZES)
    assert total == 12
    assert list(quotas.values()) == [1, 1, 1, 3, 3, 3]
    (warning,) = lcg.stratification_warnings(1500, 12, SIZES, quotas)
    assert warning["code"] == "stratification_violation"
    ideal = {o["stratum"]: o["ideal"] for o in warning["strata"]}
    assert ideal == {"20\x1fMoscow": 0.72, "20\x1fSPb": 0.84, "20\x1fKazan": 0.84}
    assert "0.72" in warning["message"] and "0.84" in warning["message"]


def test_apportion_ties_go_to_larger_stratum_then_smaller_key():
    # 1 unit over two equal remainders: equal sizes -> smaller key wins.
    assert lcg.apportion(1, {"b": 5, "a": 5}) == {"b": 0, "a": 1}
    # equal remainders (1*3/12 = .25 and 1*6/12 = .5 vs .25): larger stratum first
    assert lcg.apportion(1, {"x": 3, "y": 3, "z": 6}) == {"x": 0, "y": 0, "z": 1}
    assert lcg.apportion(1, {"x": 3, "y": 6, "z": 3}) == {"x": 0, "y": 1, "z": 0}
    q = lcg.apportion(3, {"a": 2, "b": 4, "c": 4})  # floors .6,1.2,1.2 -> 0,1,1; rem .6 a
    assert q == {"a": 1, "b": 1, "c": 1}


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(st.text(max_size=3), st.integers(0, 500), min_size=1, max_size=8),
    st.integers(1, 9999),
    st.one_of(st.none(), st.integers(1, 200)),
)
def test_apportion_properties(sizes, bp, limit):
    n = sum(sizes.values())
    total = lcg.target_total(bp, n, limit)
    quotas = lcg.apportion(total, sizes)
    assert sum(quotas.values()) == total
    for key, size in sizes.items():
        exact = Decimal(total * size) / n if n else Decimal(0)
        assert abs(quotas[key] - exact) < 1  # largest remainder never misses by a unit
        assert quotas[key] <= size
    # deterministic whatever the dict order
    assert lcg.apportion(total, dict(reversed(list(sizes.items())))) == quotas


def test_srm_flags_only_gross_mismatch_with_enough_expected():
    p, flagged = lcg.srm(50, 1000, 500)
    assert p == pytest.approx(1.0) and not flagged
    p, flagged = lcg.srm(100, 1000, 500)
    assert p < 0.001 and flagged
    p, flagged = lcg.srm(3, 20, 500)  # expected control 1 < 8: never flagged
    assert not flagged
    assert lcg.srm(0, 0, 500) == (None, False)


def test_strata_key_roundtrip_and_null():
    key = "20" + strata.SEP + ""
    assert strata.decode(key, ["int_field", "region"]) == {"int_field": "20", "region": None}
    assert strata.decode("", []) == {}
    assert strata.label("", []) == "all"
