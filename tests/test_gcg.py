"""Global control group (R1, R11a; issue 13 §3): store and CLI, on both backends."""

from __future__ import annotations

import pytest
from cli_helpers import Cli, external_ids_csv, r10_workspace
from sqlmodel import Session

from store.audience_scope import audience_scope
from store.db import open_store
from store.explain import Reason, explain
from store.history import profile_card

pytestmark = pytest.mark.usefixtures("no_user_config")


def _session(cli: Cli):
    engine = open_store(cli.db_url)
    return engine, Session(engine)


def test_gcg_add_holds_profiles_out_of_new_campaigns_but_moves_no_member(both_cli):
    cli = both_cli
    r10_workspace(cli)
    cli.ok("campaign", "create", "before", "--database", "main", "--segment", "everyone",
           "--lcg", "15", "--seed", "7")  # fmt: skip
    cli.ok("campaign", "activate", "before", "--wait")
    held = cli.file("held.csv", external_ids_csv(["P000", "P001", "P002"]))
    added = cli.ok("gcg", "add", "main", held, "--json").json
    assert added == {"database": "main", "action": "add", "rows": 3, "changed": 3, "unchanged": 0}
    again = cli.ok("gcg", "add", "main", held, "--json").json
    assert (again["changed"], again["unchanged"]) == (0, 3)
    # R11a: a GCG change affects only future entries; current members stay
    assert cli.ok("campaign", "show", "before", "--json").json["audience"]["members"] == 100
    cli.ok("campaign", "create", "after", "--database", "main", "--segment", "everyone",
           "--lcg", "15", "--seed", "7")  # fmt: skip
    cli.ok("campaign", "activate", "after", "--wait")
    assert cli.ok("campaign", "show", "after", "--json").json["audience"]["members"] == 97
    engine, session = _session(cli)
    with session:
        assert explain(session, "main", "P000", "after").reason == Reason.EXCLUDED_GCG
        assert audience_scope(session, "after").excluded_gcg == 3
        card = profile_card(session, "main", "P000")
        assert card.in_gcg and [e.kind for e in card.events if "gcg" in e.kind] == ["entered_gcg"]
    engine.dispose()
    show = cli.ok("gcg", "show", "main", "--json").json
    assert show == {
        "database": "main",
        "percent": None,
        "seed": None,
        "size": 3,
        "profiles": 100,
        "exceptions": [],
    }
    cli.ok("gcg", "remove", "main", cli.file("one.csv", external_ids_csv(["P001"])))
    engine, session = _session(cli)
    with session:
        kinds = [e.kind for e in profile_card(session, "main", "P001").events if "gcg" in e.kind]
        assert kinds == ["entered_gcg", "left_gcg"]
    engine.dispose()
    assert cli.ok("gcg", "show", "main", "--json").json["size"] == 2


def test_gcg_exception_lets_a_campaign_reach_the_gcg(both_cli):
    cli = both_cli
    r10_workspace(cli)
    cli.ok("gcg", "add", "main", cli.file("held.csv", external_ids_csv(["P000", "P001"])))
    cli.ok("campaign", "create", "vip", "--database", "main", "--segment", "everyone")
    assert cli.ok("gcg", "except", "vip", "--json").json["changed"] is True
    assert cli.ok("gcg", "except", "vip", "--json").json["changed"] is False
    assert cli.ok("gcg", "show", "main", "--json").json["exceptions"] == ["vip"]
    cli.ok("campaign", "activate", "vip", "--wait")
    assert cli.ok("campaign", "show", "vip", "--json").json["audience"]["members"] == 100
    cli.ok("gcg", "unexcept", "vip")
    assert cli.ok("gcg", "show", "main", "--json").json["exceptions"] == []
    assert cli.ok("campaign", "show", "vip", "--json").json["audience"]["members"] == 100


def test_gcg_file_problems_are_listed_with_lines_and_nothing_changes(cli):
    r10_workspace(cli)
    bad = cli.file("bad.csv", "external_id\nP000\nNOPE\nP000\n\n")
    result = cli("gcg", "add", "main", bad)
    assert result.code == 3
    assert "line 3" in result.err and "unknown external_id 'NOPE'" in result.err
    assert "line 4" in result.err and "duplicate" in result.err
    assert cli.ok("gcg", "show", "main", "--json").json["size"] == 0
    wrong = cli("gcg", "add", "main", cli.file("wrong.csv", "id\nP000\n"))
    assert wrong.code == 3 and "external_id" in wrong.err


def test_gcg_exit_codes_and_read_only(cli):
    r10_workspace(cli)
    ids = cli.file("ids.csv", external_ids_csv(["P000"]))
    assert cli("gcg", "show", "nope").code == 4
    assert cli("gcg", "add", "nope", ids).code == 4
    assert cli("gcg", "except", "nope").code == 4
    assert cli("gcg", "frobnicate", "main").code == 2
    assert cli("--read-only", "gcg", "add", "main", ids).code == 3
    assert cli.ok("gcg", "show", "main", "--json").json["size"] == 0
    cli.ok("campaign", "create", "c", "--database", "main", "--segment", "everyone")
    assert cli("--read-only", "gcg", "except", "c").code == 3
    assert cli.ok("gcg", "show", "main", "--json").json["exceptions"] == []
