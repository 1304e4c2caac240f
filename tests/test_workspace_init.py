"""Issue 15.7: a typo in --db must not create a workspace. Only `init` (an empty
workspace) and `demo` create one; every other command, and the console, on a missing
workspace exits 1 naming the path or URL and both commands, and creates nothing (no file,
no directory, no table: on PostgreSQL not even in the `postgres` maintenance database).
Runs on SQLite and PostgreSQL."""

from __future__ import annotations

import argparse
import uuid

import pytest
import sqlalchemy as sa
from cli_helpers import Cli
from sqlalchemy.engine import make_url
from table_state import table_checksums
from test_read_only_commands import READING, leaf_commands, mutating_argv

from console.cli.main import build_parser, main
from store import migrate
from store.db import make_engine, sqlite_path
from store.models import AuditEntry

AUDIT = AuditEntry.__tablename__


pytestmark = pytest.mark.usefixtures("no_user_config")


def argv_from_parser(command: tuple[str, ...]) -> list[str]:
    """The command with a placeholder for each required argument: a new reading command
    (classified in test_read_only_commands.py) is covered without listing it here."""
    parser = build_parser()
    for name in command:
        sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
        parser = sub.choices[name]
    argv = list(command)
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):  # `builds`' optional subcommands
            continue
        if not action.option_strings and action.dest != "help":
            argv.append("x")
        elif action.required:
            argv += [action.option_strings[0], "x"]
    return argv


def every_command_argv(cli: Cli) -> dict[tuple[str, ...], list[str]]:
    reading = {c: argv_from_parser(c) for c in READING}
    reading[("gateway",)] = ["gateway", "--listen", "127.0.0.1:0"]
    return {**reading, **mutating_argv(cli)}


def our_tables(url: str) -> set[str]:
    engine = make_engine(url)
    try:
        return set(sa.inspect(engine).get_table_names())
    finally:
        engine.dispose()


def assert_nothing_created(url: str) -> None:
    path = sqlite_path(url)
    if path is not None:
        assert not path.exists() and not path.parent.exists(), "a file or directory was created"
    else:
        assert our_tables(url) == set(), "tables were created"


def assert_names_the_workspace_and_both_commands(err: str, url: str) -> None:
    path = sqlite_path(url)
    place = str(path) if path is not None else make_url(url).render_as_string(hide_password=True)
    assert f"no campaign-console workspace at {place}" in err, err
    assert "campaign-console init" in err and "campaign-console demo" in err, err
    assert "Traceback" not in err and "[SQL:" not in err and "sqlalche.me" not in err


def missing_place(empty_db_url: str, tmp_path) -> str:
    """A typo: on SQLite a path in a directory that does not exist either."""
    if sqlite_path(empty_db_url) is not None:
        return f"sqlite:///{tmp_path / 'typo' / 'workspce.db'}"
    return empty_db_url  # an empty PostgreSQL schema


def test_every_command_but_init_and_demo_refuses_a_missing_workspace(
    empty_db_url, capsys, tmp_path
):
    url = missing_place(empty_db_url, tmp_path)
    every = every_command_argv(Cli(url, capsys, tmp_path))
    commands = set(leaf_commands(build_parser()))
    assert commands == set(every), "give every command an argv here"
    for command, argv in sorted(every.items()):
        if command in {("init",), ("demo",)}:
            continue  # the two creators
        for flags in ([], ["--read-only"]):
            capsys.readouterr()
            code = main(["--db", url, *flags, *argv])
            err = capsys.readouterr().err
            # A read-only actor is refused its mutating commands before anything opens.
            if flags and command not in READING and code == 3:
                assert "read-only" in err, (command, err)
            else:
                assert code == 1, (command, flags, code, err)
                assert_names_the_workspace_and_both_commands(err, url)
            assert_nothing_created(url)


def test_the_console_refuses_a_missing_workspace(empty_db_url, capsys, tmp_path):
    url = missing_place(empty_db_url, tmp_path)
    assert main(["--db", url]) == 1  # no command: the console
    assert_names_the_workspace_and_both_commands(capsys.readouterr().err, url)
    assert_nothing_created(url)


def test_init_creates_an_empty_workspace_once_and_audits_it(empty_db_url, capsys, tmp_path):
    url = missing_place(empty_db_url, tmp_path)
    cli = Cli(url, capsys, tmp_path)
    created = cli.ok("init", "--json").json
    assert created["created"] is True and created["revision"] == migrate.head()
    assert our_tables(url) >= {"campaign", "profile", AUDIT, "alembic_version"}
    entries = cli.ok("audit", "--json").json
    assert [(e["action"], e["outcome"]) for e in entries] == [("workspace.init", "ok")]
    assert cli.ok("campaign", "list", "--json").json == []

    again = cli.ok("init", "--json").json  # an empty workspace stays as it is
    assert again["created"] is False

    cli.ok("database", "create", "main", "--fields", "region:text")
    engine = make_engine(url)
    try:
        before = table_checksums(engine, skip=(AUDIT,))
        refused = cli("init")
        assert refused.code == 3 and "already holds data" in refused.err, refused.err
        assert table_checksums(engine, skip=(AUDIT,)) == before
    finally:
        engine.dispose()
    refusal = cli.ok("audit", "--json", "--action", "workspace.init").json[0]
    assert refusal["outcome"] == "refused" and "already holds data" in refusal["details"]["reason"]


def test_read_only_actor_cannot_init(empty_db_url, capsys, tmp_path):
    url = missing_place(empty_db_url, tmp_path)
    result = Cli(url, capsys, tmp_path)("--read-only", "init")
    assert result.code == 3 and "read-only" in result.err
    assert_nothing_created(url)


def test_init_refuses_an_sqlite_file_of_another_application(tmp_path, capsys):
    import sqlite3

    path = tmp_path / "other.db"
    with sqlite3.connect(path) as conn:
        conn.execute("CREATE TABLE invoices (id INTEGER PRIMARY KEY)")
    result = Cli(str(path), capsys, tmp_path)("init")
    assert result.code == 3 and "another application" in result.err
    # Any other command says what the file is, and does not send the user to `init`
    listed = Cli(str(path), capsys, tmp_path)("campaign", "list")
    assert listed.code == 1 and "another application: tables invoices" in listed.err
    assert "campaign-console init" not in listed.err, listed.err
    with sqlite3.connect(path) as conn:
        tables = {r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type='table'")}
    assert tables == {"invoices"}


def test_demo_creates_its_workspace(tmp_path, capsys):
    url = f"sqlite:///{tmp_path / 'new' / 'demo.db'}"
    assert main(["--db", url, "demo", "--profiles", "200"]) == 0, capsys.readouterr().err
    assert Cli(url, capsys, tmp_path).ok("campaign", "list", "--json").json


def maintenance_url(schema_url: str) -> str:
    """The test server's URL without the fixture's search_path: the database's own schema."""
    return (
        make_url(schema_url)
        .difference_update_query(["options"])
        .render_as_string(hide_password=False)
    )


@pytest.mark.postgres
def test_a_missing_postgres_database_is_named_and_not_created(empty_postgres_url, capsys):
    name = f"cc_typo_{uuid.uuid4().hex[:8]}"
    url = make_url(maintenance_url(empty_postgres_url)).set(database=name)
    url = url.render_as_string(hide_password=False)
    for command in (["campaign", "list"], ["init"]):  # init does not create databases
        assert main(["--db", url, *command]) == 1
        err = capsys.readouterr().err
        assert f"no campaign-console workspace at {url}" in err, err
        assert f"the database '{name}' does not exist" in err
        # the way out, not the command that just failed on its own
        assert f"create the database first (`createdb {name}`), then run" in err, err
        assert "campaign-console demo" not in err and "Traceback" not in err


@pytest.mark.postgres
def test_a_read_command_creates_nothing_in_the_postgres_maintenance_database(
    empty_postgres_url, capsys
):
    admin = maintenance_url(empty_postgres_url)  # e.g. the `postgres` database
    before = our_tables(admin)
    if "campaign" in before:
        pytest.skip("the maintenance database already holds a workspace")
    for argv in (["campaign", "list", "--json"], ["status"], ["--read-only", "builds"]):
        assert main(["--db", admin, *argv]) == 1
        assert_names_the_workspace_and_both_commands(capsys.readouterr().err, admin)
    assert our_tables(admin) == before
