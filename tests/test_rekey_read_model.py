"""Issue 15.4: changing an active campaign's strata to a field of another type commits, and
the read model shows the campaign at every moment of the re-key (exit 0, never a crash);
the old keys are never read with the new field's type (no `tier=Kazan`)."""

from __future__ import annotations

from cli_helpers import Cli, r10_workspace

from store import strata


def test_a_key_of_the_previous_strata_is_not_read_with_the_new_types():
    types = {"tier": "int", "region": "text", "signup": "date"}
    assert strata.decode("Kazan", ["tier"], types) == {"key": "Kazan"}
    assert strata.decode("20", ["tier"], types) == {"tier": "20"}
    assert strata.decode("-3", ["tier"], types) == {"tier": "-3"}
    assert strata.decode("", ["tier"], types) == {"tier": None}
    assert strata.decode("Kazan", ["signup"], types) == {"key": "Kazan"}
    assert strata.label("Kazan", ["tier"], types) == "key=Kazan"


def test_re_keying_strata_to_another_type_exits_0_and_show_works_throughout(
    db_url, capsys, tmp_path
):
    cli = Cli(db_url, capsys, tmp_path)
    r10_workspace(cli)  # fields int_field:int, region:text
    cli.ok("campaign", "create", "c", "--database", "main", "--segment", "everyone",
           "--lcg", "15", "--strata", "region", "--seed", "7")  # fmt: skip
    cli.ok("campaign", "activate", "c", "--wait")
    changed = cli("campaign", "lcg", "c", "--strata", "int_field")  # queued, not yet run
    assert changed.code == 0, changed.err
    during = cli.ok("campaign", "show", "c", "--json").json
    assert during["lcg"]["strata"] == ["int_field"]
    assert all("int_field" not in s["key"] or isinstance(s["key"]["int_field"], int)
               for s in during["strata"])  # fmt: skip
    assert "int_field=Kazan" not in cli.ok("campaign", "show", "c").out
    assert cli("campaign", "lcg", "c", "--strata", "int_field").code in (0, 3)  # no crash
    cli.ok("builds", "--json")
    from store import builds
    from store.db import make_engine

    engine = make_engine(db_url)
    try:
        builds.run_pending(engine, worker="test")
    finally:
        engine.dispose()
    after = cli.ok("campaign", "show", "c", "--json").json
    assert sorted(s["key"]["int_field"] for s in after["strata"]) == [20, 80]
