"""The audit log: every action, with the acting user and where they connected from."""

from __future__ import annotations

from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session

from store.actors import Actor
from store.models import AuditEntry, utcnow


def record(
    session: Session,
    actor: Actor,
    action: str,
    target_type: str,
    target_id: int | None = None,
    target_name: str | None = None,
    outcome: str = "ok",
    **details: Any,
) -> None:
    """Add an audit entry inside the caller's transaction (it commits with the change).

    An SSH gateway actor's key fingerprint goes into `details["key_fingerprint"]` of
    every row it writes (the actor column holds its key-id, `origin` the client address).
    """
    if actor.key_fingerprint:
        details = {"key_fingerprint": actor.key_fingerprint, **details}
    session.add(
        AuditEntry(
            at=utcnow(),
            actor=actor.user,
            role=actor.role,
            origin=actor.origin,
            action=action,
            target_type=target_type,
            target_id=target_id,
            target_name=target_name,
            outcome=outcome,
            details=details,
        )
    )


def record_refusal(
    engine: Engine,
    actor: Actor,
    action: str,
    target_type: str,
    target_name: str | None,
    reason: str,
) -> None:
    """A refused action is audited in its own transaction: the refused change rolled back."""
    with Session(engine) as session:
        record(
            session,
            actor,
            action,
            target_type,
            target_name=target_name,
            outcome="refused",
            reason=reason,
        )
        session.commit()


def recent(
    session: Session, target_type: str | None = None, target_id: int | None = None, limit: int = 20
) -> list[AuditEntry]:
    query = sa.select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if target_type is not None:
        query = query.where(AuditEntry.target_type == target_type)
    if target_id is not None:
        query = query.where(AuditEntry.target_id == target_id)
    return list(session.scalars(query))


def write_entry(
    engine: Engine,
    actor: Actor,
    action: str,
    target_type: str,
    target_name: str | None = None,
    outcome: str = "ok",
    **details: Any,
) -> None:
    """One audit entry in its own transaction (events with no store change, e.g. an SSH
    gateway login or a refused forwarding request)."""
    with Session(engine) as session:
        record(session, actor, action, target_type, target_name=target_name, outcome=outcome,
               **details)
        session.commit()
