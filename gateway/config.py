"""Gateway settings: command-line flag, else `[gateway]` in the config file, else default.

[gateway]
listen = "0.0.0.0:2222"
authorized_keys = "~/.config/campaign-console/gateway/authorized_keys"
host_key = "~/.local/share/campaign-console/gateway/host_ed25519_key"
idle_timeout = 1800        # seconds without a keystroke (app output does not count)
max_session = 43200        # seconds a session may last at most
max_sessions = 50          # sessions at once, all keys together
max_sessions_per_key = 5   # sessions at once of one key
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from pathlib import Path
from typing import Any

from platformdirs import user_config_dir, user_data_dir

from store.errors import StoreError


def default_authorized_keys() -> Path:
    return (
        Path(user_config_dir("campaign-console", appauthor=False)) / "gateway" / "authorized_keys"
    )


def default_host_key() -> Path:
    return Path(user_data_dir("campaign-console", appauthor=False)) / "gateway" / "host_ed25519_key"


@dataclass(frozen=True)
class GatewaySettings:
    host: str = "0.0.0.0"
    port: int = 2222
    authorized_keys: Path = Path()
    host_key: Path = Path()
    idle_timeout: float = 1800.0
    max_session: float = 12 * 3600.0
    max_sessions: int = 50
    max_sessions_per_key: int = 5
    # Not in the list of file settings, but tests need them short.
    sessions_per_connection: int = 1
    session_open_timeout: float = 30.0  # an authenticated connection must open a session
    login_timeout: float = 20.0
    keepalive_interval: float = 5.0
    keepalive_count_max: int = 2
    connections_per_minute: int = 30  # per client address

    @property
    def listen(self) -> str:
        return f"{self.host}:{self.port}"


def parse_listen(value: str) -> tuple[str, int]:
    host, sep, port = str(value).rpartition(":")
    if not sep or not port.isdigit() or not 0 <= int(port) <= 65535:
        raise StoreError(f"listen {value!r}: write HOST:PORT, e.g. 0.0.0.0:2222")
    return host.strip("[]") or "0.0.0.0", int(port)


def _number(table: dict[str, Any], name: str, kind: type) -> Any:
    value = table[name]
    if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
        raise StoreError(f"config [gateway] {name}: a positive number, not {value!r}")
    return kind(value)


def gateway_settings(
    table: dict[str, Any],
    listen: str | None = None,
    authorized_keys: str | None = None,
    host_key: str | None = None,
) -> GatewaySettings:
    """Flags win over the `[gateway]` table, which wins over the defaults."""
    numeric = {f.name: f.type for f in fields(GatewaySettings)}
    known = {"listen", "authorized_keys", "host_key"} | {
        name for name, kind in numeric.items() if kind in ("int", "float")
    }
    unknown = sorted(set(table) - known)
    if unknown:
        raise StoreError(f"config [gateway]: unknown setting(s) {', '.join(unknown)}")
    settings = GatewaySettings(
        authorized_keys=default_authorized_keys(), host_key=default_host_key()
    )
    changes: dict[str, Any] = {}
    for name in table:
        if name in ("listen", "authorized_keys", "host_key"):
            continue
        changes[name] = _number(table, name, int if numeric[name] == "int" else float)
    listen = listen or table.get("listen")
    if listen:
        changes["host"], changes["port"] = parse_listen(listen)
    for name, flag in (("authorized_keys", authorized_keys), ("host_key", host_key)):
        value = flag or table.get(name)
        if value:
            changes[name] = Path(str(value)).expanduser()
    return replace(settings, **changes)
