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
    """`user` is the name shown and audited: the OS user locally, the key-id of the
    authorized_keys entry over the SSH gateway, whose SHA256 fingerprint is kept in
    `key_fingerprint` (audited with every action, see store/audit.py)."""

    user: str
    role: str = "operator"
    origin: str = "local"
    key_fingerprint: str | None = None
    via: str | None = None  # "ssh" for a gateway session
    # PostgreSQL: the database role this actor is connected as, when that role may only
    # read (store.db.as_connected, issue 15.5): read-only whatever the flags said.
    db_role: str | None = None

    @property
    def label(self) -> str:
        """`alice (read_only)`, or `alice (read_only) via ssh` through the gateway."""
        text = f"{self.user} ({self.role})"
        return f"{text} via {self.via}" if self.via else text

    @property
    def read_only(self) -> bool:
        return self.role == "read_only"

    def require_write(self, action: str) -> None:
        """Raise before anything changes when a read-only actor tries `action`."""
        if self.read_only and self.db_role:
            raise ReadOnlyError(
                f"{self.user} is connected as the PostgreSQL role {self.db_role!r}, which is "
                f"read-only (SELECT only), and cannot {action}; ask an operator"
            )
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


def gateway_actor(
    key_id: str, role: str, key_fingerprint: str, client_address: str, client_port: int
) -> Actor:
    """The identity of an SSH gateway session: given by the gateway from the key the
    person authenticated with, never from the client's environment or a config file."""
    if role not in ("operator", "read_only"):
        raise ValueError(f"unknown role {role!r}; use operator or read_only")
    return Actor(
        user=key_id,
        role=role,
        origin=f"ssh {client_address}:{client_port}",
        key_fingerprint=key_fingerprint,
        via="ssh",
    )


def system_actor(name: str = "scheduler") -> Actor:
    return Actor(user=name, role="system", origin=socket.gethostname())
