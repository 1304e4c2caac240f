"""Settings from the config file and the environment, in one typed object.

Config file: $CAMPAIGN_CONSOLE_CONFIG, else `config.toml` in the user's config directory:

    db = "postgresql+psycopg://cc@db.internal/campaigns"
    role = "read_only"            # or "operator"
    poll_interval = 1.0           # seconds between console refreshes
    [keys]                        # remap console bindings by id
    activate = "A"
    [gateway]                     # the SSH gateway (gateway/config.py, docs/gateway.md)
    listen = "0.0.0.0:2222"
"""

from __future__ import annotations

import os
import tomllib
from dataclasses import dataclass, field
from pathlib import Path

from platformdirs import user_config_dir

from store.errors import StoreError

CONFIG_ENV = "CAMPAIGN_CONSOLE_CONFIG"


def config_path() -> Path:
    env = os.environ.get(CONFIG_ENV)
    if env:
        return Path(env).expanduser()
    return Path(user_config_dir("campaign-console", appauthor=False)) / "config.toml"


@dataclass(frozen=True)
class Settings:
    db: str | None = None
    role: str = "operator"
    poll_interval: float = 1.0
    keys: dict[str, str] = field(default_factory=dict)
    # The [gateway] table as written; gateway/config.py types and checks it.
    gateway: dict[str, object] = field(default_factory=dict)


def load_settings(path: Path | None = None) -> Settings:
    path = path or config_path()
    if not path.exists():
        return Settings()
    try:
        raw = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise StoreError(f"cannot read config file {path}: {exc}") from exc
    role = raw.get("role", "operator")
    if role not in ("operator", "read_only"):
        raise StoreError(
            f"config file {path}: role must be 'operator' or 'read_only', not {role!r}"
        )
    return Settings(
        db=raw.get("db"),
        role=role,
        poll_interval=float(raw.get("poll_interval", 1.0)),
        keys={str(k): str(v) for k, v in raw.get("keys", {}).items()},
        gateway=dict(raw.get("gateway", {})),
    )
