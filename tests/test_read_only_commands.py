"""Issue 15.5 and "keep it held": every mutating command, enumerated from the CLI parser
itself, is refused for a read-only actor (exit 3, "read-only") and changes nothing. A new
command must be classified below as reading or mutating, or this test fails."""

from __future__ import annotations

import argparse

from cli_helpers import Cli, r10_workspace
from table_state import table_checksums

from console.cli.main import build_parser
from store.db import make_engine
from store.models import AuditEntry

READING = {
    ("database", "list"),
    ("segment", "list"),
    ("campaign", "list"),
    ("campaign", "show"),
    ("profile", "show"),
    ("status",),
    ("builds",),
    ("audit",),
    ("campaign", "members"),
    ("profile", "explain"),
    ("segment", "show"),
    ("gcg", "show"),
    ("mailing", "show"),
    # Serves consoles over SSH; each session's role comes from its key (gateway helper's).
    ("gateway",),
}


def mutating_workspace(cli: Cli) -> None:
    """What the argv of `mutating_argv` name: campaign r10 (a draft) with mailing m1, and
    campaign r11, whose activation is build #1."""
    r10_workspace(cli)
    cli.ok("campaign", "create", "r10", "--database", "main", "--segment", "everyone")
    cli.ok("mailing", "create", "m1", "--campaign", "r10", "--kind", "trigger", "--on", "buy")
    cli.ok("campaign", "create", "r11", "--database", "main", "--segment", "everyone")
    cli.ok("campaign", "activate", "r11", "--wait")


def mutating_argv(cli: Cli) -> dict[tuple[str, ...], list[str]]:
    ids = cli.file("ids.csv", "external_id\nP001\n")
    events = cli.file("events.csv", "external_id,event,at\nP001,buy,\n")
    return {
        ("init",): ["init"],  # issue 15.7: creates an empty workspace
        ("demo",): ["demo", "--reset", "--profiles", "200"],
        ("scheduler",): ["scheduler"],
        ("database", "create"): ["database", "create", "d2", "--fields", "a:int"],
        ("database", "upgrade"): ["database", "upgrade"],
        ("database", "grant-read-only"): ["database", "grant-read-only", "cc_viewer"],
        ("import", "profiles"): ["import", "profiles", "--database", "main", ids],
        ("segment", "create"): ["segment", "create", "s2"],
        ("segment", "add"): ["segment", "add", "everyone", ids],
        ("segment", "remove"): ["segment", "remove", "everyone", ids],
        ("segment", "replace"): ["segment", "replace", "everyone", ids],
        ("segment", "refresh"): ["segment", "refresh", "everyone"],
        ("campaign", "create"): ["campaign", "create", "c2", "--database", "main", "--segment", "everyone"],
        ("campaign", "activate"): ["campaign", "activate", "r10"],
        ("campaign", "lcg"): ["campaign", "lcg", "r10", "--percent", "7"],
        ("campaign", "complete"): ["campaign", "complete", "r10", "--yes"],
        ("mailing", "create"): ["mailing", "create", "m2", "--campaign", "r10", "--kind", "trigger", "--on", "buy"],
        ("event", "send"): ["event", "send", "--database", "main", "P001", "buy"],
        ("events", "import"): ["events", "import", "--database", "main", events],
        ("mailing", "pause"): ["mailing", "pause", "m1"],
        ("mailing", "resume"): ["mailing", "resume", "m1"],
        ("gcg", "set"): ["gcg", "set", "main", "--percent", "5"],
        ("gcg", "add"): ["gcg", "add", "main", ids],
        ("gcg", "remove"): ["gcg", "remove", "main", ids],
        ("gcg", "except"): ["gcg", "except", "r10"],
        ("gcg", "unexcept"): ["gcg", "unexcept", "r10"],
        ("builds", "retry"): ["builds", "retry", "1"],  # r11's activation
        ("builds", "cancel"): ["builds", "cancel", "1"],
    }  # fmt: skip


def leaf_commands(parser: argparse.ArgumentParser, prefix: tuple[str, ...] = ()):
    """Every command path the parser accepts, e.g. ("campaign", "lcg")."""
    actions = [a for a in parser._actions if isinstance(a, argparse._SubParsersAction)]
    if not actions or (prefix and not actions[0].required):  # `builds` alone is one too
        yield prefix
    if not actions:
        return
    for name, sub in actions[0].choices.items():
        yield from leaf_commands(sub, (*prefix, name))


def test_every_command_is_classified_as_reading_or_mutating(tmp_path, capsys):
    commands = set(leaf_commands(build_parser()))
    mutating = set(mutating_argv(Cli("unused", capsys, tmp_path)))
    unclassified = commands - READING - mutating
    assert not unclassified, f"classify these commands in {__file__}: {sorted(unclassified)}"
    assert not (READING | mutating) - commands, "a classified command no longer exists"


def test_every_mutating_command_is_refused_for_a_read_only_actor(db_url, capsys, tmp_path):
    cli = Cli(db_url, capsys, tmp_path)
    mutating_workspace(cli)
    engine = make_engine(db_url)
    try:
        for command, argv in mutating_argv(cli).items():
            before = table_checksums(engine, skip=(AuditEntry.__tablename__,))
            result = cli("--read-only", *argv)
            assert result.code == 3 and "read-only" in result.err, (command, result.err)
            assert table_checksums(engine, skip=(AuditEntry.__tablename__,)) == before, command
    finally:
        engine.dispose()
