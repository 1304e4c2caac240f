"""Issue 10 item 1: one read model per concept. The CLI's JSON and the console's read
models carry the same figures, in the same order, on SQLite and PostgreSQL, over a
workspace with every campaign status, paused (by an operator, by a build) and unpaused
mailings, a completed campaign whose mailing was paused before completion (R8), and
queued, running and finished builds."""

from __future__ import annotations

import json

import pytest
from sqlmodel import Session
from workspace import ADMIN, DATABASE, build_workspace

from console.cli import main
from store import builds, campaigns, mailings, monitor, profiles, segments, views
from store.db import transaction


def cli_json(capsys, db_url: str, *argv: str):
    capsys.readouterr()
    code = main(["--db", db_url, *argv, "--json"])
    out = capsys.readouterr()
    assert code == 0, out.err
    return json.loads(out.out)


@pytest.fixture
def world(db_url):
    workspace = build_workspace(db_url)
    engine = workspace.engine
    # A completed campaign whose mailing an operator paused first: stopped, not paused (R8).
    with transaction(engine) as s:
        campaigns.create_campaign(
            s,
            ADMIN,
            "spring done",  # lower case: sorts after upper case, bytewise, on both backends
            profiles.get_database(s, DATABASE),
            segments.get_segment(s, "north-shoppers"),
            lcg_percent="20",
            seed=5005,
        )
    with transaction(engine) as s:
        campaigns.activate(s, ADMIN, campaigns.get_campaign(s, "spring done"))
    builds.run_pending(engine, worker="parity")
    with transaction(engine) as s:
        spring = campaigns.get_campaign(s, "spring done")
        paused = mailings.create_mailing(
            s, ADMIN, "spring-weekly", spring, "regular", cron="0 9 * * 1"
        )
        mailings.set_manual_pause(s, ADMIN, paused, True)
    with transaction(engine) as s:
        campaigns.complete(s, ADMIN, campaigns.get_campaign(s, "spring done"))
    # A running recalculation on Autumn Sale (it pauses autumn-weekly) and a queued one
    # on North Push.
    with transaction(engine) as s:
        campaigns.edit_lcg(s, ADMIN, campaigns.get_campaign(s, "Autumn Sale"), percent="12")
    assert builds.claim_next_build(engine, "parity:running") is not None
    with transaction(engine) as s:
        campaigns.edit_lcg(s, ADMIN, campaigns.get_campaign(s, "North Push"), limit=10)
    yield engine
    engine.dispose()


def test_cli_json_and_console_read_models_carry_the_same_figures(world, db_url, capsys):
    engine = world
    with Session(engine) as s:
        rows = views.campaign_rows(s)  # what the campaign list screen polls
        details = {row.name: views.campaign_detail(s, row.name) for row in rows}
        history = views.builds(s, limit=50)
        health = monitor.scheduler_monitor(s)

    listed = cli_json(capsys, db_url, "campaign", "list")
    names = ["Autumn Sale", "North Push", "Old Promo", "Young Drop", "spring done"]
    assert [r.name for r in rows] == [r["name"] for r in listed] == names
    assert {r.status for r in rows} == {"draft", "active", "completed"}
    for row, item in zip(rows, listed, strict=True):
        assert (row.status, row.database, row.segment) == (
            item["status"],
            item["database"],
            item["segment"],
        )
        assert (row.members, row.test, row.control) == tuple(item["audience"].values())
        assert row.lcg_summary == item["lcg_summary"]
        assert (row.lcg_enabled, row.lcg_percent, row.lcg_limit, list(row.lcg_strata)) == tuple(
            item["lcg"].values()
        )
        assert len(row.warnings) == len(item["warnings"])
        assert row.paused_mailings == item["paused_mailings"], row.name
    by_name = {r.name: r for r in rows}
    # The bug fixed: the stopped mailing of a completed campaign is not "1 paused".
    assert by_name["spring done"].paused_mailings == 0
    # autumn-sms paused by an operator, autumn-weekly by the running build
    assert by_name["Autumn Sale"].paused_mailings == 2
    assert by_name["Autumn Sale"].build.status == "running"
    assert by_name["North Push"].build.status == "queued"
    assert by_name["Old Promo"].build is None

    for name in names:
        shown = cli_json(capsys, db_url, "campaign", "show", name)
        d = details[name]
        assert (shown["status"], shown["version"], shown["seed"]) == (d.status, d.version, d.seed)
        assert (shown["cohort"], shown["target"], shown["deficit"]) == (
            d.cohort_size,
            d.target,
            d.deficit,
        )
        assert shown["srm"] == {"p_value": d.srm_p_value, "flagged": d.srm_flagged}
        assert [
            (s["label"], s["members"], s["cohort"], s["control"], s["quota"], s["ideal"])
            for s in shown["strata"]
        ] == [(s.label, s.members, s.cohort, s.control, s.quota, s.ideal) for s in d.strata]
        assert [
            (m["name"], m["status"], m["paused"], m["paused_reason"]) for m in shown["mailings"]
        ] == [(m.name, m.status, m.paused, m.paused_reason) for m in d.mailings]
        assert [(b["id"], b["status"], b["processed"], b["total"]) for b in shown["builds"]] == [
            (b.id, b.status, b.processed, b.total) for b in d.builds
        ]

    listed_builds = cli_json(capsys, db_url, "builds")
    assert [(b["id"], b["campaign"], b["status"]) for b in listed_builds] == [
        (b.id, b.campaign, b.status) for b in history
    ]
    assert {b.status for b in history} == {"queued", "running", "done"}

    status = cli_json(capsys, db_url, "status")
    assert [b["id"] for b in status["running"]] == [b.id for b in health.running]
    assert [b["id"] for b in status["queued"]] == [b.id for b in health.queued]
    assert status["health"]["alive"] is health.health.alive is False
