"""Typed domain errors. Messages are meant for an operator: say what and what to do."""


class StoreError(Exception):
    """Base of every error the store raises on purpose."""

    exit_code = 1


class DomainError(StoreError):
    """A SPEC rule forbids the change. Nothing was changed."""

    exit_code = 3


class ValidationError(DomainError):
    """Bad input (percent, limit, strata, rule, CSV ...)."""


class ReadOnlyError(DomainError):
    """The actor has the read-only role."""


class ConflictError(DomainError):
    """The object changed since the caller read it (optimistic version check)."""


class InvalidStateError(DomainError):
    """The object's status does not allow the operation (e.g. completed campaign)."""


class NotFoundError(StoreError):
    exit_code = 4


class WorkspaceMissingError(StoreError):
    """`--db` names no workspace: only `init` and `demo` create one (issue 15.7)."""


class ConnectionProblem(StoreError):
    """The database cannot be reached or opened: the message names it and what to change."""


class WorkspaceBusy(StoreError):
    """SQLite: another connection kept the write lock longer than the busy timeout. The
    transaction that waited was rolled back."""


class StorageFull(StoreError):
    """The database could not be written: its disk is full. The transaction that hit it
    was rolled back."""


class ConfigError(StoreError):
    """A setting (config file, environment, flag) has a value that is not allowed."""

    exit_code = 2


def public_reason(exc: BaseException) -> str:
    """An error for a user: a StoreError's own message (written for a person); anything
    else in one line, its type and first line, never the SQL statement, its parameters (a
    campaign seed among them) or a link to SQLAlchemy's documentation (issue 15.8, 15.10)."""
    if isinstance(exc, StoreError):
        return str(exc)
    original = getattr(exc, "orig", None)
    if original is not None and hasattr(exc, "statement"):  # SQLAlchemy wraps DB-API errors
        lines = str(original).strip().splitlines()
        return f"database error: {type(original).__name__}: {lines[0] if lines else ''}"
    lines = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {lines[0] if lines else ''}"
