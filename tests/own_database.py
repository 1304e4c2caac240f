"""A PostgreSQL database of a test's own, which the test can close to every connection
and open again: a real outage (`cut`, `restore`), as a stopped or restarted server is
seen by its clients, without touching the server the other tests share."""

from __future__ import annotations

import uuid

import sqlalchemy as sa
from sqlalchemy.engine import make_url


class OwnDatabase:
    def __init__(self, admin_url: str) -> None:
        self.name = f"cc_outage_{uuid.uuid4().hex[:12]}"
        self.admin = sa.create_engine(admin_url, isolation_level="AUTOCOMMIT")
        self._run(f'CREATE DATABASE "{self.name}"')
        url = make_url(admin_url).set(database=self.name)
        self.url = url.render_as_string(hide_password=False)

    def _run(self, sql: str) -> None:
        with self.admin.connect() as conn:
            conn.execute(sa.text(sql), {"name": self.name})

    def cut(self) -> None:
        """No new connection, and the open ones ended."""
        self._run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS false')
        self._run("SELECT pg_terminate_backend(pid) FROM pg_stat_activity WHERE datname = :name")

    def restore(self) -> None:
        self._run(f'ALTER DATABASE "{self.name}" ALLOW_CONNECTIONS true')

    def drop(self) -> None:
        self.restore()
        self._run(f'DROP DATABASE "{self.name}" WITH (FORCE)')
        self.admin.dispose()
