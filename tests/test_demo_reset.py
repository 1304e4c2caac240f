"""Issue 15.1: `demo --reset` checks the actor before it touches anything, and never destroys
a workspace the demo did not build, whatever the role."""

from __future__ import annotations

import pytest
import sqlalchemy as sa
from cli_helpers import Cli
from sqlmodel import Session
from table_state import table_checksums

from store import demo, profiles
from store.db import transaction
from store.errors import InvalidStateError, ReadOnlyError
from store.models import AuditEntry

AUDIT = AuditEntry.__tablename__


def audit_actions(engine) -> list[tuple[str, str, str]]:
    with Session(engine) as session:
        rows = session.execute(
            sa.select(AuditEntry.action, AuditEntry.outcome, AuditEntry.role).order_by(
                AuditEntry.id
            )
        )
        return [tuple(row) for row in rows]


@pytest.fixture
def demo_workspace(engine, operator):
    demo.build_demo(engine, operator, n_profiles=300)
    return engine


def test_read_only_reset_of_the_demo_is_refused_and_changes_nothing(demo_workspace, viewer):
    before = table_checksums(demo_workspace, skip=(AUDIT,))
    with pytest.raises(ReadOnlyError, match="read-only"):
        demo.reset(demo_workspace, viewer)
    assert table_checksums(demo_workspace, skip=(AUDIT,)) == before
    assert audit_actions(demo_workspace)[-1] == ("demo.reset", "refused", "read_only")


def test_reset_of_a_workspace_the_demo_did_not_build_is_refused_for_operators(engine, operator):
    with transaction(engine) as session:
        profiles.create_database(session, operator, "customers", [("region", "text")])
    before = table_checksums(engine, skip=(AUDIT,))
    with pytest.raises(InvalidStateError, match="not built by `campaign-console demo`"):
        demo.reset(engine, operator)
    assert table_checksums(engine, skip=(AUDIT,)) == before
    assert audit_actions(engine)[-1] == ("demo.reset", "refused", "operator")


def test_operator_resets_the_demo_and_the_reset_is_audited(demo_workspace, operator):
    demo.reset(demo_workspace, operator)
    assert audit_actions(demo_workspace) == [("demo.reset", "ok", "operator")]
    assert demo.is_demo_workspace(demo_workspace)  # empty: nothing left to protect
    demo.build_demo(demo_workspace, operator, n_profiles=200)


def test_cli_read_only_demo_reset_exits_3_and_keeps_every_table(
    db_url, demo_workspace, capsys, tmp_path
):
    cli = Cli(db_url, capsys, tmp_path)
    before = table_checksums(demo_workspace, skip=(AUDIT,))
    result = cli("--read-only", "demo", "--reset", "--profiles", "200")
    assert result.code == 3
    assert "read-only" in result.err
    assert table_checksums(demo_workspace, skip=(AUDIT,)) == before
    assert audit_actions(demo_workspace)[-1] == ("demo.reset", "refused", "read_only")
