"""The scriptable CLI (issue 6): every command in both output forms and every exit code.

Runs console.cli.main in-process against a real SQLite file (and PostgreSQL where the
`db_url` fixture is used). Exit codes: 0 ok, 2 usage, 3 refused (nothing changed,
audited), 4 not found, 1 unexpected.
"""

from __future__ import annotations

import json
from datetime import datetime

import pytest
import sqlalchemy as sa
from cli_helpers import Cli, external_ids_csv, r10_profiles_csv, r10_workspace
from sqlmodel import Session

from store.db import open_store
from store.models import AudienceBuild, AuditEntry, Campaign, Mailing, Profile, SegmentMember

pytestmark = pytest.mark.usefixtures("no_user_config")


def audit_entries(db_url: str, outcome: str | None = None) -> list[AuditEntry]:
    engine = open_store(db_url)
    try:
        with Session(engine) as session:
            query = sa.select(AuditEntry).order_by(AuditEntry.id)
            if outcome:
                query = query.where(AuditEntry.outcome == outcome)
            return list(session.scalars(query))
    finally:
        engine.dispose()


def count(db_url: str, model) -> int:
    engine = open_store(db_url)
    try:
        with Session(engine) as session:
            return session.scalar(sa.select(sa.func.count()).select_from(model))
    finally:
        engine.dispose()


def assert_iso_with_timezone(value: str) -> None:
    assert datetime.fromisoformat(value).tzinfo is not None, value


def active_campaign(cli: Cli, name="r10", *extra: str) -> None:
    r10_workspace(cli)
    cli.ok(
        "campaign",
        "create",
        name,
        "--database",
        "main",
        "--segment",
        "everyone",
        "--lcg",
        "15",
        "--seed",
        "7",
        *extra,
    )
    cli.ok("campaign", "activate", name, "--wait")


# --------------------------------------------------------------------------- R10 end to end


def test_r10_worked_example_end_to_end_through_the_cli(both_cli):
    """SPEC R10: 100 profiles, LCG 15 % limit 12 over int_field × region: control 12,
    quotas 1,1,1,3,3,3 and a stratification_violation warning naming the small strata."""
    cli = both_cli
    r10_workspace(cli)
    cli.ok(
        "campaign",
        "create",
        "r10",
        "--database",
        "main",
        "--segment",
        "everyone",
        "--lcg",
        "15",
        "--limit",
        "12",
        "--strata",
        "int_field,region",
    )
    activated = cli.ok("campaign", "activate", "r10", "--wait", "--json").json
    assert activated["status"] == "active"
    show = cli.ok("campaign", "show", "r10", "--json").json
    assert show["name"] == "r10" and show["status"] == "active"
    assert (show["database"], show["segment"]) == ("main", "everyone")
    assert show["lcg"] == {
        "enabled": True,
        "percent": "15",
        "limit": 12,
        "strata": ["int_field", "region"],
    }
    assert show["audience"] == {"members": 100, "test": 88, "control": 12}
    quotas = {(s["key"]["int_field"], s["key"]["region"]): s["quota"] for s in show["strata"]}
    assert quotas == {
        (20, "Moscow"): 1,
        (20, "SPb"): 1,
        (20, "Kazan"): 1,
        (80, "Moscow"): 3,
        (80, "SPb"): 3,
        (80, "Kazan"): 3,
    }
    assert sorted(s["quota"] for s in show["strata"]) == [1, 1, 1, 3, 3, 3]
    assert all(s["control"] == s["quota"] for s in show["strata"])
    ideals = {(s["key"]["int_field"], s["key"]["region"]): s["ideal"] for s in show["strata"]}
    assert ideals[(20, "Moscow")] == 0.72 and ideals[(20, "SPb")] == 0.84
    codes = [w["code"] for w in show["warnings"]]
    assert codes == ["stratification_violation"]
    assert "Moscow" in show["warnings"][0]["message"]
    assert set(show["srm"]) == {"p_value", "flagged"} and show["srm"]["flagged"] is False
    assert [(b["reason"], b["status"]) for b in show["builds"]] == [("activation", "done")]
    assert set(show["builds"][0]) >= {"id", "campaign", "reason", "status", "processed", "total"}


def test_r10_without_a_limit_gives_control_15_and_no_warning(cli):
    active_campaign(cli, "r10", "--strata", "int_field,region")
    show = cli.ok("campaign", "show", "r10", "--json").json
    assert show["audience"]["control"] == 15
    assert sorted(s["quota"] for s in show["strata"]) == [1, 1, 1, 4, 4, 4]
    assert show["warnings"] == []


# --------------------------------------------------------------------------- database, import


def test_database_create_both_forms(cli):
    text = cli.ok("database", "create", "retail", "--fields", "region:text,tier:int,age:int")
    assert "retail" in text.out and "tier:int" in text.out
    data = cli.ok("database", "create", "b2b", "--fields", "signup:date", "--json").json
    assert data == {"name": "b2b", "profiles": 0, "fields": [{"name": "signup", "type": "date"}]}
    listed = cli.ok("database", "list", "--json").json
    assert [d["name"] for d in listed] == ["b2b", "retail"]
    assert "DATABASE" in cli.ok("database", "list").out


def test_database_create_refusals_exit_3_and_are_audited(cli):
    cli.ok("database", "create", "retail", "--fields", "region:text")
    again = cli("database", "create", "retail", "--fields", "region:text")
    assert again.code == 3 and "already exists" in again.err and again.out == ""
    bad_type = cli("database", "create", "x", "--fields", "region:string")
    assert bad_type.code == 3 and "unknown type" in bad_type.err
    refused = audit_entries(cli.db_url, "refused")
    assert [(e.action, e.target_name) for e in refused] == [
        ("database.create", "retail"),
        ("database.create", "x"),
    ]
    assert "already exists" in refused[0].details["reason"]


def test_import_profiles_both_forms_and_upsert(both_cli):
    cli = both_cli
    cli.ok("database", "create", "main", "--fields", "int_field:int,region:text")
    path = cli.file("p.csv", r10_profiles_csv())
    text = cli.ok("import", "profiles", "--database", "main", path)
    assert "100 new, 0 updated" in text.out
    update = cli.file("u.csv", "external_id,region\nP000,Sochi\nNEW,Kazan\n")
    data = cli.ok("import", "profiles", "--database", "main", update, "--json").json
    assert {k: data[k] for k in ("database", "rows", "inserted", "updated")} == {
        "database": "main",
        "rows": 2,
        "inserted": 1,
        "updated": 1,
    }
    card = cli.ok("profile", "show", "P000", "--database", "main", "--json").json
    assert card["fields"] == {"int_field": 20, "region": "Sochi"}
    assert cli.ok("database", "list", "--json").json[0]["profiles"] == 101


def test_import_rejection_lists_problems_exits_3_and_changes_nothing(cli):
    cli.ok("database", "create", "main", "--fields", "int_field:int,region:text")
    cli.ok("import", "profiles", "--database", "main", cli.file("a.csv", "external_id\nA\n"))
    bad = cli.file("bad.csv", "external_id,int_field\nB,1\nC,x\nB,2\nD\n")
    result = cli("import", "profiles", "--database", "main", bad, "--json")
    assert result.code == 3 and result.out == ""
    assert "line 3, column int_field: bad type: 'x' is not a whole number" in result.err
    assert "line 4, column external_id: duplicate external_id 'B' (first on line 2)" in result.err
    assert "line 5: ragged row" in result.err
    assert count(cli.db_url, Profile) == 1
    assert cli.ok("database", "list", "--json").json[0]["profiles"] == 1
    [refusal] = audit_entries(cli.db_url, "refused")
    assert refusal.action == "profiles.import" and "bad type" in refusal.details["reason"]


def test_import_into_an_unknown_database_is_not_found(cli, tmp_path):
    result = cli("import", "profiles", "--database", "nope", cli.file("a.csv", "external_id\nA\n"))
    assert result.code == 4 and "nope" in result.err


def test_import_of_a_missing_file_is_refused(cli):
    cli.ok("database", "create", "main", "--fields", "region:text")
    result = cli("import", "profiles", "--database", "main", "/nonexistent/file.csv")
    assert result.code == 3 and "cannot read" in result.err


# --------------------------------------------------------------------------- segments


def test_segment_create_static_and_dynamic_both_forms(cli):
    cli.ok("database", "create", "main", "--fields", "int_field:int,region:text")
    assert "static segment 'vip'" in cli.ok("segment", "create", "vip").out
    data = cli.ok(
        "segment",
        "create",
        "moscow",
        "--database",
        "main",
        "--rule",
        "region = 'Moscow'",
        "--every",
        "15m",
        "--json",
    ).json
    assert data["kind"] == "dynamic" and data["every_seconds"] == 900
    assert data["database"] == "main" and data["rule"] == "region = 'Moscow'"
    cron = cli.ok(
        "segment", "create", "hourly", "--database", "main", "--rule", "int_field = 20",
        "--cron", "0 * * * *", "--json",
    ).json  # fmt: skip
    assert cron["cron"] == "0 * * * *"
    assert [s["name"] for s in cli.ok("segment", "list", "--json").json] == [
        "hourly",
        "moscow",
        "vip",
    ]
    assert "KIND" in cli.ok("segment", "list").out


def test_segment_create_bad_rule_is_refused_and_bad_every_is_a_usage_error(cli):
    cli.ok("database", "create", "main", "--fields", "region:text")
    bad_rule = cli("segment", "create", "s", "--database", "main", "--rule", "colour = 'red'")
    assert bad_rule.code == 3 and bad_rule.err
    bad_every = cli("segment", "create", "s", "--database", "main", "--rule", "x", "--every", "5d")
    assert bad_every.code == 2 and "--every" in bad_every.err
    no_rule = cli("segment", "create", "s", "--every", "5m")
    assert no_rule.code == 2 and "--rule" in no_rule.err
    assert cli.ok("segment", "list", "--json").json == []


def test_segment_add_remove_replace_and_refresh_both_forms(both_cli):
    cli = both_cli
    active_campaign(cli)  # segment "everyone" holds P000..P099, campaign r10 active
    cli.ok("import", "profiles", "--database", "main", cli.file("n.csv", "external_id,int_field,region\nN1,20,Moscow\nN2,80,SPb\n"))  # fmt: skip
    added = cli.ok(
        "segment", "add", "everyone", cli.file("n_ids.csv", external_ids_csv(["N1", "N2"])),
        "--wait", "--json",
    ).json  # fmt: skip
    assert (added["segment"], added["action"], added["added"], added["removed"]) == (
        "everyone",
        "add",
        2,
        0,
    )
    assert [(b["reason"], b["status"]) for b in added["builds"]] == [("incremental", "done")]
    show = cli.ok("campaign", "show", "r10", "--json").json
    assert show["audience"]["members"] == 102
    removed = cli.ok(
        "segment", "remove", "everyone", cli.file("r.csv", external_ids_csv(["N1", "P000"])),
    )  # fmt: skip
    assert "0 added, 2 removed" in removed.out
    assert cli.ok("campaign", "show", "r10", "--json").json["audience"]["members"] == 100
    ids = [f"P{i:03d}" for i in range(50)]
    replaced = cli.ok(
        "segment", "replace", "everyone", cli.file("half.csv", external_ids_csv(ids)), "--json"
    ).json
    assert (replaced["added"], replaced["removed"]) == (1, 51)
    card = cli.ok("profile", "show", "N1", "--database", "main", "--json").json
    assert [e["kind"] for e in card["events"]] == [
        "entered_segment",
        "entered_campaign",
        "left_segment",
        "left_campaign",
    ]


def test_segment_file_with_unknown_ids_exits_3_and_changes_nothing(cli):
    r10_workspace(cli)
    before = count(cli.db_url, SegmentMember)
    result = cli(
        "segment", "replace", "everyone", cli.file("x.csv", external_ids_csv(["P001", "GHOST"]))
    )
    assert result.code == 3
    assert "line 3, column external_id: unknown external_id 'GHOST' in 'main'" in result.err
    assert count(cli.db_url, SegmentMember) == before
    assert audit_entries(cli.db_url, "refused")[-1].action == "segment.replace"


def test_segment_refresh_both_forms_and_static_refusal(cli):
    r10_workspace(cli)
    cli.ok("segment", "create", "moscow", "--database", "main", "--rule", "region = 'Moscow'")
    text = cli.ok("segment", "refresh", "moscow")
    assert "34 entered, 0 left" in text.out
    data = cli.ok("segment", "refresh", "moscow", "--json", "--wait").json
    assert (data["entered"], data["left"], data["builds"]) == (0, 0, [])
    static = cli("segment", "refresh", "everyone")
    assert static.code == 3 and "static" in static.err
    missing = cli("segment", "refresh", "nope")
    assert missing.code == 4


# --------------------------------------------------------------------------- campaigns


def test_campaign_create_list_show_both_forms(cli):
    r10_workspace(cli)
    created = cli.ok(
        "campaign", "create", "c1", "--database", "main", "--segment", "everyone",
        "--lcg", "5.25", "--seed", "123", "--json",
    ).json  # fmt: skip
    assert created["status"] == "draft" and created["seed"] == 123
    assert created["lcg"] == {"enabled": True, "percent": "5.25", "limit": None, "strata": []}
    cli.ok("campaign", "create", "c0", "--database", "main", "--segment", "everyone")
    rows = cli.ok("campaign", "list", "--json").json
    assert [r["name"] for r in rows] == ["c0", "c1"]
    assert rows[0]["lcg"]["enabled"] is False and rows[0]["lcg"]["percent"] is None
    assert rows[1]["audience"] == {"members": 0, "test": 0, "control": 0}
    assert set(rows[1]) >= {"name", "status", "database", "segment", "lcg", "audience"}
    table = cli.ok("campaign", "list").out
    assert table.splitlines()[0].split()[:3] == ["CAMPAIGN", "STATUS", "SEGMENT"]
    assert "5.25%" in table
    shown = cli.ok("campaign", "show", "c1").out
    assert "c1 (draft)" in shown and "5.25%" in shown
    data = cli.ok("campaign", "show", "c1", "--json").json
    assert_iso_with_timezone(data["created_at"])
    for key in ("strata", "warnings", "mailings", "builds"):
        assert data[key] == []


def test_campaign_create_refusals_and_usage_errors(cli):
    r10_workspace(cli)
    base = ["campaign", "create", "c", "--database", "main", "--segment", "everyone"]
    assert cli(*base, "--lcg", "100").code == 3
    assert cli(*base, "--lcg", "5.255").code == 3
    assert cli(*base, "--lcg", "5", "--limit", "0").code == 3
    assert cli(*base, "--lcg", "5", "--strata", "colour").code == 3
    assert cli(*base, "--limit", "5").code == 2  # a limit without --lcg
    assert cli(*base, "--lcg", "5", "--limit", "many").code == 2
    assert cli("campaign", "create", "c", "--database", "nope", "--segment", "everyone").code == 4
    assert cli("campaign", "create", "c", "--database", "main", "--segment", "nope").code == 4
    assert cli.ok("campaign", "list", "--json").json == []
    assert len(audit_entries(cli.db_url, "refused")) == 4


def test_campaign_show_of_an_unknown_campaign_is_not_found(cli):
    result = cli("campaign", "show", "nope")
    assert result.code == 4 and "nope" in result.err and result.out == ""
    assert cli("campaign", "show", "nope", "--json").code == 4


def test_campaign_activate_without_wait_queues_and_builds_shows_it(cli):
    r10_workspace(cli)
    cli.ok("campaign", "create", "c", "--database", "main", "--segment", "everyone", "--lcg", "10")
    data = cli.ok("campaign", "activate", "c", "--json").json
    assert data["status"] == "active"
    assert [(b["reason"], b["status"]) for b in data["builds"]] == [("activation", "queued")]
    rows = cli.ok("builds", "--json").json
    assert [(b["campaign"], b["reason"], b["status"]) for b in rows] == [
        ("c", "activation", "queued")
    ]
    assert_iso_with_timezone(rows[0]["requested_at"])
    assert "queued" in cli.ok("builds").out
    again = cli("campaign", "activate", "c")
    assert again.code == 3 and again.err
    assert audit_entries(cli.db_url, "refused")[-1].action == "campaign.activate"


def test_campaign_lcg_edit_disable_enable_both_forms(both_cli):
    cli = both_cli
    active_campaign(cli, "r10", "--strata", "int_field,region")
    smaller = cli.ok("campaign", "lcg", "r10", "--limit", "12", "--wait", "--json").json
    assert smaller["lcg"]["limit"] == 12
    assert smaller["audience"]["control"] == 12  # R6: surplus moves to test
    assert smaller["builds"][0]["reason"] == "recalculation"
    text = cli.ok(
        "campaign", "lcg", "r10", "--no-limit", "--no-strata", "--percent", "20", "--wait"
    )
    assert "20%" in text.out
    disabled = cli.ok("campaign", "lcg", "r10", "--disable", "--wait", "--json").json
    assert disabled["lcg"]["enabled"] is False and disabled["audience"]["control"] == 0  # R7
    enabled = cli.ok("campaign", "lcg", "r10", "--enable", "--wait", "--json").json
    assert enabled["lcg"]["enabled"] is True
    assert enabled["audience"]["control"] == 0  # R5: existing members stay in test


def test_campaign_lcg_usage_and_refusals(cli):
    active_campaign(cli)
    assert cli("campaign", "lcg", "r10").code == 2  # nothing to change
    assert cli("campaign", "lcg", "r10", "--limit", "3", "--no-limit").code == 2
    assert cli("campaign", "lcg", "r10", "--enable", "--disable").code == 2
    assert cli("campaign", "lcg", "r10", "--percent", "150").code == 3
    assert cli("campaign", "lcg", "nope", "--percent", "5").code == 4
    assert cli.ok("campaign", "show", "r10", "--json").json["lcg"]["percent"] == "15"


def test_campaign_complete_needs_yes_then_is_terminal(cli):
    active_campaign(cli)
    no = cli("campaign", "complete", "r10")
    assert no.code == 2 and "--yes" in no.err
    assert cli.ok("campaign", "show", "r10", "--json").json["status"] == "active"
    data = cli.ok("campaign", "complete", "r10", "--yes", "--json").json
    assert data["status"] == "completed" and data["audience"]["members"] == 0
    assert "completed" in cli.ok("campaign", "show", "r10").out
    refused = cli("campaign", "lcg", "r10", "--percent", "5")
    assert refused.code == 3 and "completed" in refused.err
    assert cli("campaign", "complete", "r10", "--yes").code == 3
    # One action id per operation, ok or refused (issue 10 item 2): the store audits it.
    assert [e.action for e in audit_entries(cli.db_url, "refused")] == [
        "campaign.lcg_edit",
        "campaign.complete",
    ]


def test_read_only_refuses_every_write_and_changes_nothing(both_cli):
    cli = both_cli
    active_campaign(cli)
    before = count(cli.db_url, AudienceBuild), count(cli.db_url, Campaign)
    for argv in (
        ["--read-only", "campaign", "lcg", "r10", "--percent", "5"],
        ["campaign", "lcg", "r10", "--percent", "5", "--read-only"],
        ["campaign", "create", "x", "--database", "main", "--segment", "everyone", "--read-only"],
        ["segment", "create", "s", "--read-only"],
        ["database", "create", "d", "--fields", "a:int", "--read-only"],
        ["import", "profiles", "--database", "main", cli.file("a.csv", "external_id\nZ\n"), "--read-only"],
        ["mailing", "create", "m", "--campaign", "r10", "--kind", "trigger", "--on", "buy", "--read-only"],
    ):  # fmt: skip
        result = cli(*argv)
        assert result.code == 3 and "read-only" in result.err, argv
    assert (count(cli.db_url, AudienceBuild), count(cli.db_url, Campaign)) == before
    assert count(cli.db_url, Mailing) == 0
    assert len(audit_entries(cli.db_url, "refused")) == 7
    # reading is fine
    assert cli("--read-only", "campaign", "show", "r10", "--json").code == 0


# --------------------------------------------------------------------------- mailings


def test_mailing_create_pause_resume_both_forms(cli):
    active_campaign(cli)
    broadcast = cli.ok(
        "mailing", "create", "launch", "--campaign", "r10", "--kind", "broadcast",
        "--at", "2030-01-02T10:00:00+03:00", "--json",
    ).json  # fmt: skip
    assert broadcast["kind"] == "broadcast" and broadcast["send_at"] == "2030-01-02T07:00:00+00:00"
    text = cli.ok(
        "mailing", "create", "weekly", "--campaign", "r10", "--kind", "regular",
        "--cron", "0 10 * * 1", "--segment", "everyone", "--expand",
    )  # fmt: skip
    assert "regular mailing 'weekly'" in text.out
    paused = cli.ok("mailing", "pause", "weekly", "--json").json
    assert paused["paused"] is True and "paused by" in paused["paused_reason"]
    assert cli("mailing", "pause", "weekly").code == 3  # already paused
    assert "resumed" in cli.ok("mailing", "resume", "weekly").out
    show = cli.ok("campaign", "show", "r10", "--json").json
    assert [(m["name"], m["kind"], m["paused_reason"]) for m in show["mailings"]] == [
        ("launch", "broadcast", None),
        ("weekly", "regular", None),
    ]
    assert set(show["mailings"][0]) >= {"name", "kind", "status", "paused_reason", "next_run"}


def test_mailing_usage_refusals_and_not_found(cli):
    active_campaign(cli)
    assert cli("mailing", "create", "m", "--campaign", "r10", "--kind", "weekly").code == 2
    assert cli("mailing", "create", "m", "--campaign", "r10", "--kind", "broadcast", "--at", "soon").code == 2  # fmt: skip
    assert cli("mailing", "create", "m", "--campaign", "r10", "--kind", "broadcast").code == 3
    assert cli("mailing", "create", "m", "--campaign", "r10", "--kind", "regular", "--cron", "bad").code == 3  # fmt: skip
    assert (
        cli("mailing", "create", "m", "--campaign", "nope", "--kind", "trigger", "--on", "buy").code
        == 4
    )
    assert cli("mailing", "pause", "nope").code == 4
    assert count(cli.db_url, Mailing) == 0


# --------------------------------------------------------------------------- profile, builds


def test_profile_show_both_forms_and_not_found(cli):
    active_campaign(cli)
    card = cli.ok("profile", "show", "P000", "--database", "main", "--json").json
    assert card["external_id"] == "P000" and card["database"] == "main"
    assert card["fields"] == {"int_field": 20, "region": "Moscow"}
    [membership] = card["memberships"]
    assert membership["campaign"] == "r10" and membership["group"] in ("test", "control")
    assert membership["left_at"] is None
    assert_iso_with_timezone(membership["joined_at"])
    kinds = [e["kind"] for e in card["events"]]
    assert kinds == ["entered_segment", "entered_campaign"]
    for event in card["events"]:
        assert set(event) >= {"at", "kind", "campaign", "segment", "group", "build", "actor"}
        assert_iso_with_timezone(event["at"])
    text = cli.ok("profile", "show", "P000", "--database", "main").out
    assert "entered_campaign" in text and "Moscow" in text
    assert cli("profile", "show", "NOPE", "--database", "main").code == 4
    assert cli("profile", "show", "P000", "--database", "nope").code == 4
    assert cli("profile", "show", "P000").code == 2  # --database is required


def test_builds_both_forms_empty_and_filtered(cli):
    assert cli.ok("builds", "--json").json == []
    assert "no audience builds" in cli.ok("builds").out
    active_campaign(cli)
    rows = cli.ok("builds", "--json", "--campaign", "r10").json
    assert [(r["campaign"], r["reason"], r["status"]) for r in rows] == [
        ("r10", "activation", "done")
    ]
    assert rows[0]["processed"] == rows[0]["total"]
    cli.ok("campaign", "create", "other", "--database", "main", "--segment", "everyone")
    assert cli.ok("builds", "--campaign", "other", "--json").json == []  # a draft: none yet
    assert cli("builds", "--campaign", "nope", "--json").code == 4  # no such campaign


def test_status_shows_scheduler_health_and_live_builds_in_both_forms(cli):
    """Issue 4 item 7: the CLI reads scheduler health and running/queued builds."""
    from store import lease

    r10_workspace(cli)
    cli.ok("campaign", "create", "c", "--database", "main", "--segment", "everyone", "--lcg", "15")
    cli.ok("campaign", "activate", "c")  # queued: no scheduler and no --wait
    idle = cli.ok("status", "--json").json
    assert idle["health"]["alive"] is False and idle["health"]["holder"] is None
    assert [(b["campaign"], b["status"]) for b in idle["queued"]] == [("c", "queued")]
    assert "NOT RUNNING" in cli.ok("status").out

    engine = open_store(cli.db_url)
    holder = lease.make_holder("test")
    assert lease.try_acquire(engine, holder, ttl=60)
    alive = cli.ok("status", "--json").json["health"]
    assert alive["alive"] is True and alive["holder"] == holder
    text = cli.ok("status").out
    assert text.startswith("scheduler  alive") and "activation" in text and "queued" in text
    engine.dispose()


# --------------------------------------------------------------------------- exit codes


def test_usage_errors_exit_2(cli):
    assert cli("frobnicate").code == 2
    assert cli("campaign").code == 2
    assert cli("campaign", "show").code == 2
    assert cli("builds", "--limit", "x").code == 2


def test_help_exits_0(cli, capsys):
    assert cli("--help").code == 0
    assert cli("campaign", "lcg", "--help").code == 0


def test_an_unsupported_database_url_is_an_unexpected_error_exit_1(cli, capsys):
    from console.cli import main

    capsys.readouterr()
    assert main(["--db", "mysql://nowhere/x", "campaign", "list"]) == 1
    assert "unsupported database URL" in capsys.readouterr().err


def test_db_may_follow_the_command(cli, capsys):
    from console.cli import main

    r10_workspace(cli)
    capsys.readouterr()
    assert main(["segment", "list", "--json", "--db", cli.db_url]) == 0
    assert [s["name"] for s in json.loads(capsys.readouterr().out)] == ["everyone"]


def test_database_from_the_environment(cli, capsys, monkeypatch):
    from console.cli import main

    r10_workspace(cli)
    monkeypatch.setenv("CAMPAIGN_CONSOLE_DB", cli.db_url)
    capsys.readouterr()
    assert main(["campaign", "list", "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == []


def test_demo_command_builds_a_small_workspace(cli):
    result = cli("demo", "--profiles", "300")
    assert result.code == 0 and "demo workspace" in result.err
    rows = cli.ok("campaign", "list", "--json").json
    assert {r["status"] for r in rows} == {"draft", "active", "completed"}
    assert "already present" in cli("demo").err


def test_lists_are_ordered_bytewise_on_both_backends(both_cli):
    for name in ("b", "B", "a"):
        both_cli.ok("segment", "create", name)
        both_cli.ok("database", "create", name)
    assert [s["name"] for s in both_cli.ok("segment", "list", "--json").json] == ["B", "a", "b"]
    assert [d["name"] for d in both_cli.ok("database", "list", "--json").json] == ["B", "a", "b"]


def test_r3_segment_files_on_a_draft_defer_campaign_events_to_activation(both_cli):
    """SPEC R3 through segment files: segment events at once, campaign events only for the
    final state at activation (a profile removed and added back gets no extra ones)."""
    cli = both_cli
    r10_workspace(cli)
    cli.ok("campaign", "create", "d", "--database", "main", "--segment", "everyone")
    out = cli.file("out.csv", external_ids_csv(["P000", "P001"]))
    back = cli.file("back.csv", external_ids_csv(["P000"]))
    removed = cli.ok("segment", "remove", "everyone", out, "--wait", "--json").json
    assert (removed["removed"], removed["builds"]) == (2, [])
    cli.ok("segment", "add", "everyone", back, "--wait")
    before = cli.ok("profile", "show", "P000", "--database", "main", "--json").json
    assert [e["kind"] for e in before["events"]] == [
        "entered_segment",
        "left_segment",
        "entered_segment",
    ]
    cli.ok("campaign", "activate", "d", "--wait")
    returned = cli.ok("profile", "show", "P000", "--database", "main", "--json").json
    assert [e["kind"] for e in returned["events"]] == [
        "entered_segment",
        "left_segment",
        "entered_segment",
        "entered_campaign",
    ]
    gone = cli.ok("profile", "show", "P001", "--database", "main", "--json").json
    assert [e["kind"] for e in gone["events"]] == [
        "entered_segment",
        "left_segment",
        "left_campaign",
    ]
    assert cli.ok("campaign", "show", "d", "--json").json["audience"]["members"] == 99
