"""Every setting, read once into one typed object: flag, then environment, then config
file, then default (README, Configuration).

Config file: $CAMPAIGN_CONSOLE_CONFIG, else `config.toml` in the user's config directory:

    db = "postgresql+psycopg://cc@db.internal/campaigns"
    role = "read_only"            # or "operator"
    poll_interval = 1.0           # seconds between console refreshes
    [keys]                        # remap console bindings by id
    activate = "A"
    [gateway]                     # the SSH gateway (gateway/config.py, docs/gateway.md)
    listen = "0.0.0.0:2222"
    [scheduler]                   # the same tunables as the CC_SCHEDULER_* variables
    pool_size = 2
    [postgres]                    # applied by store/db.py (issue 15.6)
    connect_timeout = 10          # seconds to wait for the server (libpq: whole, at least 2)
    statement_timeout = 30        # seconds an interactive read may take (0: no limit);
                                  # the CLI's and console's reads only, never builds/imports

A value the file or the environment gets wrong raises `ConfigError` (exit 2) naming the
key, the value and what is allowed, before anything is opened.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import timedelta
from pathlib import Path
from typing import Any

from store.errors import ConfigError, ValidationError

CONFIG_ENV = "CAMPAIGN_CONSOLE_CONFIG"
DB_ENV = "CAMPAIGN_CONSOLE_DB"
ROLES = ("operator", "read_only")


def config_path(environ: Mapping[str, str] | None = None) -> Path:
    env = (os.environ if environ is None else environ).get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    from platformdirs import user_config_dir  # only when no path is given (start-up, issue 14)

    return Path(user_config_dir("campaign-console", appauthor=False)) / "config.toml"


def default_db_url() -> str:
    from platformdirs import user_data_dir

    path = Path(user_data_dir("campaign-console", appauthor=False)) / "workspace.db"
    return f"sqlite:///{path}"


def normalize_db_url(value: str) -> str:
    """A bare path means an SQLite file."""
    if "://" not in value:
        return f"sqlite:///{Path(value).expanduser().resolve()}"
    return value


@dataclass
class SchedulerSettings:
    """Scheduler tunables (docs/scheduler.md): `[scheduler]` in the config file, or the
    CC_SCHEDULER_* variable of the same name, which wins."""

    pool_size: int = 2
    lease_ttl: float = 10.0
    stale_after: float | None = None  # build heartbeat age that means "abandoned"; 3×ttl
    reconcile_interval: float = 1.0
    dispatch_interval: float = 0.5
    build_chunk_size: int | None = None  # None: the store's default
    build_chunk_pause: float = 0.0  # seconds between build chunks, to leave I/O to others
    mailing_threads: int = 8

    def validate(self) -> SchedulerSettings:
        if self.pool_size < 1:
            raise ValidationError(f"pool size must be at least 1, not {self.pool_size}")
        if self.lease_ttl <= 0 or (self.stale_after is not None and self.stale_after <= 0):
            raise ValidationError("the lease TTL and stale-after must be positive seconds")
        if self.reconcile_interval <= 0 or self.dispatch_interval <= 0:
            raise ValidationError("scheduler intervals must be positive seconds")
        return self

    @property
    def stale_after_delta(self) -> timedelta:
        return timedelta(seconds=self.stale_after or 3 * self.lease_ttl)


@dataclass(frozen=True)
class Settings:
    db: str = field(default_factory=default_db_url)  # a URL; bare paths are normalized
    role: str = "operator"
    poll_interval: float = 1.0
    keys: dict[str, str] = field(default_factory=dict)
    scheduler: SchedulerSettings = field(default_factory=SchedulerSettings)
    connect_timeout: float = 10.0  # PostgreSQL: seconds to wait for the server
    statement_timeout: float = 30.0  # PostgreSQL: seconds an interactive read may take; 0: none
    # The [gateway] table as written; gateway/config.py types and checks it.
    gateway: dict[str, object] = field(default_factory=dict)

    @property
    def read_only(self) -> bool:
        return self.role == "read_only"


# --------------------------------------------------------------------------- values


def _number(kind: type, minimum: float, *, inclusive: bool) -> Callable[[Any], Any]:
    allowed = (
        f"{'a whole number' if kind is int else 'a number'} {'≥' if inclusive else '>'} {minimum:g}"
    )

    def parse(value: Any) -> Any:
        if isinstance(value, bool):
            raise ValueError(allowed)
        try:
            number = kind(value)
        except (TypeError, ValueError):
            raise ValueError(allowed) from None
        if kind is int and isinstance(value, float) and value != number:
            raise ValueError(allowed)
        if number < minimum or (not inclusive and number == minimum):
            raise ValueError(allowed)
        return number

    parse.allowed = allowed  # type: ignore[attr-defined]
    return parse


_SECONDS = _number(float, 0, inclusive=False)
_SECONDS_OR_ZERO = _number(float, 0, inclusive=True)
_COUNT = _number(int, 1, inclusive=True)

# setting -> (parser, environment variable or None)
_SCHEDULER_KEYS: dict[str, tuple[Callable[[Any], Any], str]] = {
    "pool_size": (_COUNT, "CC_SCHEDULER_POOL_SIZE"),
    "lease_ttl": (_SECONDS, "CC_SCHEDULER_LEASE_TTL"),
    "stale_after": (_SECONDS, "CC_SCHEDULER_STALE_AFTER"),
    "reconcile_interval": (_SECONDS, "CC_SCHEDULER_RECONCILE_INTERVAL"),
    "dispatch_interval": (_SECONDS, "CC_SCHEDULER_DISPATCH_INTERVAL"),
    "build_chunk_size": (_COUNT, "CC_SCHEDULER_CHUNK_SIZE"),
    "build_chunk_pause": (_SECONDS_OR_ZERO, "CC_SCHEDULER_CHUNK_PAUSE"),
}
_POSTGRES_KEYS = {"connect_timeout": _SECONDS, "statement_timeout": _SECONDS_OR_ZERO}


def _text(value: Any) -> str:
    if not isinstance(value, str) or not value.strip():
        raise ValueError("a non-empty string")
    return value


def _role(value: Any) -> str:
    if value not in ROLES:
        raise ValueError(" or ".join(repr(r) for r in ROLES))
    return value


def _parse(where: str, key: str, value: Any, parse: Callable[[Any], Any]) -> Any:
    try:
        return parse(value)
    except ValueError as exc:
        raise ConfigError(f"{where}: {key} = {value!r} is not allowed: use {exc}") from None


def _table(where: str, raw: dict[str, Any], key: str) -> dict[str, Any]:
    value = raw.get(key, {})
    if not isinstance(value, dict):
        raise ConfigError(f"{where}: {key} must be a table ([{key}]), not {value!r}")
    return value


def _read_file(path: Path) -> dict[str, Any]:
    if not path.exists():
        return {}
    try:
        text = path.read_text(encoding="utf-8")
    except (UnicodeDecodeError, OSError) as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc
    if not text.strip():  # e.g. /dev/null
        return {}
    import tomllib  # only when there is something to read (start-up, issue 14)

    try:
        return tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"cannot read config file {path}: {exc}") from exc


def load_settings(
    *,
    db: str | None = None,
    read_only: bool = False,
    pool_size: int | None = None,
    environ: Mapping[str, str] | None = None,
    path: Path | None = None,
) -> Settings:
    """Read the settings once: the keyword arguments are the command-line flags."""
    env = os.environ if environ is None else environ
    named = path is None and bool(env.get(CONFIG_ENV))
    path = path or config_path(env)
    if named and not path.exists():
        # Only the default file may be absent: a file named on purpose and missing (a
        # typo in the variable) would silently drop what it says, e.g. a read-only role.
        raise ConfigError(f"{CONFIG_ENV} names {path}, which does not exist")
    raw = _read_file(path)
    where = f"config file {path}"

    values: dict[str, Any] = {}
    for key, parse in (("db", _text), ("role", _role), ("poll_interval", _SECONDS)):
        if key in raw:
            values[key] = _parse(where, key, raw[key], parse)
    keys = _table(where, raw, "keys")
    values["keys"] = {str(k): str(v) for k, v in keys.items()}
    values["gateway"] = dict(_table(where, raw, "gateway"))
    postgres = _table(where, raw, "postgres")
    for key, parse in _POSTGRES_KEYS.items():
        if key in postgres:
            values[key] = _parse(where, f"postgres.{key}", postgres[key], parse)

    scheduler: dict[str, Any] = {}
    in_file = _table(where, raw, "scheduler")
    for key, (parse, variable) in _SCHEDULER_KEYS.items():
        if key in in_file:
            scheduler[key] = _parse(where, f"scheduler.{key}", in_file[key], parse)
        if env.get(variable):
            scheduler[key] = _parse("environment", variable, env[variable], parse)
    if pool_size is not None:
        scheduler["pool_size"] = _parse("--pool-size", "pool size", pool_size, _COUNT)
    values["scheduler"] = SchedulerSettings(**scheduler)

    if env.get(DB_ENV):
        values["db"] = env[DB_ENV]
    if db:
        values["db"] = db
    if "db" in values:
        values["db"] = normalize_db_url(values["db"])
    if read_only:
        values["role"] = "read_only"
    return Settings(**values)
