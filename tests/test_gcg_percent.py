"""GCG selection by percent (R11a): deterministic, decided for new profiles on creation,
operators' file choices win, the release-1 workspace upgrades to it."""

from __future__ import annotations

import sqlite3

import pytest
from cli_helpers import external_ids_csv, r10_workspace
from test_migrations import assert_release1_answers_unchanged, release1_copy

from store.gcg import threshold
from store.hashing import assignment_hash

pytestmark = pytest.mark.usefixtures("no_user_config")


def test_gcg_set_selects_by_the_hash_keeps_file_choices_and_decides_new_profiles(both_cli):
    cli = both_cli
    r10_workspace(cli)
    cli.ok("gcg", "add", "main", cli.file("vip.csv", external_ids_csv(["P050"])))
    result = cli.ok("gcg", "set", "main", "--percent", "20", "--json").json
    seed = result["seed"]
    assert result["percent"] == "20" and isinstance(seed, int)
    expected = {
        f"P{i:03d}" for i in range(100) if assignment_hash(seed, f"P{i:03d}") < threshold(2000)
    }
    expected.add("P050")  # an operator's add beats the percent rule
    assert result["size"] == len(expected)
    show = cli.ok("gcg", "show", "main", "--json").json
    assert (show["percent"], show["seed"], show["size"]) == ("20", seed, len(expected))
    card = cli.ok(
        "profile", "show", next(iter(expected - {"P050"})), "--database", "main", "--json"
    ).json
    assert card["in_gcg"] and [e["kind"] for e in card["events"] if "gcg" in e["kind"]] == [
        "entered_gcg"
    ]
    # the same seed and percent again: nothing changes (deterministic)
    assert cli.ok("gcg", "set", "main", "--percent", "20", "--json").json["changed"] == 0
    # new profiles are decided on creation by the same rule
    new = [f"N{i:03d}" for i in range(40)]
    cli.ok("import", "profiles", "--database", "main",
           cli.file("new.csv", "external_id,int_field,region\n" + "".join(f"{e},20,Moscow\n" for e in new)))  # fmt: skip
    in_gcg = {e for e in new if assignment_hash(seed, e) < threshold(2000)}
    for e in new[:10]:
        shown = cli.ok("profile", "show", e, "--database", "main", "--json").json
        assert shown["in_gcg"] == (e in in_gcg), e
    # 0 switches the percent off; the operator's P050 stays
    off = cli.ok("gcg", "set", "main", "--percent", "0", "--json").json
    assert off["percent"] is None and off["size"] == 1
    too_much = cli("gcg", "set", "main", "--percent", "150")
    assert too_much.code == 3 and "GCG percent must be strictly between 0 and 100" in too_much.err
    assert "LCG" not in too_much.err  # the global control group, not a campaign's local one
    assert cli("--read-only", "gcg", "set", "main", "--percent", "5").code == 3


def test_release1_workspace_upgrades_to_gcg_selection(tmp_path, capsys):
    path = release1_copy(tmp_path)
    with sqlite3.connect(path) as conn:
        held = conn.execute("SELECT COUNT(*) FROM profile WHERE in_gcg").fetchone()[0]
    url = f"sqlite:///{path}"
    assert_release1_answers_unchanged(capsys, url)  # opens (upgrades) it first
    with sqlite3.connect(path) as conn:
        columns = {r[1] for r in conn.execute("PRAGMA table_info(profile_database)")}
        assert {"gcg_percent_bp", "gcg_seed"} <= columns
        assert conn.execute("SELECT COUNT(*) FROM profile WHERE in_gcg").fetchone()[0] == held
        # release 1's GCG members are kept as operators' choices
        assert conn.execute("SELECT COUNT(*) FROM profile WHERE gcg_override").fetchone()[0] == held
