"""The audit log: every action, with the acting user and where they connected from."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
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


@dataclass(frozen=True)
class AuditLine:
    """One audit entry as the `audit` command and the console's audit screen show it."""

    id: int
    at: datetime
    actor: str
    role: str
    origin: str
    action: str
    target: str  # "campaign Autumn Sale", "gateway 3f2a…" (a session id), …
    outcome: str
    key_fingerprint: str | None  # SSH gateway sessions: the key that authenticated
    details: dict[str, Any]

    @property
    def details_text(self) -> str:
        return " ".join(f"{k}={v}" for k, v in self.details.items() if v not in (None, "", [], {}))

    def to_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "at": self.at.isoformat(),
            "actor": self.actor,
            "role": self.role,
            "origin": self.origin,
            "action": self.action,
            "target": self.target,
            "outcome": self.outcome,
            "key_fingerprint": self.key_fingerprint,
            "details": self.details,
        }


def audit_log(
    session: Session,
    *,
    limit: int = 50,
    action_prefix: str | None = None,
    actor: str | None = None,
) -> list[AuditLine]:
    """The newest entries first, optionally only actions starting with `action_prefix`
    (e.g. `gateway.` or `campaign.activate`) and of one actor (a user or key-id)."""
    query = sa.select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if action_prefix:
        query = query.where(AuditEntry.action.startswith(action_prefix, autoescape=True))
    if actor:
        query = query.where(AuditEntry.actor == actor)
    lines = []
    for entry in session.scalars(query):
        details = dict(entry.details or {})
        fingerprint = details.pop("key_fingerprint", None)
        target = " ".join(str(p) for p in (entry.target_type, entry.target_name) if p)
        lines.append(
            AuditLine(
                id=entry.id or 0,
                at=entry.at,
                actor=entry.actor,
                role=entry.role,
                origin=entry.origin,
                action=entry.action,
                target=target,
                outcome=entry.outcome,
                key_fingerprint=fingerprint,
                details=details,
            )
        )
    return lines
