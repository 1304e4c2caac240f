"""The audit log: every action, with the acting user and where they connected from.

Every store operation audits its own outcome under one action id, whoever called it
(console, CLI, scheduler): `ok` with the change (`record`, in the operation's
transaction) and `refused` with the reason (`operation`, below). Clients write no audit
rows.

A refusal (a DomainError) rolls the caller's transaction back, so its audit row cannot
travel in that transaction. `operation` notes it on the session; when the session's
outermost transaction ends (rolled back, or committed by a caller that caught the
refusal), the note is written in a transaction of its own. Writing it only then, not
while the operation's transaction is still open, keeps SQLite's single writer free.
"""

from __future__ import annotations

import functools
import logging
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy import event
from sqlalchemy.engine import Connection, Engine
from sqlalchemy.orm import Session as OrmSession
from sqlmodel import Session

from store.actors import Actor
from store.errors import DomainError
from store.models import AuditEntry, utcnow

log = logging.getLogger(__name__)

F = TypeVar("F", bound=Callable[..., Any])
_REFUSALS = "audit.refusals"  # session.info key: refusals waiting for the transaction end
_DEPTH = "audit.depth"  # session.info key: how many audited operations are running


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
    details = _with_identity(actor, details)
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


def _target(value: Any) -> tuple[int | None, str | None]:
    """(id, name) of an operation's target: an object with a name, or a name."""
    if isinstance(value, str):
        return None, value
    name = getattr(value, "name", None)
    if name is None and getattr(value, "id", None) is not None:
        name = f"#{value.id}"
    return getattr(value, "id", None), name


def operation(
    action: str | Callable[..., str],
    target_type: str,
    target: Callable[..., Any] | None = None,
) -> Callable[[F], F]:
    """Decorate a store operation `fn(session, actor, subject, ...)` so that a refusal is
    audited as `action` (outcome "refused", details.reason) on `subject` (or on what
    `target(*args, **kwargs)` returns). `action` may be a function of the arguments
    (e.g. mailing.pause / mailing.resume). The operation records its own ok entry under
    the same action id. Nested audited operations audit one refusal: the outermost."""

    def decorate(fn: F) -> F:
        @functools.wraps(fn)
        def wrapper(session: Session, actor: Actor, *args: Any, **kwargs: Any) -> Any:
            depth = session.info.get(_DEPTH, 0)
            session.info[_DEPTH] = depth + 1
            try:
                return fn(session, actor, *args, **kwargs)
            except DomainError as exc:
                if depth == 0:
                    subject = target(*args, **kwargs) if target else (args[0] if args else None)
                    target_id, target_name = _target(subject)
                    name = action(*args, **kwargs) if callable(action) else action
                    session.info.setdefault(_REFUSALS, []).append(
                        _entry(actor, name, target_type, target_id, target_name, str(exc))
                    )
                    if not session.in_transaction():  # refused before touching the database
                        _write_pending(session)
                raise
            finally:
                session.info[_DEPTH] = depth

        wrapper.audit_action = action  # type: ignore[attr-defined]
        return wrapper  # type: ignore[return-value]

    return decorate


def _entry(
    actor: Actor,
    action: str,
    target_type: str,
    target_id: int | None,
    target_name: str | None,
    reason: str,
) -> dict[str, Any]:
    return {
        "at": utcnow(),
        "actor": actor.user,
        "role": actor.role,
        "origin": actor.origin,
        "action": action,
        "target_type": target_type,
        "target_id": target_id,
        "target_name": target_name,
        "outcome": "refused",
        "details": _with_identity(actor, {"reason": reason}),
    }


def _with_identity(actor: Actor, details: dict[str, Any]) -> dict[str, Any]:
    """An SSH gateway actor's key fingerprint goes into every row it causes, ok or refused."""
    if actor.key_fingerprint:
        return {"key_fingerprint": actor.key_fingerprint, **details}
    return details


@event.listens_for(OrmSession, "after_transaction_end")
def _write_refusals(session: OrmSession, transaction: Any) -> None:
    if transaction.parent is None:
        _write_pending(session)


def _write_pending(session: OrmSession) -> None:
    """Write the refusals noted on `session` in a transaction of their own."""
    rows = session.info.pop(_REFUSALS, None)
    if not rows:
        return
    try:
        bind = session.get_bind()
        if isinstance(bind, Connection):
            bind.execute(sa.insert(AuditEntry), rows)
        else:  # also from a connection that may only read (store/db.py, issue 15.5)
            from store.db import write_audit_rows

            write_audit_rows(bind, AuditEntry.__table__, rows)
    except Exception:  # the refusal stands even if it cannot be logged
        log.exception("could not audit %d refusal(s)", len(rows))


def record_refusal(
    engine: Any, actor: Actor, action: str, target_type: str, target_name: str | None, reason: str
) -> None:
    """Audit a refusal of a store operation that owns its engine instead of running in a
    caller's session (e.g. demo.reset): written at once, in its own transaction."""
    with Session(engine) as session:
        session.info[_REFUSALS] = [_entry(actor, action, target_type, None, target_name, reason)]
        _write_pending(session)


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
    from store.db import audit_writer

    with Session(audit_writer(engine)) as session:  # also from a read-only SQLite engine
        record(
            session, actor, action, target_type, target_name=target_name, outcome=outcome, **details
        )
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
    target: tuple[str, int] | None = None,
) -> list[AuditLine]:
    """The newest entries first, optionally only actions starting with `action_prefix`
    (e.g. `gateway.` or `campaign.activate`), of one actor (a user or key-id) and about
    one `target` (type, id), e.g. ("campaign", 3) for the campaign screen."""
    query = sa.select(AuditEntry).order_by(AuditEntry.at.desc(), AuditEntry.id.desc()).limit(limit)
    if target is not None:
        query = query.where(AuditEntry.target_type == target[0], AuditEntry.target_id == target[1])
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
