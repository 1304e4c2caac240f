"""Pure LCG arithmetic (R9, R10): percent parsing, target, quotas, warnings, SRM.

No database here. Everything that decides a group is exact integer/Decimal arithmetic:
percent is basis points (5.25 % = 525), T = round_half_up(p/100 × N) computed as
floor((2·bp·N + 10000) / 20000), and quotas compare remainders T·n_s mod N, which all
share the denominator N, as integers.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from store.errors import ValidationError


def parse_percent(value: Any, what: str = "LCG percent") -> int:
    """'5.25' / 5.25 / Decimal('5.25') -> 525 basis points. ValidationError otherwise,
    naming `what` (the GCG's percent takes the same rules)."""
    if isinstance(value, bool) or value is None:
        raise ValidationError(f"{what} must be a number, not {value!r}")
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{what} must be a finite number, not {value!r}")
        value = repr(value)  # shortest text that round-trips: 5.25 -> '5.25'
    text = str(value).strip().removesuffix("%").strip()
    try:
        dec = Decimal(text)
    except (InvalidOperation, ValueError):
        raise ValidationError(f"{what} must be a number like 5 or 5.25, not {value!r}") from None
    if not dec.is_finite():
        raise ValidationError(f"{what} must be a finite number, not {value!r}")
    if not (Decimal(0) < dec < Decimal(100)):
        raise ValidationError(f"{what} must be strictly between 0 and 100, not {text}")
    scaled = dec * 100
    if scaled != scaled.to_integral_value():
        raise ValidationError(f"{what} allows at most two decimals, not {text}")
    return int(scaled)


def format_percent(bp: int) -> str:
    return f"{Decimal(bp) / 100:f}".rstrip("0").rstrip(".") if bp % 100 else str(bp // 100)


MAX_LCG_LIMIT = 2**31 - 1  # the column is a 32-bit integer on PostgreSQL (docs/cli.md)


def parse_limit(value: Any) -> int | None:
    if value is None:
        return None
    wrong = f"LCG limit must be a whole number from 1 to {MAX_LCG_LIMIT:,}, not {value!r}"
    if isinstance(value, bool):
        raise ValidationError(wrong)
    try:
        dec = Decimal(str(value).strip())
    except (InvalidOperation, ValueError):
        raise ValidationError(wrong) from None
    if not dec.is_finite() or dec != dec.to_integral_value() or not 1 <= dec <= MAX_LCG_LIMIT:
        raise ValidationError(wrong)
    return int(dec)


def unlimited_target(percent_bp: int, cohort_size: int) -> int:
    """round_half_up(p/100 × N), exactly."""
    return (2 * percent_bp * cohort_size + 10000) // 20000


def target_total(percent_bp: int, cohort_size: int, limit: int | None) -> int:
    """R9: T = round_half_up(p/100 × N), then min(T, limit)."""
    t = unlimited_target(percent_bp, cohort_size)
    return t if limit is None else min(t, limit)


def limit_binds(percent_bp: int, cohort_size: int, limit: int | None) -> bool:
    return limit is not None and limit < unlimited_target(percent_bp, cohort_size)


def apportion(total: int, sizes: Mapping[str, int]) -> dict[str, int]:
    """Largest remainder (R9): floors of T·n_s/N, remaining units to the largest remainders;
    ties to the larger stratum, then to the smaller key (Python string order)."""
    n = sum(sizes.values())
    quotas = {k: 0 for k in sizes}
    if n == 0 or total <= 0:
        return quotas
    if total > n:
        raise ValueError(f"cannot apportion {total} over {n} members")
    remainders = {}
    for key, size in sizes.items():
        quotas[key], remainders[key] = divmod(total * size, n)
    left = total - sum(quotas.values())
    order = sorted(sizes, key=lambda k: (-remainders[k], -sizes[k], k))
    for key in order[:left]:
        quotas[key] += 1
    return quotas


def ideal_share(total: int, size: int, n: int) -> Decimal:
    return Decimal(total * size) / Decimal(n) if n else Decimal(0)


def stratification_warnings(
    percent_bp: int,
    limit: int | None,
    sizes: Mapping[str, int],
    controls: Mapping[str, int],
    labels: Mapping[str, str] | None = None,
) -> list[dict[str, Any]]:
    """R10 `stratification_violation` warnings (never blocking).

    Raised only when the limit binds (limit < round_half_up(p·N)), for:
    * strata whose ideal share of the limit, limit·n_s/N, is below 1 (cannot be
      represented reliably), and
    * strata whose control count is off that ideal share by one profile or more while
      the control group is already at the limit (no room left to correct with newcomers).
    """
    n = sum(sizes.values())
    if not limit_binds(percent_bp, n, limit):
        return []
    assert limit is not None
    labels = labels or {}
    total_control = sum(controls.get(k, 0) for k in sizes)
    full = total_control >= limit
    offenders = []
    for key in sorted(sizes):
        size = sizes[key]
        if size == 0:
            continue
        ideal = ideal_share(limit, size, n)
        control = controls.get(key, 0)
        reasons = []
        if ideal < 1:
            reasons.append("ideal share below 1")
        if full and abs(Decimal(control) - ideal) >= 1:
            reasons.append("off its ideal share by one or more with no room under the limit")
        if reasons:
            offenders.append(
                {
                    "stratum": key,
                    "label": labels.get(key, key),
                    "members": size,
                    "control": control,
                    "ideal": float(round(ideal, 4)),
                    "reasons": reasons,
                }
            )
    if not offenders:
        return []
    figures = "; ".join(
        f"{o['label']}: {o['members']} members, ideal {o['ideal']:g}, control {o['control']}"
        for o in offenders
    )
    return [
        {
            "code": "stratification_violation",
            "message": (
                f"limit {limit} is below the unlimited target "
                f"{unlimited_target(percent_bp, n)} of {n} cohort members, so these strata "
                f"cannot keep their proportion: {figures}"
            ),
            "limit": limit,
            "unlimited_target": unlimited_target(percent_bp, n),
            "cohort": n,
            "strata": offenders,
        }
    ]


SRM_ALPHA = 0.001
SRM_MIN_EXPECTED = 8


def srm(
    control: int, members: int, percent_bp: int, share: Decimal | None = None
) -> tuple[float | None, bool]:
    """Sample-ratio mismatch: chi-square (1 df) of control/test against the configured share.

    Returns (p_value, flagged). p is None when either expected count is 0.
    Flagged when p < 0.001 and both expected counts are at least 8.
    """
    if members <= 0:
        return None, False
    frac = share if share is not None else Decimal(percent_bp) / Decimal(10000)
    exp_c = float(frac) * members
    exp_t = members - exp_c
    if exp_c <= 0 or exp_t <= 0:
        return None, False
    test = members - control
    chi2 = (control - exp_c) ** 2 / exp_c + (test - exp_t) ** 2 / exp_t
    p = math.erfc(math.sqrt(chi2 / 2))
    flagged = p < SRM_ALPHA and exp_c >= SRM_MIN_EXPECTED and exp_t >= SRM_MIN_EXPECTED
    return p, flagged
