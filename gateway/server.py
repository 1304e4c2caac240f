"""The SSH server: public-key login against the gateway's authorized_keys, one console
per session, every other kind of request refused with a message and an audit row.

Identity: the role and key-id come from the authorized_keys entry of the key that
really authenticated (the one whose signature verified, recorded at that moment, not
the last key offered: the soft-serve CVE-2023-43809 pattern), never from the client's
environment, which is accepted by asyncssh and never read here.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import asyncssh
from asyncssh.public_key import decode_ssh_public_key

from gateway.config import GatewaySettings
from gateway.keys import AuthorizedKey, AuthorizedKeysFile, load_or_create_host_key
from gateway.session import HANGUP_GRACE, TERM_GRACE, ConsoleSession, RefusedSession
from store.actors import Actor, gateway_actor

log = logging.getLogger("gateway")


@dataclass(frozen=True)
class Identity:
    key_id: str
    role: str
    fingerprint: str


class GatewayConnection(asyncssh.SSHServer):
    """One client connection: authentication, caps, refusals and their audit rows."""

    def __init__(self, gateway: Gateway) -> None:
        self.gateway = gateway
        self.conn: asyncssh.SSHServerConnection | None = None
        self.client_address = "?"
        self.client_port = 0
        self.keys: dict[str, AuthorizedKey] = {}
        self.verified_fingerprint: str | None = None
        self.unknown_fingerprints: list[str] = []
        self.identity: Identity | None = None
        self.refusal: str | None = None  # why an authenticated key gets no console
        self.connected = False
        self.sessions: list[ConsoleSession] = []
        self.sessions_opened = 0
        self.notices: list[str] = []  # refused forwarding requests, told at session start
        self._no_session_timer: asyncio.TimerHandle | None = None

    # ------------------------------------------------------------- connection
    def connection_made(self, conn: asyncssh.SSHServerConnection) -> None:
        self.conn = conn
        self.connected = True
        peer = conn.get_extra_info("peername") or ("?", 0)
        self.client_address, self.client_port = str(peer[0]), int(peer[1])
        # Hooks on this connection only (asyncssh has no callbacks for these):
        # which key's signature verified, and agent / X11 forwarding requests to audit.
        verify = conn.validate_public_key

        async def validate_public_key(username: str, key_data: bytes, msg: bytes, sig: bytes):
            ok = await verify(username, key_data, msg, sig)
            if ok and msg:  # a signed request that verified: this key authenticated
                self.verified_fingerprint = decode_ssh_public_key(key_data).get_fingerprint(
                    "sha256"
                )
            return ok

        async def refuse_agent() -> bool:
            self.audit_refusal("agent_forwarding", "agent forwarding is not available")
            self.notices.append("agent forwarding is not available (refused)")
            return False

        async def refuse_x11(*_args: Any) -> None:
            self.audit_refusal("x11_forwarding", "X11 forwarding is not available")
            self.notices.append("X11 forwarding is not available (refused)")
            return None

        conn.validate_public_key = validate_public_key  # type: ignore[method-assign]
        conn.create_agent_listener = refuse_agent  # type: ignore[method-assign]
        conn.attach_x11_listener = refuse_x11  # type: ignore[method-assign]
        if not self.gateway.admit(self.client_address):
            self.audit_refusal(
                "rate_limited",
                f"more than {self.gateway.settings.connections_per_minute} connections "
                "a minute from this address",
                once_per_minute=True,
            )
            conn.disconnect(
                asyncssh.DISC_TOO_MANY_CONNECTIONS,
                "too many connections from your address; try again in a minute",
            )

    def connection_lost(self, exc: Exception | None) -> None:
        self.connected = False
        self.gateway.connections.discard(self)
        if self._no_session_timer is not None:
            self._no_session_timer.cancel()
        if self.identity is None and self.refusal is None and self.unknown_fingerprints:
            for fingerprint in dict.fromkeys(self.unknown_fingerprints):
                self.audit_refusal("unknown_key", "unknown key", fingerprint=fingerprint)

    # ------------------------------------------------------------- authentication
    def begin_auth(self, username: str) -> bool:
        # Edits of authorized_keys apply to every new connection (no restart).
        self.keys = self.gateway.authorized_keys.current()
        return True  # False would mean "no authentication required"

    def public_key_auth_supported(self) -> bool:
        return True

    def validate_public_key(self, username: str, key: asyncssh.SSHKey) -> bool:
        fingerprint = key.get_fingerprint("sha256")
        if fingerprint in self.keys:
            return True
        self.unknown_fingerprints.append(fingerprint)
        return False

    def auth_completed(self) -> None:
        entry = self.keys.get(self.verified_fingerprint or "")
        if entry is None:  # cannot happen with public-key auth only; refuse if it does
            self.refusal = "authentication did not name a key"
        elif entry.problem:
            self.refusal = entry.problem
        else:
            self.identity = Identity(entry.key_id, entry.role, entry.fingerprint)  # type: ignore[arg-type]
        if self.refusal:
            self.audit_refusal("no_role", self.refusal)
        else:
            self.audit("gateway.login")
        self._no_session_timer = asyncio.get_running_loop().call_later(
            self.gateway.settings.session_open_timeout, self._no_session_opened
        )

    def _no_session_opened(self) -> None:
        if self.sessions_opened == 0 and self.conn is not None:
            self.audit_refusal("no_session", "no session opened in time")
            self.conn.disconnect(
                asyncssh.DISC_BY_APPLICATION,
                f"no session opened within {self.gateway.settings.session_open_timeout:g} s",
            )

    # ------------------------------------------------------------- channels
    def session_requested(self) -> asyncssh.SSHServerSession:
        self.sessions_opened += 1
        if self.refusal or self.identity is None:
            return RefusedSession(self.refusal or "no identity")
        settings = self.gateway.settings
        problem = None
        if len(self.sessions) >= settings.sessions_per_connection:
            problem = f"one session per connection (at most {settings.sessions_per_connection})"
        elif self.gateway.sessions_of(self.identity.fingerprint) >= settings.max_sessions_per_key:
            problem = f"this key already has {settings.max_sessions_per_key} sessions open"
        elif self.gateway.session_count() >= settings.max_sessions:
            problem = f"the gateway is full ({settings.max_sessions} sessions)"
        if problem:
            self.audit_refusal("cap_reached", problem)
            return RefusedSession(problem)  # a message the client shows, then exit status 1
        session = ConsoleSession(self)
        self.sessions.append(session)
        return session

    def session_closed(self, session: ConsoleSession) -> None:
        with contextlib.suppress(ValueError):
            self.sessions.remove(session)

    def connection_requested(self, dest_host: str, dest_port: int, orig_host: str, orig_port: int):
        self.audit_refusal(
            "forwarding",
            "port forwarding is not available",
            direction="local",
            destination=f"{dest_host}:{dest_port}",
        )
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "port forwarding is not available"
        )

    def server_requested(self, listen_host: str, listen_port: int) -> bool:
        self.audit_refusal(
            "forwarding",
            "port forwarding is not available",
            direction="remote",
            listen=f"{listen_host}:{listen_port}",
        )
        return False

    def unix_connection_requested(self, dest_path: str):
        self.audit_refusal("forwarding", "socket forwarding is not available", path=dest_path)
        raise asyncssh.ChannelOpenError(
            asyncssh.OPEN_ADMINISTRATIVELY_PROHIBITED, "socket forwarding is not available"
        )

    def unix_server_requested(self, listen_path: str) -> bool:
        self.audit_refusal("forwarding", "socket forwarding is not available", path=listen_path)
        return False

    # ------------------------------------------------------------- audit
    def actor(self, fingerprint: str | None = None) -> Actor:
        if self.identity is not None:
            i = self.identity
            return gateway_actor(
                i.key_id, i.role, i.fingerprint, self.client_address, self.client_port
            )
        entry = self.keys.get(self.verified_fingerprint or "")
        return Actor(
            user=(entry.key_id if entry and entry.key_id else "(unknown key)"),
            role=(entry.role if entry and entry.role else "none"),
            origin=f"ssh {self.client_address}:{self.client_port}",
            key_fingerprint=fingerprint or self.verified_fingerprint,
            via="ssh",
        )

    def audit(
        self,
        action: str,
        outcome: str = "ok",
        fingerprint: str | None = None,
        target_name: str | None = None,
        **details: Any,
    ) -> None:
        self.gateway.audit(self.actor(fingerprint), action, outcome, target_name, **details)

    def audit_refusal(
        self,
        reason: str,
        message: str,
        *,
        fingerprint: str | None = None,
        once_per_minute: bool = False,
        **details: Any,
    ) -> None:
        log.warning(
            "refused %s:%s (%s): %s", self.client_address, self.client_port, reason, message
        )
        if once_per_minute and not self.gateway.first_in_minute((reason, self.client_address)):
            return
        self.audit(
            "gateway.refused", "refused", fingerprint, reason=reason, message=message, **details
        )


class Gateway:
    """The server and what its connections share: keys, caps, rate limits, audit writer."""

    def __init__(self, settings: GatewaySettings, db_url: str, config_path: Path | None = None):
        from store.db import open_store

        self.settings = settings
        self.db_url = db_url
        self.config_path = config_path
        self.engine = open_store(db_url)
        self.authorized_keys = AuthorizedKeysFile(settings.authorized_keys)
        self.host_key = load_or_create_host_key(settings.host_key)
        self.fingerprint = self.host_key.get_fingerprint("sha256")
        self.connections: set[GatewayConnection] = set()
        self._recent: dict[str, collections.deque[float]] = {}
        self._minute_marks: dict[Any, float] = {}
        self._tasks: set[asyncio.Task] = set()
        self._audit_writer = ThreadPoolExecutor(max_workers=1, thread_name_prefix="audit")
        self.server: asyncssh.SSHAcceptor | None = None

    async def start(self) -> asyncssh.SSHAcceptor:
        self.authorized_keys.current()  # log the initial load (or why it failed)
        s = self.settings
        self.server = await asyncssh.create_server(
            self._new_connection,
            s.host,
            s.port,
            server_host_keys=[self.host_key],
            encoding=None,  # bytes both ways: the PTY speaks bytes
            line_editor=False,  # it would cook the console's input
            agent_forwarding=False,
            x11_forwarding=False,
            allow_pty=True,
            public_key_auth=True,
            password_auth=False,
            kbdint_auth=False,
            host_based_auth=False,
            gss_host=None,
            allow_scp=False,
            login_timeout=s.login_timeout,
            keepalive_interval=s.keepalive_interval,
            keepalive_count_max=s.keepalive_count_max,
        )
        return self.server

    def _new_connection(self) -> GatewayConnection:
        connection = GatewayConnection(self)
        self.connections.add(connection)
        return connection

    @property
    def port(self) -> int:
        assert self.server is not None
        return self.server.sockets[0].getsockname()[1]

    async def close(self) -> None:
        if self.server is not None:
            self.server.close()
        sessions = [s for c in self.connections for s in c.sessions]
        await asyncio.gather(*(s.end("gateway stopped") for s in sessions), return_exceptions=True)
        # A session whose client left just before is ending in a task of its own, and its
        # connection is no longer listed: let it finish (stop its console, remove its
        # directory, audit its end) before the process exits. Bounded: a console that
        # ignores SIGHUP and SIGTERM is killed after both graces.
        if self._tasks:
            await asyncio.wait(set(self._tasks), timeout=HANGUP_GRACE + TERM_GRACE + 5)
        if self.server is not None:
            await self.server.wait_closed()
        await asyncio.get_running_loop().run_in_executor(None, self._audit_writer.shutdown)
        self.engine.dispose()

    # ------------------------------------------------------------- shared state
    def spawn(self, coro) -> None:  # noqa: ANN001
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    def admit(self, address: str) -> bool:
        """Per-address rate limit on new connections (a sliding minute)."""
        now = time.monotonic()
        if len(self._recent) > 10_000:  # forget addresses quiet for a minute
            self._recent = {a: d for a, d in self._recent.items() if d and now - d[-1] <= 60}
        recent = self._recent.setdefault(address, collections.deque())
        while recent and now - recent[0] > 60:
            recent.popleft()
        if len(recent) >= self.settings.connections_per_minute:
            return False
        recent.append(now)
        return True

    def first_in_minute(self, mark: Any) -> bool:
        now = time.monotonic()
        if now - self._minute_marks.get(mark, -120.0) < 60:
            return False
        self._minute_marks[mark] = now
        return True

    def live_sessions(self) -> list[ConsoleSession]:
        return [s for c in self.connections for s in c.sessions if not s.ended]

    def session_count(self) -> int:
        return len(self.live_sessions())

    def sessions_of(self, fingerprint: str) -> int:
        return sum(
            1
            for s in self.live_sessions()
            if s.connection.identity and s.connection.identity.fingerprint == fingerprint
        )

    def child_environment(self, term_type: str | None, home: str) -> dict[str, str]:
        """Built from an allowlist only: nothing the client sent (its env requests are
        never read), no COLUMNS/LINES (they would freeze the console's size)."""
        env = {
            "TERM": term_type or "xterm-256color",
            "COLORTERM": "truecolor",  # SSH does not forward it
            "LANG": os.environ.get("LANG") or "C.UTF-8",
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": home,
            "CAMPAIGN_CONSOLE_DB": self.db_url,
        }
        if self.config_path is not None:
            env["CAMPAIGN_CONSOLE_CONFIG"] = str(self.config_path)
        return env

    def audit(
        self, actor: Actor, action: str, outcome: str, target_name: str | None, **details: Any
    ) -> None:
        """Write a gateway row off the event loop, in order."""
        from store.audit import write_entry

        def write() -> None:
            try:
                write_entry(self.engine, actor, action, "gateway", target_name, outcome, **details)
            except Exception as exc:  # the gateway keeps serving; the log says what was lost
                log.error("could not audit %s for %s: %s", action, actor.user, exc)

        self._audit_writer.submit(write)
