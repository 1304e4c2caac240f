"""Schema revisions (store/migrate.py): every database reaches head without losing a row.

tests/data/release1_workspace.db was made by release 1 itself (make_release1_workspace.py
at commit 48dcb20), with release1_expected.json holding what release 1 printed for every
profile card and campaign. An upgraded workspace must print the same. Every later schema
revision adds its upgrade to what these tests check (see /work/wt/notes/ALEMBIC_LANDED).
"""

from __future__ import annotations

import json
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest
import sqlalchemy as sa
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy.engine import Engine, make_url
from sqlmodel import Session, SQLModel
from table_state import table_checksums

from console.cli import main
from console.cli.serialise import profile_json
from store import migrate
from store.db import create_workspace, make_engine, open_store, transaction
from store.errors import StoreError
from store.history import profile_card
from store.models import Profile, ProfileDatabase, ProfileEvent, utcnow
from store.states import CampaignStatus, CardEventKind, ProfileEventKind

DATA = Path(__file__).parent / "data"
RELEASE1_DB = DATA / "release1_workspace.db"
PREVIOUS_RELEASE_DB = DATA / "previous_release_workspace.db"  # schema 0007, see below
EXPECTED = json.loads((DATA / "release1_expected.json").read_text(encoding="utf-8"))
# compare_metadata sorts tables; mailing <-> audience_build is a known, harmless cycle.
pytestmark = pytest.mark.filterwarnings("ignore:Cannot correctly sort tables")


def run_cli(capsys, *argv: str) -> tuple[int, str, str]:
    capsys.readouterr()
    code = main(list(argv))
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def projected(actual: Any, expected: Any) -> Any:
    """`actual` cut down to the keys `expected` has: later releases may add keys."""
    if isinstance(expected, dict) and isinstance(actual, dict):
        return {k: projected(actual.get(k), v) for k, v in expected.items()}
    if isinstance(expected, list) and isinstance(actual, list) and len(actual) == len(expected):
        return [projected(a, e) for a, e in zip(actual, expected, strict=True)]
    return actual


def assert_release1_answers_unchanged(capsys, url: str) -> None:
    """Every profile card (groups, memberships, events) and every campaign's figures are
    exactly what release 1 printed (R12: history is never rewritten)."""
    for key, card in EXPECTED["profiles"].items():
        database, external_id = key.split("/")
        code, out, err = run_cli(
            capsys, "--db", url, "profile", "show", external_id, "--database", database, "--json"
        )
        assert code == 0, err
        assert projected(json.loads(out), card) == card, key
    for name, figures in EXPECTED["campaigns"].items():
        if figures.get("status") == "completed":
            # Issue 11 defect 5 (engine): a completed campaign shows no live quotas;
            # release 1 still printed its last build's strata. History is unchanged.
            figures = {**figures, "strata": []}
        code, out, err = run_cli(capsys, "--db", url, "campaign", "show", name, "--json")
        assert code == 0, err
        assert projected(json.loads(out), figures) == figures, name


def release1_copy(tmp_path: Path) -> Path:
    target = tmp_path / "workspace.db"
    shutil.copyfile(RELEASE1_DB, target)
    return target


def table_rows(path: Path) -> dict[str, list[tuple]]:
    with sqlite3.connect(path) as conn:
        names = [
            r[0]
            for r in conn.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name <> 'alembic_version'"
            )
        ]
        return {n: conn.execute(f'SELECT * FROM "{n}" ORDER BY 1').fetchall() for n in names}


# --------------------------------------------------------------------------- revisions


def test_revisions_have_a_single_head():
    script = ScriptDirectory.from_config(migrate.alembic_config())
    assert len(script.get_heads()) == 1, script.get_heads()
    assert script.get_heads() == [migrate.head()]
    assert migrate.BASELINE in migrate.known_revisions()


def test_migrated_schema_is_exactly_the_models(engine):
    """An empty database migrated to head has the schema the models declare: a revision
    that forgets a change (or a model changed without a revision) fails here."""
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=migrate.compare_options(conn.dialect.name))
        assert compare_metadata(context, SQLModel.metadata) == []
        assert migrate.current_revision(conn) == migrate.head()


def test_release1_schema_is_the_baseline_revision(empty_db_url):
    """The baseline revision builds exactly what release 1's create_all built: on SQLite
    the very same CREATE statements, on PostgreSQL the same tables, columns, indexes,
    constraints and the hash function."""
    engine = make_engine(empty_db_url)
    try:
        with engine.begin() as conn:
            if engine.dialect.name == "sqlite":
                with sqlite3.connect(RELEASE1_DB) as source:
                    release1 = sorted(
                        row for row in source.execute("SELECT type, name, sql FROM sqlite_master")
                    )
            else:
                _run_release1_ddl(conn)
                release1 = _schema(conn)
                conn.exec_driver_sql(
                    "DROP TABLE IF EXISTS " + ", ".join(SQLModel.metadata.tables) + " CASCADE"
                )
                conn.exec_driver_sql("DROP FUNCTION cc_assignment_hash")
        with engine.connect() as conn:
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, migrate.BASELINE)
            conn.commit()
        with engine.connect() as conn:
            if engine.dialect.name == "sqlite":
                migrated = sorted(
                    row
                    for row in conn.exec_driver_sql("SELECT type, name, sql FROM sqlite_master")
                    if "alembic_version" not in row[1]
                )
            else:
                migrated = _schema(conn)
            version = conn.exec_driver_sql(
                "SELECT value FROM store_meta WHERE key = 'schema_version'"
            ).scalar()
    finally:
        engine.dispose()
    assert migrated == release1
    assert version == "1"


def _run_release1_ddl(conn: sa.Connection) -> None:
    for statement in (
        (DATA / "release1_postgres.sql").read_text(encoding="utf-8").split("-- statement\n")
    ):
        if statement.strip():
            conn.exec_driver_sql(statement.strip().rstrip(";"))


def _plain(item: dict[str, Any]) -> str:
    return repr(sorted((k, str(v) if k == "dialect_options" else v) for k, v in item.items()))


def _schema(conn: sa.Connection) -> dict[str, Any]:
    """Tables, columns, indexes (with their WHERE), constraints (and the PostgreSQL
    functions and triggers) as the inspector sees them."""
    inspector = sa.inspect(conn)
    schema: dict[str, Any] = {
        table: (
            [(c["name"], str(c["type"]), c["nullable"]) for c in inspector.get_columns(table)],
            sorted(
                _plain(
                    {
                        **i,
                        "dialect_options": {
                            k: str(v) for k, v in i.get("dialect_options", {}).items()
                        },
                    }
                )
                for i in inspector.get_indexes(table)
            ),
            sorted(repr(sorted(f.items())) for f in inspector.get_foreign_keys(table)),
            sorted(repr(sorted(u.items())) for u in inspector.get_unique_constraints(table)),
            inspector.get_pk_constraint(table),
            sorted(repr(sorted(c.items())) for c in inspector.get_check_constraints(table)),
        )
        for table in inspector.get_table_names()
        if table != "alembic_version"
    }
    if conn.dialect.name == "postgresql":
        schema["functions"] = conn.exec_driver_sql(
            "SELECT proname, pg_get_functiondef(oid) FROM pg_proc "
            "WHERE starts_with(proname, 'cc_') AND pronamespace = current_schema()::regnamespace "
            "ORDER BY proname"
        ).all()
        schema["triggers"] = conn.exec_driver_sql(  # revision 0008
            "SELECT tgname, pg_get_triggerdef(t.oid) FROM pg_trigger t "
            "JOIN pg_class c ON c.oid = t.tgrelid "
            "WHERE NOT tgisinternal AND c.relnamespace = current_schema()::regnamespace "
            "ORDER BY tgname"
        ).all()
        schema["statistics"] = conn.exec_driver_sql(  # revision 0006
            "SELECT stxname, pg_get_statisticsobjdef(oid) FROM pg_statistic_ext "
            "WHERE stxnamespace = current_schema()::regnamespace ORDER BY stxname"
        ).all()
    return schema


def test_every_state_column_admits_only_its_enum_values(engine):
    """CHECK constraints (revisions 0002, 0004, 0007) hold exactly the values of the
    StrEnums, in their order: on SQLite the migrated text is the models' text."""
    declared = {
        (table.name, c.name): str(c.sqltext)
        for table in SQLModel.metadata.tables.values()
        for c in table.constraints
        if isinstance(c, sa.CheckConstraint)
    }
    assert ("campaign", "ck_campaign_status") in declared
    assert ("profile_event", "ck_profile_event_kind") in declared
    inspector = sa.inspect(engine)
    reflected = {
        (table, c["name"]): c["sqltext"]
        for table in inspector.get_table_names()
        for c in inspector.get_check_constraints(table)
    }
    assert set(reflected) == set(declared)
    for key, text in declared.items():
        values = re.findall(r"'([a-z_]+)'", text)
        assert values and re.findall(r"'([a-z_]+)'", reflected[key]) == values, key
        if engine.dialect.name == "sqlite":
            assert reflected[key] == text, key
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO profile_database (id, name, created_at, profile_count) "
            "VALUES (1, 'db', CURRENT_TIMESTAMP, 0)"
        )
        conn.exec_driver_sql(
            "INSERT INTO segment (id, name, kind, created_at, member_count, version) "
            "VALUES (1, 's', 'static', CURRENT_TIMESTAMP, 0, 1)"
        )
    insert = (
        "INSERT INTO campaign (name, database_id, segment_id, status, seed, lcg_enabled, "
        "lcg_percent_bp, lcg_strata, lcg_cohort, segment_watermark, version, created_by, "
        "created_at, members, test_count, control_count, cohort_size, warnings) VALUES "
        "(:name, 1, 1, :status, 1, false, 0, '[]', 0, 0, 1, '', CURRENT_TIMESTAMP, 0, 0, 0, 0, '[]')"
    )
    with (
        pytest.raises(sa.exc.IntegrityError, match="ck_campaign_status|CHECK"),
        engine.begin() as conn,
    ):
        conn.execute(sa.text(insert), {"name": "bad", "status": "paused"})
    with engine.begin() as conn:
        conn.execute(sa.text(insert), {"name": "good", "status": CampaignStatus.DRAFT})


def test_upgraded_release1_database_has_the_schema_of_a_new_one(db_url, tmp_path):
    engine = open_store(db_url)
    with engine.connect() as conn:
        new = _schema(conn)
    if engine.dialect.name == "sqlite":
        engine.dispose()
        engine = open_store(f"sqlite:///{release1_copy(tmp_path)}")
    else:
        load_release1_into_postgres(db_url)
        migrate.upgrade(engine)
    with engine.connect() as conn:
        upgraded = _schema(conn)
    engine.dispose()
    assert upgraded == new


# --------------------------------------------------------------------------- SQLite


def test_release1_workspace_upgrades_on_first_open_keeping_groups_and_history(tmp_path, capsys):
    path = release1_copy(tmp_path)
    before = table_rows(path)
    url = f"sqlite:///{path}"

    # The first command opens it: backed up beside itself, then upgraded.
    code, out, err = run_cli(capsys, "--db", url, "campaign", "list", "--json")
    assert code == 0, err
    backups = sorted(tmp_path.glob("workspace.backup-*.db"))
    assert len(backups) == 1
    assert table_rows(backups[0]) == before  # the backup is release 1's file, untouched
    with sqlite3.connect(backups[0]) as conn:
        assert "alembic_version" not in {
            r[0] for r in conn.execute("SELECT name FROM sqlite_master WHERE type = 'table'")
        }

    engine = make_engine(url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
        rows = conn.exec_driver_sql("SELECT count(*) FROM campaign_member").scalar()
        # Release 1 reads this marker: at 2 it refuses the database instead of misreading it.
        marker = conn.exec_driver_sql(
            "SELECT value FROM store_meta WHERE key = 'schema_version'"
        ).scalar()
    engine.dispose()
    assert rows == len(before["campaign_member"])
    assert marker == "2"
    assert_release1_answers_unchanged(capsys, url)

    # Opening it again neither upgrades nor backs up again.
    code, _, err = run_cli(capsys, "--db", url, "campaign", "list")
    assert code == 0, err
    assert len(list(tmp_path.glob("workspace.backup-*.db"))) == 1


def test_a_campaign_completed_by_release1_with_a_warning_shows_none(tmp_path, capsys):
    """R8 / issue 11 defect 5: release 1 kept a completed campaign's last warning on the
    campaign row; the upgraded workspace neither shows nor counts it (the row is kept)."""
    path = release1_copy(tmp_path)
    warning = [{"code": "stratification_violation", "message": "1 stratum below one profile"}]
    with sqlite3.connect(path) as conn:
        conn.execute(
            "UPDATE campaign SET warnings = ? WHERE name = 'Winter Clearance'",
            (json.dumps(warning),),
        )
    url = f"sqlite:///{path}"
    code, out, err = run_cli(capsys, "--db", url, "campaign", "show", "Winter Clearance", "--json")
    assert code == 0, err
    assert json.loads(out)["warnings"] == []
    code, out, err = run_cli(capsys, "--db", url, "campaign", "list", "--json")
    assert code == 0, err
    rows = {r["name"]: r for r in json.loads(out)}
    assert rows["Winter Clearance"]["warnings"] == []
    with sqlite3.connect(path) as conn:  # nothing was rewritten
        stored = conn.execute(
            "SELECT warnings FROM campaign WHERE name = 'Winter Clearance'"
        ).fetchone()[0]
    assert json.loads(stored) == warning


def test_upgrade_command_upgrades_a_release1_workspace_and_reports_it(tmp_path, capsys):
    path = release1_copy(tmp_path)
    url = f"sqlite:///{path}"
    code, out, err = run_cli(capsys, "--db", url, "database", "upgrade", "--json")
    assert code == 0, err
    result = json.loads(out)
    assert result["before"] == migrate.RELEASE1
    assert result["after"] == migrate.head()
    assert Path(result["backup"]).exists()
    code, out, err = run_cli(capsys, "--db", url, "database", "upgrade")
    assert code == 0, err
    assert f"already at schema revision {migrate.head()}" in out
    assert_release1_answers_unchanged(capsys, url)


def test_upgrade_sql_is_for_postgresql_and_changes_no_sqlite_workspace(tmp_path, capsys):
    path = release1_copy(tmp_path)
    before = table_rows(path)
    code, out, err = run_cli(capsys, "--db", str(path), "database", "upgrade", "--sql")
    assert code == 2
    assert "run without --sql" in err
    assert table_rows(path) == before
    assert not list(tmp_path.glob("*.backup-*"))


def test_empty_sqlite_workspace_is_created_at_head_without_a_backup(tmp_path):
    engine = create_workspace(f"sqlite:///{tmp_path / 'new.db'}")  # what init runs
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
    engine.dispose()
    assert not list(tmp_path.glob("*.backup-*"))


def test_database_of_a_newer_revision_is_refused(engine):
    with engine.begin() as conn:
        conn.exec_driver_sql("UPDATE alembic_version SET version_num = '9999_from_the_future'")
    with pytest.raises(StoreError, match="newer than this campaign-console"):
        migrate.ensure_current(engine)


def test_unknown_schema_version_marker_is_refused(tmp_path):
    path = release1_copy(tmp_path)
    with sqlite3.connect(path) as conn:
        conn.execute("UPDATE store_meta SET value = '7' WHERE key = 'schema_version'")
    with pytest.raises(StoreError, match="schema version 7 is unknown"):
        open_store(f"sqlite:///{path}")
    assert not list(tmp_path.glob("*.backup-*"))


# --------------------------------------------------------------------------- PostgreSQL


def load_release1_into_postgres(url: str) -> None:
    """Release 1's PostgreSQL DDL, then every row of the release-1 SQLite workspace. A
    workspace already at `url` (the `postgres_url` fixture makes one) is dropped first."""
    load_workspace_into_postgres(url, RELEASE1_DB)


def load_workspace_into_postgres(url: str, workspace: Path, revision: str | None = None) -> None:
    """The PostgreSQL schema of `revision` (release 1's DDL when None), then every row of
    the SQLite `workspace` made at that revision. A workspace already at `url` is dropped
    first."""
    target = sa.create_engine(url)
    source = sa.create_engine(f"sqlite:///{workspace}")
    with target.begin() as conn:
        present = set(sa.inspect(conn).get_table_names())
        ours = [t for t in [*SQLModel.metadata.tables, "alembic_version"] if t in present]
        if ours:
            conn.exec_driver_sql("DROP TABLE " + ", ".join(ours) + " CASCADE")
            for function in (
                "cc_assignment_hash",
                "cc_check_references",
                "cc_refuse_referenced",
                "cc_check_locked_references",
                "cc_lock_referenced",
            ):
                conn.exec_driver_sql(f"DROP FUNCTION IF EXISTS {function}")
        if revision is None:
            _run_release1_ddl(conn)
        else:
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
        conn.exec_driver_sql("DELETE FROM store_meta")
        conn.exec_driver_sql("SET LOCAL session_replication_role = replica")  # FK order
        source_meta = sa.MetaData()
        source_meta.reflect(source)
        target_meta = sa.MetaData()
        target_meta.reflect(conn)
        with source.connect() as read:
            for name, table in source_meta.tables.items():
                if name == "alembic_version":  # the upgrade above wrote it
                    continue
                rows = [dict(r._mapping) for r in read.execute(sa.select(table))]
                if rows:
                    conn.execute(sa.insert(target_meta.tables[name]), rows)
                if "id" in table.c:
                    conn.execute(
                        sa.text(
                            f"SELECT setval(pg_get_serial_sequence('{name}', 'id'), "
                            f"(SELECT coalesce(max(id), 0) + 1 FROM {name}), false)"
                        )
                    )
    target.dispose()
    source.dispose()


@pytest.mark.postgres
def test_release1_postgres_database_is_refused_until_upgraded(postgres_url, capsys):
    load_release1_into_postgres(postgres_url)
    with pytest.raises(StoreError, match="campaign-console database upgrade"):
        open_store(postgres_url)
    code, _, err = run_cli(capsys, "--db", postgres_url, "campaign", "list")
    assert code == 1
    assert "campaign-console database upgrade --db URL" in err

    code, out, err = run_cli(capsys, "--db", postgres_url, "database", "upgrade", "--sql")
    assert code == 0, err
    assert "CREATE TABLE alembic_version" in out
    assert f"'{migrate.BASELINE}'" in out  # stamped as the baseline, not rebuilt
    assert "CREATE TABLE campaign " not in out
    assert "ADD CONSTRAINT ck_campaign_status CHECK" in out
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.RELEASE1  # --sql changed nothing
    engine.dispose()

    code, out, err = run_cli(capsys, "--db", postgres_url, "database", "upgrade", "--json")
    assert code == 0, err
    assert json.loads(out)["after"] == migrate.head()
    assert json.loads(out)["backup"] is None
    assert_release1_answers_unchanged(capsys, postgres_url)
    engine = open_store(postgres_url)
    with engine.connect() as conn:
        context = MigrationContext.configure(conn, opts=migrate.compare_options(conn.dialect.name))
        assert compare_metadata(context, SQLModel.metadata) == []
    engine.dispose()


@pytest.mark.postgres
def test_read_only_user_cannot_upgrade_a_database(postgres_url, capsys):
    load_release1_into_postgres(postgres_url)
    code, _, err = run_cli(capsys, "--db", postgres_url, "--read-only", "database", "upgrade")
    assert code == 3
    assert "read-only" in err
    engine = make_engine(postgres_url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.RELEASE1
    engine.dispose()


@pytest.mark.postgres
def test_postgres_database_at_an_older_revision_is_refused_until_upgraded(
    empty_postgres_url, capsys
):
    engine = make_engine(empty_postgres_url)
    with engine.connect() as conn:
        config = migrate.alembic_config()
        config.attributes["connection"] = conn
        command.upgrade(config, migrate.BASELINE)  # a database another release left behind
        conn.commit()
    with pytest.raises(StoreError, match=f"at schema revision {migrate.BASELINE}"):
        open_store(empty_postgres_url)
    code, out, err = run_cli(capsys, "--db", empty_postgres_url, "database", "upgrade", "--sql")
    assert code == 0, err
    assert f"UPDATE alembic_version SET version_num='{migrate.head()}'" in out
    code, out, err = run_cli(capsys, "--db", empty_postgres_url, "database", "upgrade", "--json")
    assert code == 0, err
    assert json.loads(out)["before"] == migrate.BASELINE
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == migrate.head()
    engine.dispose()
    open_store(empty_postgres_url).dispose()


# --------------------------------------------------------------------------- revisions 0007 to 0009

PREVIOUS_RELEASE = "0007_profile_event_kinds"  # the head of the release before 0008
BEFORE_0007 = "0006_member_group_statistics"


def release1_at(url: str, revision: str) -> Engine:
    """Release 1's workspace at `url` (an SQLite path, or an empty PostgreSQL schema),
    upgraded by this code to the older `revision` only."""
    if make_url(url).get_backend_name() == "sqlite":
        shutil.copyfile(RELEASE1_DB, make_url(url).database)
    else:
        load_release1_into_postgres(url)
    engine = make_engine(url)
    migrate.upgrade(engine, backup=False, to=revision)
    return engine


def previous_release_workspace(url: str) -> Engine:
    """A workspace as the previous release left it (schema PREVIOUS_RELEASE), with a
    profile event of every kind: release 1's groups and history (moved_to_test among
    them), then, written by that release's store: an R3 left_campaign, entered_gcg and
    left_gcg (R11a), a trigger mailing's deliveries and suppressions (R11b). Frozen in
    tests/data/previous_release_workspace.db (make_previous_release_workspace.py): this
    release's store reads columns that schema does not have."""
    if make_url(url).get_backend_name() == "sqlite":
        shutil.copyfile(PREVIOUS_RELEASE_DB, make_url(url).database)
    else:
        load_workspace_into_postgres(url, PREVIOUS_RELEASE_DB, PREVIOUS_RELEASE)
    engine = make_engine(url)
    with engine.connect() as conn:
        assert migrate.current_revision(conn) == PREVIOUS_RELEASE
    return engine


def every_card(engine: Engine) -> dict[str, Any]:
    """Every profile's card as `profile show --json` prints it: groups and history."""
    with Session(engine) as s:
        profiles = s.execute(
            sa.select(ProfileDatabase.name, Profile.external_id).join(
                Profile, Profile.database_id == ProfileDatabase.id
            )
        ).all()
        return {
            f"{database}/{external_id}": profile_json(profile_card(s, database, external_id))
            for database, external_id in profiles
        }


def _segments_and_refreshes(engine: Engine) -> tuple[list[tuple], dict[str, tuple[int, int]]]:
    """The segment rows' columns of the previous release, and for each refreshed segment
    the intervals its last refresh opened and closed (what the segments screen shows)."""
    with engine.connect() as conn:
        rows = conn.exec_driver_sql(
            "SELECT id, name, kind, database_id, rule, refresh_every_seconds, refresh_cron, "
            "last_refreshed_at, last_refresh_seconds, created_at, member_count, version "
            "FROM segment ORDER BY id"
        ).all()
        refreshes = {
            name: (entered, left)
            for name, entered, left in conn.exec_driver_sql(
                "SELECT s.name, "
                "(SELECT count(*) FROM segment_member m "
                " WHERE m.segment_id = s.id AND m.entered_at = s.last_refreshed_at), "
                "(SELECT count(*) FROM segment_member m "
                " WHERE m.segment_id = s.id AND m.left_at = s.last_refreshed_at) "
                "FROM segment s WHERE s.last_refreshed_at IS NOT NULL"
            )
        }
    return [tuple(r) for r in rows], refreshes


def _builds(engine: Engine) -> list[tuple]:
    """The audience_build rows' columns of the previous release."""
    with engine.connect() as conn:
        return [
            tuple(r)
            for r in conn.exec_driver_sql(
                "SELECT id, campaign_id, reason, status, requested_by, requested_at, started_at, "
                "finished_at, heartbeat_at, worker, mailing_id, pauses_mailings, total, "
                "processed, checkpoint, warnings, error FROM audience_build ORDER BY id"
            )
        ]


def test_previous_release_workspace_upgrades_keeping_groups_and_history(empty_db_url, capsys):
    engine = previous_release_workspace(empty_db_url)
    with engine.connect() as conn:
        stored = conn.exec_driver_sql("SELECT DISTINCT kind FROM profile_event").scalars()
        assert set(stored) == set(ProfileEventKind)
    cards = every_card(engine)
    shown = {event["kind"] for card in cards.values() for event in card["events"]}
    assert shown == set(CardEventKind)
    rows = table_checksums(engine, skip=("alembic_version", "segment", "audience_build"))
    segment_rows, refreshes = _segments_and_refreshes(engine)
    build_rows = _builds(engine)
    engine.dispose()

    code, out, err = run_cli(capsys, "--db", empty_db_url, "database", "upgrade", "--json")
    assert code == 0, err
    assert (json.loads(out)["before"], json.loads(out)["after"]) == (
        PREVIOUS_RELEASE,
        migrate.head(),
    )
    engine = open_store(empty_db_url)
    try:
        # not one row rewritten; the segment rows gain revision 0010's two counts, the
        # builds revision 0011's two columns, empty (none of them was resumed)
        assert (
            table_checksums(engine, skip=("alembic_version", "segment", "audience_build")) == rows
        )
        assert _segments_and_refreshes(engine) == (segment_rows, refreshes)
        assert _builds(engine) == build_rows and build_rows
        with engine.connect() as conn:
            resumed = conn.exec_driver_sql(
                "SELECT count(*) FROM audience_build "
                "WHERE resumed_at IS NOT NULL OR resumed_processed IS NOT NULL"
            ).scalar()
        assert resumed == 0
        assert refreshes == {"young": (2, 2)}
        code, out, err = run_cli(capsys, "--db", empty_db_url, "segment", "show", "young", "--json")
        assert code == 0, err
        last = json.loads(out)["last_refresh"]  # what the segments screen showed
        assert (last["entered"], last["left"]) == refreshes["young"]
        assert every_card(engine) == cards
        checks = sa.inspect(engine).get_check_constraints("profile_event")
        assert [c["name"] for c in checks] == ["ck_profile_event_kind"]
        with engine.connect() as conn:  # revisions 0008, 0009: the references hold as before
            for statement, refused in (
                (
                    "UPDATE campaign_member SET campaign_id = 999999 "
                    "WHERE id = (SELECT min(id) FROM campaign_member)",
                    "campaign_id_fkey",
                ),
                ("DELETE FROM campaign", "campaign_id_fkey"),
                (
                    "UPDATE segment_member SET profile_id = 999999 "
                    "WHERE id = (SELECT min(id) FROM segment_member)",
                    "segment_member_profile_id_fkey",
                ),
                ("DELETE FROM profile", "member_profile_id_fkey"),
            ):
                with pytest.raises(sa.exc.IntegrityError, match=f"{refused}|FOREIGN KEY"):
                    conn.exec_driver_sql(statement)
                conn.rollback()
    finally:
        engine.dispose()


@pytest.mark.postgres
@pytest.mark.parametrize(
    ("revision", "down"),
    [
        ("0008_statement_reference_checks", PREVIOUS_RELEASE),
        ("0009_profile_reference_checks", "0008_statement_reference_checks"),
    ],
)
def test_revisions_0008_and_0009_downgrade_to_the_foreign_keys_they_replaced(
    empty_postgres_url, revision, down
):
    engine = make_engine(empty_postgres_url)
    try:
        migrate.upgrade(engine, to=down)
        with engine.connect() as conn:
            before = _schema(conn)
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, revision)
            assert _schema(conn) != before
            command.downgrade(config, down)
            assert _schema(conn) == before
    finally:
        engine.dispose()


def test_revision_0010_downgrades_to_the_indexes_it_replaced(empty_db_url):
    """Both backends: the partial left index and the refresh counts go, the two full
    indexes come back."""
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine, backup=False, to="0009_profile_reference_checks")
        with engine.connect() as conn:
            before = _schema(conn)
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0010_segment_member_add_indexes")
            after = _schema(conn)
            assert after != before
            assert [c[0] for c in after["segment"][0]][-2:] == [
                "last_refresh_entered",
                "last_refresh_left",
            ]
            indexes = {i["name"]: i for i in sa.inspect(conn).get_indexes("segment_member")}
            assert "ix_segment_member_segment_entered" not in indexes
            where = indexes["ix_segment_member_segment_left"]["dialect_options"]
            assert "left_at IS NOT NULL" in " ".join(map(str, where.values()))
            command.downgrade(config, "0009_profile_reference_checks")
            assert _schema(conn) == before
    finally:
        engine.dispose()


def test_revision_0011_adds_the_resumed_columns_and_downgrades_without_them(empty_db_url):
    engine = make_engine(empty_db_url)
    try:
        migrate.upgrade(engine, backup=False, to="0010_segment_member_add_indexes")
        with engine.connect() as conn:
            before = _schema(conn)
            config = migrate.alembic_config()
            config.attributes["connection"] = conn
            command.upgrade(config, "0011_build_resumed_at")
            after = _schema(conn)
            assert [c[0] for c in after["audience_build"][0]][-2:] == [
                "resumed_at",
                "resumed_processed",
            ]
            command.downgrade(config, "0010_segment_member_add_indexes")
            assert _schema(conn) == before
    finally:
        engine.dispose()


def test_an_unknown_profile_event_kind_stops_the_upgrade_and_changes_nothing(empty_db_url, capsys):
    """Rows of a kind no release writes are someone's history (R12): the upgrade names
    them and refuses, instead of rewriting or dropping them."""
    engine = release1_at(empty_db_url, BEFORE_0007)
    with engine.begin() as conn:
        conn.exec_driver_sql(  # a derived kind, stored by a script: 8 rows
            "INSERT INTO profile_event (at, profile_id, kind, actor) "
            "SELECT at, profile_id, 'entered_segment', 'script' FROM profile_event"
        )
    before = table_checksums(engine)
    with engine.connect() as conn:
        schema = _schema(conn)
    engine.dispose()

    code, _, err = run_cli(capsys, "--db", empty_db_url, "database", "upgrade")
    assert code == 1
    assert (
        "profile_event holds kinds campaign-console never writes: 'entered_segment' (8 rows)" in err
    )
    assert "Nothing was changed" in err
    engine = make_engine(empty_db_url)
    try:
        assert table_checksums(engine) == before
        with engine.connect() as conn:
            assert _schema(conn) == schema
            assert migrate.current_revision(conn) == BEFORE_0007
    finally:
        engine.dispose()


def test_a_refused_sqlite_upgrade_leaves_foreign_keys_on(sqlite_url):
    """The upgrade turns SQLite's foreign keys off while Alembic copies tables; a refused
    upgrade must turn them on again before its connection goes back to the pool, or the
    next transaction of the same process would run without them."""
    engine = release1_at(sqlite_url, BEFORE_0007)
    with engine.begin() as conn:
        conn.exec_driver_sql(
            "INSERT INTO profile_event (at, profile_id, kind, actor) "
            "SELECT at, profile_id, 'entered_segment', 'script' FROM profile_event"
        )
    try:
        with pytest.raises(StoreError, match="entered_segment"):
            migrate.upgrade(engine, backup=False)
        assert engine.pool.checkedin() == 1  # the connection the upgrade used, back in the pool
        with engine.connect() as conn:
            assert conn.exec_driver_sql("PRAGMA foreign_keys").scalar() == 1
    finally:
        engine.dispose()


def test_profile_event_refuses_a_kind_outside_its_enum(engine):
    with transaction(engine) as s:
        database = ProfileDatabase(name="retail")
        s.add(database)
        s.flush()
        profile = Profile(database_id=database.id, external_id="P1")
        s.add(profile)
        s.flush()
        s.add_all(
            ProfileEvent(at=utcnow(), profile_id=profile.id, kind=kind, actor="alice")
            for kind in ProfileEventKind
        )
    for kind in ("entered_segment", "delivered", "suppressed", "purchase"):  # derived or unknown
        with (
            pytest.raises(sa.exc.IntegrityError, match="ck_profile_event_kind|CHECK"),
            transaction(engine) as s,
        ):
            s.add(ProfileEvent(at=utcnow(), profile_id=profile.id, kind=kind, actor="alice"))
    with Session(engine) as s:
        assert sorted(s.scalars(sa.select(ProfileEvent.kind))) == sorted(ProfileEventKind)
