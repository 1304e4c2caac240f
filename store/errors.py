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


class ConfigError(StoreError):
    """A setting (config file, environment, flag) has a value that is not allowed."""

    exit_code = 2
