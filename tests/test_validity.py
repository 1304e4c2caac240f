"""Experiment validity figures: per-stratum members/control/quota/ideal and the SRM check."""

from __future__ import annotations

import math

from sqlmodel import Session
from test_builds import (
    edit,
    get,
    make_db,
    make_segment,
    new_campaign,
    r10_rows,
)

from store import builds, lcg, validity


def figures(engine, name="c"):
    with Session(engine) as s:
        return validity.campaign_validity(s, get(engine, name))


def test_validity_per_stratum_from_counters(engine):
    db_id = make_db(engine, r10_rows())
    make_segment(engine, db_id=db_id)
    new_campaign(engine, lcg_percent="15", lcg_strata=["int_field", "region"])
    v = figures(engine)
    assert (v.cohort_size, v.target, v.actual, v.deficit, v.surplus) == (100, 15, 15, 0, 0)
    rows = {s.label: (s.members, s.control, s.quota, s.ideal) for s in v.strata}
    assert rows["int_field=80, region=Moscow"] == (28, 4, 4, 4.2)
    assert rows["int_field=20, region=Moscow"] == (6, 1, 1, 0.9)
    assert v.strata[0].values == {"int_field": "20", "region": "Kazan"}
    assert v.srm_p_value is not None and not v.srm_flagged
    edit(engine, percent="30")  # R6: deficit waits for newcomers
    builds.run_pending(engine)
    v = figures(engine)
    assert (v.target, v.actual, v.deficit) == (30, 15, 15)
    chi2 = (15 - 30) ** 2 / 30 + (85 - 70) ** 2 / 70  # 10.7: p = 0.00107, just above 0.001
    assert v.srm_p_value == math.erfc(math.sqrt(chi2 / 2))
    assert not v.srm_flagged
    edit(engine, percent="40")
    builds.run_pending(engine)
    v = figures(engine)
    assert v.srm_p_value < 1e-6 and v.srm_flagged  # 15 of 100 against 40 %


def test_srm_not_flagged_for_small_expected_counts():
    # 20 members at 10 %: expected control 2 < 8, so even 20/20 is not flagged.
    p, flagged = lcg.srm(20, 20, 1000)
    assert p is not None and p < 0.001 and not flagged
    assert lcg.srm(50, 1000, 500) == (1.0, False)
