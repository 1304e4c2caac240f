"""Who acts, from where, with which role. Read-only is enforced here, below every UI."""

from __future__ import annotations

import getpass
import os
import socket
from dataclasses import dataclass

from store.errors import ReadOnlyError

ROLES = ("operator", "read_only", "system")


@dataclass(frozen=True)
class Actor:
    user: str
    role: str = "operator"
    origin: str = "local"

    @property
    def read_only(self) -> bool:
        return self.role == "read_only"

    def require_write(self, action: str) -> None:
        """Raise before anything changes when a read-only actor tries `action`."""
        if self.read_only:
            raise ReadOnlyError(
                f"{self.user} is read-only and cannot {action}; "
                "ask an operator or start without --read-only"
            )

    def __str__(self) -> str:
        return self.user


def connection_origin(environ: dict[str, str] | None = None) -> str:
    """'ssh ADDR:PORT' from SSH_CONNECTION (or SSH_CLIENT), else 'local'."""
    env = os.environ if environ is None else environ
    conn = env.get("SSH_CONNECTION") or env.get("SSH_CLIENT")
    if conn:
        parts = conn.split()
        if len(parts) >= 2:
            return f"ssh {parts[0]}:{parts[1]}"
        return f"ssh {parts[0]}"
    return "local"


def current_actor(role: str = "operator", environ: dict[str, str] | None = None) -> Actor:
    if role not in ROLES:
        raise ValueError(f"unknown role {role!r}; use one of {', '.join(ROLES)}")
    try:
        user = getpass.getuser()
    except Exception:  # no passwd entry in some containers
        user = f"uid{os.getuid()}"
    return Actor(user=user, role=role, origin=connection_origin(environ))


def system_actor(name: str = "scheduler") -> Actor:
    return Actor(user=name, role="system", origin=socket.gethostname())
