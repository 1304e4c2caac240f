"""`database grant-read-only ROLE`: a PostgreSQL role that may only read the workspace
(issue 15.5; threat model in README "Security model" and docs/security.md).

The role gets USAGE on the workspace's schema and SELECT on its tables, nothing else
(anything it had is revoked first). Tables a later schema revision adds are covered twice:
default privileges grant SELECT on tables the granting role creates in that schema, and
`database upgrade` re-grants SELECT to every role this command made read-only
(`regrant_read_only`), whoever runs it.

A client connected as such a role is read-only whatever its flags: the store sees at
connect that the role may not write (store/db.py `as_connected`). Its refusals are still
audited: the role may execute one SECURITY DEFINER function, `cc_audit_refusal`, which
appends a `refused` row for the read-only role (and the database role in its details),
and can write nothing else.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Connection, Engine

from store import audit
from store.actors import Actor
from store.db import AUDIT_REFUSAL_FUNCTION, transaction
from store.errors import ValidationError
from store.locations import is_postgres

ROLE_NAME = re.compile(r"^[a-z_][a-z0-9_]{0,62}$")
# Marks the roles this command made read-only, so `database upgrade` can re-grant them.
ROLE_COMMENT = "campaign-console read-only role"


@dataclass(frozen=True)
class GrantResult:
    role: str
    schema: str
    created: bool
    tables: int

    def as_dict(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "schema": self.schema,
            "created": self.created,
            "tables": self.tables,
        }


def _quote(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _audit_function_sql(schema: str) -> str:
    return f"""
CREATE OR REPLACE FUNCTION {_quote(schema)}.{AUDIT_REFUSAL_FUNCTION}(
    p_actor text, p_origin text, p_action text, p_target_type text,
    p_target_id integer, p_target_name text, p_details text
) RETURNS void
LANGUAGE sql SECURITY DEFINER
SET search_path = {_quote(schema)}, pg_temp
AS $$
    INSERT INTO audit_log
        (at, actor, role, origin, action, target_type, target_id, target_name,
         outcome, details)
    VALUES (now() AT TIME ZONE 'UTC', left(p_actor, 200), 'read_only', left(p_origin, 200),
            left(p_action, 200), left(p_target_type, 200), p_target_id,
            left(p_target_name, 400), 'refused',
            (coalesce(p_details, '{{}}')::jsonb
             || jsonb_build_object('db_role', session_user::text))::json)
$$"""


@audit.operation("database.grant_read_only", "role")
def grant_read_only(session: Any, actor: Actor, role: str) -> GrantResult:
    """Create or update `role` as a read-only role of this workspace (PostgreSQL only)."""
    actor.require_write(f"grant read-only access to {role!r}")
    conn: Connection = session.connection()
    if not is_postgres(conn):
        raise ValidationError(
            "grant-read-only is for PostgreSQL; an SQLite workspace is protected by the "
            "file's permissions (give read-only users read access only: they open it "
            "read-only) and, for support engineers, by the SSH gateway (docs/security.md)"
        )
    if not ROLE_NAME.match(role or ""):
        raise ValidationError(
            f"role name {role!r} is not allowed: use lower-case letters, digits and _ "
            "(at most 63, not starting with a digit)"
        )
    schema, me = conn.execute(sa.text("SELECT current_schema(), current_user")).one()
    found = conn.execute(
        sa.text("SELECT rolsuper FROM pg_roles WHERE rolname = :r"), {"r": role}
    ).first()
    if found is not None and found.rolsuper:
        raise ValidationError(
            f"{role!r} is a superuser: privileges do not bind it, so it cannot be read-only"
        )
    if role == me:
        raise ValidationError(f"{role!r} is the role you are connected as: choose another role")
    created = found is None
    q = _quote(role)
    if created:
        conn.exec_driver_sql(f"CREATE ROLE {q} LOGIN")
    conn.exec_driver_sql(f"COMMENT ON ROLE {q} IS '{ROLE_COMMENT}'")
    s = _quote(schema)
    conn.exec_driver_sql(f"REVOKE ALL ON ALL TABLES IN SCHEMA {s} FROM {q}")
    conn.exec_driver_sql(f"REVOKE ALL ON ALL SEQUENCES IN SCHEMA {s} FROM {q}")
    conn.exec_driver_sql(f"REVOKE CREATE ON SCHEMA {s} FROM {q}")
    conn.exec_driver_sql(f"GRANT USAGE ON SCHEMA {s} TO {q}")
    conn.exec_driver_sql(f"GRANT SELECT ON ALL TABLES IN SCHEMA {s} TO {q}")
    # Tables a later revision creates (when the same role runs `database upgrade`).
    conn.exec_driver_sql(f"ALTER DEFAULT PRIVILEGES IN SCHEMA {s} GRANT SELECT ON TABLES TO {q}")
    conn.exec_driver_sql(_audit_function_sql(schema))
    function = f"{s}.{AUDIT_REFUSAL_FUNCTION}(text, text, text, text, integer, text, text)"
    conn.exec_driver_sql(f"REVOKE ALL ON FUNCTION {function} FROM PUBLIC")
    conn.exec_driver_sql(f"GRANT EXECUTE ON FUNCTION {function} TO {q}")
    tables = conn.execute(
        sa.text("SELECT count(*) FROM pg_tables WHERE schemaname = :s"), {"s": schema}
    ).scalar_one()
    audit.record(
        session, actor, "database.grant_read_only", "role", target_name=role,
        created=created, schema=schema,
    )  # fmt: skip
    return GrantResult(role, schema, created, tables)


def regrant_read_only(engine: Engine) -> list[str]:
    """After an upgrade: SELECT on every table (new ones included) for each role that
    `grant_read_only` made read-only. Returns their names."""
    if not is_postgres(engine):
        return []
    with engine.begin() as conn:
        schema = conn.execute(sa.text("SELECT current_schema()")).scalar_one()
        roles = (
            conn.execute(
                sa.text(
                    "SELECT rolname FROM pg_roles "
                    "WHERE shobj_description(oid, 'pg_authid') = :comment "
                    "AND has_schema_privilege(rolname, :schema, 'USAGE') ORDER BY rolname"
                ),
                {"comment": ROLE_COMMENT, "schema": schema},
            )
            .scalars()
            .all()
        )
        for role in roles:
            conn.exec_driver_sql(
                f"GRANT SELECT ON ALL TABLES IN SCHEMA {_quote(schema)} TO {_quote(role)}"
            )
    return list(roles)


def grant(engine: Engine, actor: Actor, role: str) -> GrantResult:
    """The `database grant-read-only` command's unit of work."""
    with transaction(engine) as session:
        return grant_read_only(session, actor, role)
