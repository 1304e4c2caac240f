"""store/views.py on both backends: the read models the console polls give the same
figures on SQLite and PostgreSQL, from counters (R9 split, R10 limit, paused mailings)."""

from __future__ import annotations

from sqlmodel import Session
from workspace import build_workspace

from store.views import campaign_detail, campaign_rows, database_names, stratifiable_fields


def test_console_read_models_agree_on_both_backends(db_url):
    workspace = build_workspace(db_url)
    try:
        with Session(workspace.engine) as session:
            rows = {row.name: row for row in campaign_rows(session)}
            autumn = campaign_detail(session, "Autumn Sale")
            north = campaign_detail(session, "North Push")
            young = campaign_detail(session, "Young Drop")
            assert campaign_detail(session, "nope") is None
            assert database_names(session) == ["shop"]
            assert stratifiable_fields(session, autumn.database_id) == ["region", "tier", "age"]
    finally:
        workspace.engine.dispose()

    assert [name for name in rows] == ["Autumn Sale", "North Push", "Old Promo", "Young Drop"]
    assert (rows["Autumn Sale"].members, rows["Autumn Sale"].control) == (1200, 120)
    assert rows["Autumn Sale"].control_pct == "10.0%"
    assert rows["Autumn Sale"].paused_mailings == 1
    assert rows["Old Promo"].status == "completed" and rows["Old Promo"].members == 0
    assert rows["Young Drop"].segment_kind == "dynamic"

    # R9: 10 % of 1,200 in three equal region strata
    assert autumn.target == 120 and autumn.deficit == 0
    assert [(s.label, s.members, s.control, s.quota) for s in autumn.strata] == [
        ("region=North", 400, 40, 40),
        ("region=South", 400, 40, 40),
        ("region=West", 400, 40, 40),
    ]
    assert autumn.srm_p_value is not None and not autumn.srm_flagged
    assert [m.name for m in autumn.mailings] == ["autumn-sms", "autumn-weekly"]
    assert (
        autumn.mailings[0].manual_paused and "paused by alice" in autumn.mailings[0].paused_reason
    )
    assert [b.reason for b in autumn.builds] == ["activation"]
    assert any(a.action == "campaign.activate" for a in autumn.audit)

    # R10: the limit of 12 binds (5 % of 400 is 20), yet both strata keep an ideal share
    # of at least one profile (9 and 3), so no stratification warning
    assert north.target == 12 and north.control == 12
    assert [(s.label, s.quota) for s in north.strata] == [
        ("region=North, tier=1", 9),
        ("region=North, tier=2", 3),
    ]
    assert north.warnings == ()
    assert young.segment_kind == "dynamic" and young.target == 0


def test_shares_never_round_a_nonempty_group_to_zero_or_a_partial_one_to_all():
    from store.views import percent_of

    assert percent_of(20, 58_806) == "<0.1%"
    assert percent_of(58_786, 58_806) == ">99.9%"
    assert (percent_of(0, 10), percent_of(10, 10), percent_of(1, 8)) == ("0.0%", "100.0%", "12.5%")
    assert percent_of(0, 0) == "–"
