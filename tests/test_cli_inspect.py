"""CLI of issue 13: `campaign members` and `profile explain`, both output forms, every
exit code, on both backends where it matters."""

from __future__ import annotations

import csv
import io
import json

import pytest
from cli_helpers import Cli, r10_workspace

pytestmark = pytest.mark.usefixtures("no_user_config")


def r10_active(cli: Cli) -> None:
    r10_workspace(cli)
    cli.ok(
        "campaign", "create", "r10", "--database", "main", "--segment", "everyone",
        "--lcg", "15", "--strata", "int_field,region", "--seed", "7",
    )  # fmt: skip
    cli.ok("campaign", "activate", "r10", "--wait")


def test_campaign_members_csv_and_json_agree_and_match_the_counters(both_cli):
    cli = both_cli
    r10_active(cli)
    out = cli.ok("campaign", "members", "r10").out
    rows = list(csv.DictReader(io.StringIO(out)))
    assert list(rows[0]) == ["external_id", "group", "stratum", "joined_at", "source", "cohort"]
    assert len(rows) == 100
    assert sum(r["group"] == "control" for r in rows) == 15  # R10 worked example
    assert {r["source"] for r in rows} == {"activation"} and {r["cohort"] for r in rows} == {"1"}
    assert rows[0]["stratum"].startswith("int_field=")
    as_json = cli.ok("campaign", "members", "r10", "--format", "json").json
    assert sorted(r["external_id"] for r in as_json) == sorted(r["external_id"] for r in rows)
    assert {r["external_id"]: r["group"] for r in as_json} == {
        r["external_id"]: r["group"] for r in rows
    }
    assert isinstance(as_json[0]["stratum"]["int_field"], int)
    assert cli.ok("campaign", "members", "r10", "--json").json == as_json  # as other commands
    control = cli.ok("campaign", "members", "r10", "--group", "control", "--format", "json").json
    assert len(control) == 15
    small = cli.ok(
        "campaign",
        "members",
        "r10",
        "--stratum",
        "int_field=20,region=Moscow",
        "--group",
        "control",
    ).out
    assert len(list(csv.DictReader(io.StringIO(small)))) == 1  # quota 1 (R10)


def test_campaign_members_to_a_file_and_empty_results(cli, tmp_path):
    r10_active(cli)
    target = tmp_path / "members.csv"
    result = cli.ok("campaign", "members", "r10", "--output", str(target))
    assert result.out == "" and "wrote 100 members" in result.err
    assert len(target.read_text().splitlines()) == 101
    none = cli.ok("campaign", "members", "r10", "--stratum", "region=Paris", "--format", "json")
    assert none.json == []
    header_only = cli.ok("campaign", "members", "r10", "--stratum", "region=Paris").out
    assert header_only.splitlines() == ["external_id,group,stratum,joined_at,source,cohort"]


def test_campaign_members_exit_codes(cli, tmp_path):
    r10_active(cli)
    target = tmp_path / "never.csv"
    assert cli("campaign", "members", "nope").code == 4
    refused = cli("campaign", "members", "r10", "--stratum", "tier=1", "--output", str(target))
    assert refused.code == 3 and "not a strata field" in refused.err
    assert not target.exists()  # refused before anything was written
    assert cli("campaign", "members", "r10", "--group", "vip").code == 2
    assert cli("campaign", "members", "r10", "--format", "xml").code == 2
    # --output naming a directory, or a file in no directory: exit 2, no file left behind
    folder = tmp_path / "outdir"
    folder.mkdir()
    into_dir = cli("campaign", "members", "r10", "--output", str(folder))
    assert into_dir.code == 2 and "is a directory: name a file" in into_dir.err, into_dir.err
    nowhere = cli("campaign", "members", "r10", "--output", str(tmp_path / "no" / "m.csv"))
    assert nowhere.code == 2 and f"no directory {tmp_path / 'no'}" in nowhere.err, nowhere.err
    assert sorted(p.name for p in tmp_path.iterdir() if "partial" in p.name) == []
    # a file the system refuses to create (its name too long): said plainly, exit 1
    long = cli("campaign", "members", "r10", "--output", str(tmp_path / ("m" * 300)))
    assert long.code == 1 and "File name too long; nothing written" in long.err, long.err
    assert "Traceback" not in long.err and "Errno" not in long.err


def test_profile_explain_json_and_text_and_exit_codes(both_cli):
    cli = both_cli
    r10_active(cli)
    rows = list(csv.DictReader(io.StringIO(cli.ok("campaign", "members", "r10").out)))
    control = next(r["external_id"] for r in rows if r["group"] == "control")
    why = cli.ok(
        "profile", "explain", control, "--database", "main", "--campaign", "r10", "--json"
    ).json
    assert set(why) == {"external_id", "campaign", "state", "group", "reason", "detail"}
    assert (why["state"], why["group"], why["reason"]) == (
        "member",
        "control",
        "control_within_quota",
    )
    assert why["detail"]["rank"] <= why["detail"]["quota"]
    json.dumps(why)  # plain JSON
    text = cli.ok("profile", "explain", control, "--database", "main", "--campaign", "r10").out
    assert "control_within_quota" in text and "rank" in text
    assert cli("profile", "explain", "nobody", "--database", "main", "--campaign", "r10").code == 4
    assert cli("profile", "explain", control, "--database", "main", "--campaign", "no").code == 4
    assert cli("profile", "explain", control, "--database", "main").code == 2


def test_segment_show_json_text_and_not_found(both_cli):
    cli = both_cli
    r10_active(cli)
    cli.ok(
        "segment",
        "create",
        "young",
        "--database",
        "main",
        "--rule",
        "int_field < 50",
        "--every",
        "15m",
    )
    cli.ok("segment", "refresh", "young")
    show = cli.ok("segment", "show", "young", "--json").json
    assert show["kind"] == "dynamic" and show["members"] == 20 and show["schedule"] == "every 15m"
    assert show["last_refresh"]["entered"] == 20 and show["last_refresh"]["left"] == 0
    assert show["next_refresh_at"] > show["last_refresh"]["at"]
    static = cli.ok("segment", "show", "everyone", "--json").json
    assert static["campaigns"] == ["r10"] and static["last_refresh"] is None
    listed = {row["name"]: row for row in cli.ok("segment", "list", "--json").json}
    assert listed["young"] == show and listed["everyone"] == static  # one read model
    text = cli.ok("segment", "show", "young").out
    assert "every 15m" in text and "20 entered, 0 left" in text
    assert cli("segment", "show", "nope").code == 4
