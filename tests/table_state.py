"""Checksums of every table, to assert that a refused or failed command changed nothing."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa
from sqlalchemy.engine import Engine


def table_checksums(engine: Engine, *, skip: tuple[str, ...] = ()) -> dict[str, str]:
    """{table: digest of its rows in primary-key order} for every table of the store.

    `skip` leaves out tables a refusal is expected to write (the audit log)."""
    metadata = sa.MetaData()
    metadata.reflect(engine)
    digests: dict[str, str] = {}
    with engine.connect() as conn:
        for name, table in sorted(metadata.tables.items()):
            if name in skip:
                continue
            order = list(table.primary_key.columns) or list(table.columns)
            digest = hashlib.sha256()
            for row in conn.execute(sa.select(table).order_by(*order)):
                digest.update(repr(tuple(row)).encode())
            digests[name] = digest.hexdigest()
    return digests
