"""R9 assignment hash: a documented 64-bit function of (campaign seed, profile).

Two versions exist; each campaign stores the one it uses (`campaign.hash_version`), so a
campaign's recalculations and newcomers always rank profiles as its first build did.

**Version 1** (release 1; campaigns created before revision 0005 keep it):

    assignment_hash_v1(seed, external_id) =
        first 8 bytes of MD5(f"{seed}:{external_id}" as UTF-8), read big-endian as a
        signed 64-bit integer.

Registered in SQLite as a Python function (`cc_assignment_hash`) and created in
PostgreSQL as an SQL function over md5(); a build calls it for every row.

**Version 2** (every campaign created since): an integer mix of the profile's key and
the campaign seed that plain SQL computes natively and identically on both backends:

    profile_key(external_id) = first 8 bytes of MD5(external_id as UTF-8), big-endian,
        signed 64-bit; computed once when the profile is created (`profile.hash_key`;
        `cc_profile_key` in SQL on both backends).
    P = 4294967291 (2**32 − 5, prime), M = 2**32 − 1
    a1, a2, a4 in [1, 2**31 − 1] and b1, b2 in [0, P−1]: the campaign constants, from the
        first five outputs of splitmix64 seeded with the campaign seed (`campaign_constants`)
    hi = (key >> 32) & M,  lo = key & M                      (both < 2**32)
    u = ((hi·a1) mod P + (lo·a2) mod P + b1) mod P             (< 2**32)
    v = ((lo·a4) mod P + b2) mod P                            (< 2**32)
    assignment_hash_v2(seed, key) = (u − 2**31) · 2**32 + v    (in [−2**63, 2**63))

Every intermediate product is a value below 2**32 times one below 2**31, so below 2**63:
SQLite never overflows into a float and PostgreSQL never raises. For a fixed campaign the
map (hi, lo) → (u, v) is a bijection of [0, P)² (a1, a4 < P are invertible mod P), so
two profiles tie only when their keys do (ties are broken by external_id compared bytewise, as in version 1). u is a
Carter–Wegman universal hash of the key: with keys spread uniformly by MD5, the ranks of
two campaigns (different a1, a2) are independent, and u is uniform over [0, P).
"""

import hashlib
import struct
from collections.abc import Iterable

SQL_FUNCTION = "cc_assignment_hash"  # version 1, in SQL
PROFILE_KEY_FUNCTION = "cc_profile_key"

MD5_VERSION = 1
KEYED_VERSION = 2
CURRENT_VERSION = KEYED_VERSION  # what new campaigns get

PRIME = 4_294_967_291  # 2**32 - 5
MASK32 = 0xFFFF_FFFF
_MASK64 = 0xFFFF_FFFF_FFFF_FFFF

POSTGRES_DDL = f"""
CREATE OR REPLACE FUNCTION {SQL_FUNCTION}(seed bigint, external_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$ SELECT ('x' || substr(md5(seed::text || ':' || external_id), 1, 16))::bit(64)::bigint $$
"""

POSTGRES_PROFILE_KEY_DDL = f"""
CREATE OR REPLACE FUNCTION {PROFILE_KEY_FUNCTION}(external_id text) RETURNS bigint
LANGUAGE sql IMMUTABLE PARALLEL SAFE STRICT AS
$$ SELECT ('x' || substr(md5(external_id), 1, 16))::bit(64)::bigint $$
"""


def assignment_hash(seed: int, external_id: str) -> int:
    """Version 1 (release 1): the MD5 of "seed:external_id"."""
    digest = hashlib.md5(f"{seed}:{external_id}".encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


def profile_key(external_id: str) -> int:
    """The profile's 64-bit key (`profile.hash_key`), from its external id."""
    digest = hashlib.md5(external_id.encode(), usedforsecurity=False).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


_SIGNED_64_BE = struct.Struct(">q").unpack_from


def profile_keys(external_ids: Iterable[str]) -> list[int]:
    """`profile_key` of each external id (one comprehension: a load computes a million)."""
    md5, unpack = hashlib.md5, _SIGNED_64_BE
    return [unpack(md5(e.encode(), usedforsecurity=False).digest())[0] for e in external_ids]


def _splitmix64(state: int) -> tuple[int, int]:
    state = (state + 0x9E37_79B9_7F4A_7C15) & _MASK64
    z = state
    z = ((z ^ (z >> 30)) * 0xBF58_476D_1CE4_E5B9) & _MASK64
    z = ((z ^ (z >> 27)) * 0x94D0_49BB_1331_11EB) & _MASK64
    return state, z ^ (z >> 31)


def campaign_constants(seed: int) -> tuple[int, int, int, int, int]:
    """(a1, a2, a4, b1, b2) of version 2 for a campaign seed."""
    state, out = seed & _MASK64, []
    for _ in range(5):
        state, value = _splitmix64(state)
        out.append(value)
    a1, a2, a4 = (1 + value % (2**31 - 1) for value in out[:3])  # products < 2**63
    b1, b2 = (value % PRIME for value in out[3:])
    return a1, a2, a4, b1, b2


def assignment_hash_v2(seed: int, key: int) -> int:
    """Version 2, the Python reference of `assignment_sql` (docstring above)."""
    a1, a2, a4, b1, b2 = campaign_constants(seed)
    hi, lo = (key >> 32) & MASK32, key & MASK32
    u = ((hi * a1) % PRIME + (lo * a2) % PRIME + b1) % PRIME
    v = ((lo * a4) % PRIME + b2) % PRIME
    return (u - 2**31) * 2**32 + v


def campaign_hash(version: int, seed: int, external_id: str, key: int | None = None) -> int:
    """The R9 hash of a profile in a campaign using hash `version`."""
    if version == MD5_VERSION:
        return assignment_hash(seed, external_id)
    return assignment_hash_v2(seed, profile_key(external_id) if key is None else key)


def assignment_sql(
    version: int, seed: int, *, key: str = "p.hash_key", external_id: str = "p.external_id"
) -> str:
    """The R9 hash of a campaign as an SQL expression over the profile's columns (alias
    p by default). The campaign's constants are integer literals (never user input)."""
    if version == MD5_VERSION:
        return f"{SQL_FUNCTION}({int(seed)}, {external_id})"
    if version != KEYED_VERSION:
        raise ValueError(f"unknown assignment hash version {version!r}")
    a1, a2, a4, b1, b2 = campaign_constants(int(seed))
    u = (
        f"((((({key}) >> 32) & {MASK32}) * {a1}) % {PRIME} "
        f"+ ((({key}) & {MASK32}) * {a2}) % {PRIME} + {b1}) % {PRIME}"
    )
    v = f"(((({key}) & {MASK32}) * {a4}) % {PRIME} + {b2}) % {PRIME}"
    return f"((({u}) - 2147483648) * 4294967296 + ({v}))"
