"""Stratum keys (R9): one text value per combination of the strata fields' values.

Encoding: the values of the strata fields, in the order the campaign lists them, each
written as text and joined by the unit separator U+001F. NULL is written as the empty
string. No strata fields: the key is '' (one stratum holding everyone).

    text  -> the value itself
    int   -> decimal digits, e.g. '20', '-3'
    date  -> ISO 'YYYY-MM-DD'

The key is computed in SQL from the profile's slot columns (`key_sql`), with a form
that gives byte-identical text on SQLite and PostgreSQL, so the same profile always
lands in the same stratum on both backends. `decode` turns a key back into
{field: value} (values stay text; '' means "no value").
"""

from __future__ import annotations

from collections.abc import Sequence

from store.catalog import STRATIFIABLE_TYPES, ProfileField
from store.errors import ValidationError

SEP = "\x1f"
MAX_STRATA = 1000  # distinct value combinations a campaign may be stratified into
MAX_STRATA_FIELDS = 4


def resolve_fields(fields: Sequence[ProfileField], names: Sequence[str]) -> list[ProfileField]:
    """The declared fields for strata `names`, in order; ValidationError when unusable."""
    by_name = {f.name: f for f in fields}
    seen: set[str] = set()
    out: list[ProfileField] = []
    if len(names) > MAX_STRATA_FIELDS:
        raise ValidationError(
            f"at most {MAX_STRATA_FIELDS} strata fields are allowed, got {len(names)}"
        )
    for name in names:
        if not isinstance(name, str) or name not in by_name:
            known = ", ".join(sorted(by_name)) or "none"
            raise ValidationError(f"unknown strata field {name!r}; the database declares: {known}")
        if name in seen:
            raise ValidationError(f"strata field {name!r} is listed twice")
        field = by_name[name]
        if field.type not in STRATIFIABLE_TYPES:
            raise ValidationError(
                f"strata field {name!r} is of type {field.type} and cannot be stratified "
                f"(use a field of type {', '.join(STRATIFIABLE_TYPES)})"
            )
        seen.add(name)
        out.append(field)
    return out


def key_sql(fields: Sequence[ProfileField], alias: str = "p") -> str:
    """SQL text expression of the stratum key over `alias` (a profile row)."""
    if not fields:
        return "''"
    parts = [f"COALESCE(CAST({alias}.{f.slot} AS TEXT), '')" for f in fields]
    return f" || '{SEP}' || ".join(parts)


def decode(
    key: str, names: Sequence[str], types: dict[str, str] | None = None
) -> dict[str, str | None]:
    """{field: value} of a key written under strata `names`. A key written under older
    strata settings (a recalculation re-keys the counters only when its rekey phase ends)
    comes back as {"key": key}: when its number of values differs, or, given the fields'
    `types`, when a value cannot be one of its field (issue 15.4: 'Kazan' is no tier)."""
    if not names:
        return {}
    values = key.split(SEP)
    if len(values) != len(names):  # keys of older strata settings
        return {"key": key}
    if types and not all(
        v == "" or _fits(v, types.get(n, "text")) for n, v in zip(names, values, strict=True)
    ):
        return {"key": key}
    return {n: (v if v != "" else None) for n, v in zip(names, values, strict=True)}


def _fits(value: str, field_type: str) -> bool:
    if field_type == "int":
        return value.lstrip("-").isdigit()
    if field_type == "date":
        return len(value) == 10 and value[4] == "-" and value[7] == "-"
    return True


def label(key: str, names: Sequence[str], types: dict[str, str] | None = None) -> str:
    """Human text for a stratum: 'int_field=20, region=Moscow' or 'all'."""
    if not names:
        return "all"
    return ", ".join(f"{k}={'∅' if v is None else v}" for k, v in decode(key, names, types).items())
