"""R9 assignment hash: a documented 64-bit function of (campaign seed, profile).

    assignment_hash(seed, external_id) =
        first 8 bytes of MD5(f"{seed}:{external_id}" as UTF-8), read big-endian as a
        signed 64-bit integer.

Signed so it fits SQLite INTEGER and PostgreSQL BIGINT unchanged. The same function is
registered in SQLite (`cc_assignment_hash`, a Python function) and created in PostgreSQL
as an SQL function over the built-in md5(), so set-based statements compute it on
both backends with identical results. Ties (practically impossible) are broken by
external_id compared bytewise.
"""

import hashlib

SQL_FUNCTION = "cc_assignment_hash"

POSTGRES_DDL = f"""
CREATE OR REPLACE FUNCTION {SQL_FUNCTION}(seed bigint, external_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$ SELECT ('x' || substr(md5(seed::text || ':' || external_id), 1, 16))::bit(64)::bigint $$
"""


def assignment_hash(seed: int, external_id: str) -> int:
    digest = hashlib.md5(f"{seed}:{external_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big", signed=True)
