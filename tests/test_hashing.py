"""R9: the assignment hash is one documented function, identical in Python, SQLite and PostgreSQL."""

from __future__ import annotations

import hashlib

import sqlalchemy as sa

from store.hashing import SQL_FUNCTION, assignment_hash

SAMPLES = [(0, "P0000001"), (2**63 - 1, "x"), (123456789, "ünïcødé-42"), (42, "")]


def test_hash_is_first_eight_md5_bytes_as_signed_big_endian():
    digest = hashlib.md5(b"7:abc").digest()
    assert assignment_hash(7, "abc") == int.from_bytes(digest[:8], "big", signed=True)


def test_database_function_matches_python_on_every_backend(engine):
    with engine.connect() as conn:
        for seed, external_id in SAMPLES:
            got = conn.execute(
                sa.text(f"SELECT {SQL_FUNCTION}(:seed, :eid)"), {"seed": seed, "eid": external_id}
            ).scalar_one()
            assert got == assignment_hash(seed, external_id)
