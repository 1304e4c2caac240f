"""Issue 15.5: read-only where the backend can make it real.

PostgreSQL: `database grant-read-only ROLE` makes a role with SELECT only; a client
connected as it is read-only whatever its flags (every mutating command, enumerated from
the parser, is refused with exit 3 and changes nothing), and its refusals are still
audited, through the one SECURITY DEFINER function the role may call.

SQLite: a read-only actor opens the file with mode=ro (no code path can write it); its
refusals are audited through a separate connection; a WAL workspace whose -shm index is
missing and cannot be created is reported plainly.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest
import sqlalchemy as sa
from cli_helpers import Cli
from sqlalchemy.engine import make_url
from table_state import table_checksums
from test_read_only_commands import mutating_argv, mutating_workspace

from store.db import make_engine, open_store, read_only_role, sqlite_path
from store.models import AuditEntry

AUDIT = AuditEntry.__tablename__


pytestmark = pytest.mark.usefixtures("no_user_config")


def populated(cli: Cli) -> None:
    mutating_workspace(cli)


@pytest.fixture
def viewer_role(postgres_url):
    """A fresh role name, dropped (with its privileges) afterwards: roles are cluster-wide."""
    role = f"cc_ro_{uuid.uuid4().hex[:10]}"
    yield role
    admin = make_engine(postgres_url)
    try:
        with admin.begin() as conn:
            if conn.execute(
                sa.text("SELECT 1 FROM pg_roles WHERE rolname = :r"), {"r": role}
            ).first():
                conn.exec_driver_sql(f'DROP OWNED BY "{role}"')
                conn.exec_driver_sql(f'DROP ROLE "{role}"')
    finally:
        admin.dispose()


def as_role(url: str, role: str) -> str:
    return make_url(url).set(username=role, password=None).render_as_string(hide_password=False)


@pytest.mark.postgres
def test_a_client_connected_as_a_read_only_role_is_read_only_whatever_its_flags(
    postgres_url, viewer_role, capsys, tmp_path
):
    owner = Cli(postgres_url, capsys, tmp_path)
    populated(owner)
    granted = owner.ok("database", "grant-read-only", viewer_role, "--json").json
    assert granted["role"] == viewer_role and granted["created"] is True
    assert owner.ok("database", "grant-read-only", viewer_role, "--json").json["created"] is False

    viewer_url = as_role(postgres_url, viewer_role)
    viewer = Cli(viewer_url, capsys, tmp_path)
    assert [c["name"] for c in viewer.ok("campaign", "list", "--json").json] == ["r10", "r11"]
    assert viewer.ok("campaign", "show", "r10", "--json").json["name"] == "r10"

    engine = make_engine(postgres_url)
    try:
        for command, argv in mutating_argv(viewer).items():
            if command == ("database", "grant-read-only"):
                argv = ["database", "grant-read-only", f"{viewer_role}_x"]
            before = table_checksums(engine, skip=(AUDIT,))
            result = viewer(*argv)  # no --read-only flag: the role decides
            assert result.code == 3, (command, result.code, result.err)
            assert f"PostgreSQL role {viewer_role!r}" in result.err, (command, result.err)
            assert table_checksums(engine, skip=(AUDIT,)) == before, command
    finally:
        engine.dispose()

    refusals = [
        e for e in owner.ok("audit", "--json", "--limit", "200").json if e["outcome"] == "refused"
    ]
    audited = {e["action"] for e in refusals}
    for action in ("campaign.activate", "campaign.edit_lcg", "segment.create", "mailing.pause"):
        assert any(a.startswith(action.split(".")[0]) for a in audited), (action, audited)
    assert all(e["role"] == "read_only" for e in refusals)
    assert {e["details"].get("db_role") for e in refusals} == {viewer_role}


@pytest.mark.postgres
def test_the_read_only_role_can_write_nothing_but_its_own_refusals(
    postgres_url, viewer_role, capsys, tmp_path
):
    owner = Cli(postgres_url, capsys, tmp_path)
    populated(owner)
    owner.ok("database", "grant-read-only", viewer_role)
    viewer = open_store(as_role(postgres_url, viewer_role))
    try:
        assert read_only_role(viewer) == viewer_role
        for statement in (
            "UPDATE campaign SET name = 'x'",
            "INSERT INTO audit_log (at, actor, role, origin, action, target_type, outcome, "
            "details) VALUES (now(), 'mallory', 'operator', 'local', 'campaign.activate', "
            "'campaign', 'ok', '{}')",
            "DELETE FROM audit_log",
            "CREATE TABLE evil (id int)",
        ):
            with (
                pytest.raises(sa.exc.ProgrammingError, match="permission denied"),
                viewer.begin() as conn,
            ):
                conn.exec_driver_sql(statement)
        with viewer.begin() as conn:  # the one thing it may do: append a refusal
            conn.exec_driver_sql(
                "SELECT cc_audit_refusal('mallory', 'local', 'campaign.activate', 'campaign', "
                "NULL, 'r10', '{\"role\": \"operator\"}')"
            )
        with viewer.connect() as conn:
            row = conn.exec_driver_sql(
                "SELECT role, outcome, details FROM audit_log ORDER BY id DESC LIMIT 1"
            ).one()
        assert row.role == "read_only" and row.outcome == "refused"
        assert row.details["db_role"] == viewer_role
    finally:
        viewer.dispose()


@pytest.mark.postgres
def test_tables_a_later_revision_adds_are_readable_by_the_role(
    postgres_url, viewer_role, capsys, tmp_path
):
    owner = Cli(postgres_url, capsys, tmp_path)
    owner.ok("database", "grant-read-only", viewer_role)
    admin = make_engine(postgres_url)
    try:
        with admin.begin() as conn:  # what a new revision does, run by the same owner
            conn.exec_driver_sql("CREATE TABLE added_later (id int)")
            conn.exec_driver_sql("INSERT INTO added_later VALUES (1)")
    finally:
        admin.dispose()
    viewer = make_engine(as_role(postgres_url, viewer_role))
    try:
        with viewer.connect() as conn:
            assert conn.exec_driver_sql("SELECT id FROM added_later").scalar() == 1
    finally:
        viewer.dispose()


@pytest.mark.postgres
def test_grant_read_only_refuses_bad_role_names_and_superusers(postgres_url, capsys, tmp_path):
    owner = Cli(postgres_url, capsys, tmp_path)
    for role, message in [
        ('x"; DROP TABLE campaign; --', "not allowed"),
        ("Viewer", "not allowed"),
        ("postgres", "superuser"),
    ]:
        result = owner("database", "grant-read-only", role)
        assert result.code == 3 and message in result.err, (role, result.err)


def test_grant_read_only_on_sqlite_points_at_the_file_and_the_gateway(sqlite_url, capsys, tmp_path):
    result = Cli(sqlite_url, capsys, tmp_path)("database", "grant-read-only", "viewer")
    assert result.code == 3
    assert "for PostgreSQL" in result.err and "SSH gateway" in result.err


# --------------------------------------------------------------------------- SQLite


def test_a_read_only_actor_opens_the_sqlite_file_read_only(sqlite_url, capsys, tmp_path):
    cli = Cli(sqlite_url, capsys, tmp_path)
    populated(cli)
    engine = open_store(sqlite_url, read_only=True)
    try:
        with (
            pytest.raises(sa.exc.OperationalError, match="readonly database"),
            engine.begin() as conn,
        ):
            conn.exec_driver_sql("UPDATE campaign SET name = 'x'")
    finally:
        engine.dispose()
    # Reads work, refusals are still audited (through a separate read-write connection).
    assert cli.ok("--read-only", "campaign", "list", "--json").json[0]["name"] == "r10"
    refused = cli("--read-only", "campaign", "activate", "r10")
    assert refused.code == 3 and "read-only" in refused.err
    entry = cli.ok("audit", "--json", "--action", "campaign.activate").json[0]
    assert entry["outcome"] == "refused" and entry["role"] == "read_only"


def _immutable(path) -> bool:
    """chattr +i: even root may not create files in the directory (a reader without
    write access to it, as a root test can have one)."""
    if shutil.which("chattr") is None:
        return False
    return subprocess.run(["chattr", "+i", str(path)], capture_output=True).returncode == 0


def test_a_wal_workspace_read_only_without_its_index_is_explained_and_works_while_open(
    tmp_path, capsys
):
    directory = tmp_path / "shared"
    directory.mkdir()
    url = f"sqlite:///{directory / 'ws.db'}"
    cli = Cli(url, capsys, tmp_path)
    cli.ok("init")
    cli.ok("database", "create", "main", "--fields", "region:text")
    path = sqlite_path(url)
    assert not (directory / "ws.db-shm").exists()  # the last connection removed it
    if not _immutable(directory):
        message = "chattr +i is not available here (needs root and a file system that has it)"
        if os.environ.get("CI"):  # as for PostgreSQL (tests/conftest.py): CI never skips
            pytest.fail(message)
        pytest.skip(message)
    try:
        refused = cli("--read-only", "database", "list")
        assert refused.code == 1
        assert f"cannot read {path} read-only" in refused.err
        assert "ws.db-shm" in refused.err and "scheduler" in refused.err
    finally:
        subprocess.run(["chattr", "-i", str(directory)], check=True)

    operator = open_store(url)  # an operator's console: keeps -wal and -shm present
    try:
        with operator.connect() as conn:
            conn.exec_driver_sql("SELECT count(*) FROM campaign").scalar()
            assert (directory / "ws.db-shm").exists()
            assert _immutable(directory)
            try:
                listed = cli("--read-only", "database", "list", "--json")
                assert listed.code == 0, listed.err
                assert [d["name"] for d in listed.json] == ["main"]
            finally:
                subprocess.run(["chattr", "-i", str(directory)], check=True)
    finally:
        operator.dispose()


@pytest.mark.postgres
def test_the_console_connected_as_a_read_only_role_is_read_only_whatever_it_was_given(
    postgres_url, viewer_role, capsys, tmp_path
):
    from console.app import CampaignConsole
    from store.actors import Actor
    from store.db import engine_options

    owner = Cli(postgres_url, capsys, tmp_path)
    populated(owner)
    owner.ok("database", "grant-read-only", viewer_role)
    app = CampaignConsole(as_role(postgres_url, viewer_role), Actor("alice", "operator"))
    try:
        assert app.actor.read_only and app.actor.db_role == viewer_role
        assert app.embed_scheduler is False  # a read-only console never runs builds
        assert "read_only" in app.sub_title
        assert engine_options(app.engine).read_only is False  # PostgreSQL: the role decides
    finally:
        app.engine.dispose()


def test_a_read_only_console_opens_the_sqlite_file_read_only(sqlite_url):
    from console.app import CampaignConsole
    from store.actors import Actor
    from store.db import engine_options

    app = CampaignConsole(sqlite_url, Actor("bob", "read_only"))
    try:
        assert engine_options(app.engine).read_only is True
        with (
            pytest.raises(sa.exc.OperationalError, match="readonly database"),
            app.engine.begin() as conn,
        ):
            conn.exec_driver_sql("DELETE FROM audit_log")
    finally:
        app.engine.dispose()
