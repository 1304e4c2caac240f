"""The dynamic segment rule language (store.rules): parsing, checking and compiling.

Parser tests are pure. The evaluation test compiles generated rules and runs them on both
backends (`engine` fixture), comparing with a reference evaluator written in Python.
"""

from __future__ import annotations

from datetime import date
from types import SimpleNamespace

import pytest
import sqlalchemy as sa
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy.dialects import postgresql, sqlite

from store import profiles
from store.db import transaction
from store.errors import ValidationError
from store.models import Profile
from store.rules import (
    And,
    Compare,
    InList,
    IsNull,
    Not,
    Or,
    RuleError,
    check_rule,
    compile_rule,
    parse_rule,
    tokenize,
)

FIELDS = [
    SimpleNamespace(name="region", type="text", slot="t0"),
    SimpleNamespace(name="tier", type="int", slot="i0"),
    SimpleNamespace(name="ltv", type="float", slot="f0"),
    SimpleNamespace(name="signup", type="date", slot="d0"),
]


def sql(text: str, dialect=None) -> str:
    expression = compile_rule(parse_rule(text), FIELDS)
    return str(expression.compile(dialect=dialect or sqlite.dialect()))


def error_of(text: str) -> RuleError:
    with pytest.raises(RuleError) as info:
        check_rule(text, FIELDS)
    return info.value


# --------------------------------------------------------------------------- good rules


def test_precedence_not_binds_tighter_than_and_than_or():
    rule = parse_rule("not tier = 1 and region = 'a' or ltv > 2")
    assert isinstance(rule.root, Or)
    left, right = rule.root.items
    assert isinstance(left, And) and isinstance(left.items[0], Not)
    assert isinstance(right, Compare) and right.op == ">"


def test_parentheses_group_and_keywords_are_case_insensitive():
    rule = parse_rule("NOT (tier = 1 OR tier = 2) AND region IS NOT NULL")
    assert isinstance(rule.root, And)
    assert isinstance(rule.root.items[0], Not) and isinstance(rule.root.items[0].item, Or)
    assert rule.root.items[1] == IsNull("region", True, 32)


def test_every_operator_and_list_form_parses():
    for op in ("=", "!=", "<", "<=", ">", ">="):
        node = parse_rule(f"tier {op} 3").root
        assert isinstance(node, Compare) and node.op == op and node.value.value == 3
    assert parse_rule("tier <> 3").root.op == "!="
    node = parse_rule("tier not in (1, 2,3)").root
    assert isinstance(node, InList) and node.negated
    assert [v.value for v in node.values] == [1, 2, 3]
    assert parse_rule("region is null").root == IsNull("region", False, 1)


def test_literals_numbers_strings_and_escaped_quotes():
    tokens = tokenize("ltv >= -12.75 and region = 'O''Brien'")
    values = [t.value for t in tokens if t.kind in ("number", "string")]
    assert values == [-12.75, "O'Brien"]
    assert parse_rule("tier > -3").root.value.value == -3


def test_field_names_used_are_listed_in_order():
    rule = parse_rule("tier = 1 and (region = 'a' or tier = 2) and ltv is null")
    assert rule.field_names() == ["tier", "region", "ltv"]


def test_compiled_sql_is_parameterised_over_slot_columns():
    text = sql("region = 'Moscow' and tier in (1, 2) and signup >= '2024-01-01'")
    assert "profile.t0" in text and "profile.i0" in text and "profile.d0" in text
    assert "Moscow" not in text and "2024" not in text  # literals are bound parameters
    compiled = compile_rule(parse_rule("signup >= '2024-01-01'"), FIELDS).compile()
    assert date(2024, 1, 1) in compiled.params.values()
    assert "%(" in sql("tier = 1", postgresql.dialect())


def test_float_field_accepts_whole_numbers_and_dates_are_typed():
    compiled = compile_rule(parse_rule("ltv > 3"), FIELDS).compile()
    assert 3.0 in compiled.params.values()
    assert isinstance(next(iter(compiled.params.values())), float)


def test_injection_attempts_stay_literals():
    for hostile in (
        "region = 'x'' OR 1=1 --'",
        "region = '; DROP TABLE profile; --'",
        "region = 'a'' ) OR (''1''=''1'",
    ):
        rule = parse_rule(hostile)
        assert isinstance(rule.root, Compare)
        text = sql(hostile)
        assert "DROP" not in text and "1=1" not in text and "OR" not in text


# --------------------------------------------------------------------------- bad rules


@pytest.mark.parametrize(
    ("rule", "position", "fragment"),
    [
        ("colour = 'red'", 1, "unknown field 'colour'; the declared fields are: ltv, region"),
        ("Regoin = 'a'", 1, "unknown field 'Regoin' (did you mean 'region'?)"),
        ("tier = 'one'", 8, "field 'tier' is an int: write a whole number"),
        ("tier = 1.5", 8, "field 'tier' is an int"),
        ("region = 5", 10, "field 'region' is text: quote the value"),
        ("region < 'b'", 8, "ordering '<' is not supported for text"),
        ("ltv = 'x'", 7, "field 'ltv' is a float"),
        ("signup = '2024-02-30'", 10, "is a date: write a date as 'YYYY-MM-DD'"),
        ("signup = '01/02/2024'", 10, "is a date"),
        ("signup > 20240101", 10, "is a date"),
        ("region = Moscow", 10, "write text in single quotes ('Moscow')"),
        ('region = "Moscow"', 10, "single quotes"),
        ("region = 'Moscow", 10, "text literal is not closed"),
        ("(tier = 1", 10, "expected ')' to close the '(' at position 1"),
        ("tier = 1)", 9, "unbalanced ')'"),
        ("tier = 1 and", 13, "expected a field name, found the end of the rule"),
        ("tier = 1 region = 'a'", 10, "expected 'and', 'or' or the end of the rule"),
        ("tier 1", 6, "expected a comparison"),
        ("tier == 1", 7, "expected a value after '='"),
        ("tier not 1", 10, "expected 'in' after 'tier not'"),
        ("tier in 1", 9, "expected '(' to open the list"),
        ("tier in ()", 10, "expected a value in the list"),
        ("tier in (1 2)", 12, "expected ',' or ')'"),
        ("region is 'a'", 11, "expected 'null' after 'is'"),
        ("and = 1", 1, "the keyword 'and'"),
        ("tier = 1; drop", 9, "unexpected character ';'"),
        ("tier = 12abc", 8, "malformed number"),
        ("tier = 1.2.3", 8, "malformed number"),
        ("tier = 99999999999999999999", 8, "out of the int range"),
    ],
)
def test_bad_rules_name_the_problem_and_its_position(rule, position, fragment):
    error = error_of(rule)
    assert isinstance(error, ValidationError)  # exit code 3 in the CLI
    assert error.position == position, str(error)
    assert fragment in str(error), str(error)
    assert f"at position {position}" in str(error)


def test_empty_and_oversized_rules_are_refused():
    assert "empty" in str(error_of("   "))
    assert "longer than" in str(error_of("tier = 1 or " * 500 + "tier = 2"))
    deep = "(" * 60 + "tier = 1" + ")" * 60
    assert "nests deeper" in str(error_of(deep))
    assert "nests deeper" in str(error_of("not " * 60 + "tier = 1"))


@given(st.text(max_size=60))
@settings(max_examples=300, deadline=None)
def test_any_text_either_compiles_or_raises_a_rule_error(text):
    try:
        check_rule(text, FIELDS)
    except RuleError as error:
        assert str(error).startswith("rule error")


# --------------------------------------------------------------------------- evaluation

REGIONS = ["Moscow", "Kazan", None]
TIERS = [1, 2, 3, None]
LTVS = [0.5, 2.0, None]
SIGNUPS = [date(2024, 1, 1), date(2024, 6, 1), None]
ROWS = [(r, t, ltv, s) for r in REGIONS for t in TIERS for ltv in LTVS for s in SIGNUPS]

_condition = st.one_of(
    st.builds(
        lambda op, v: f"tier {op} {v}",
        st.sampled_from(["=", "!=", "<", "<=", ">", ">="]),
        st.integers(0, 4),
    ),
    st.builds(
        lambda op, v: f"region {op} '{v}'",
        st.sampled_from(["=", "!="]),
        st.sampled_from(["Moscow", "Kazan", "x"]),
    ),
    st.builds(
        lambda op, v: f"ltv {op} {v}",
        st.sampled_from(["<", ">="]),
        st.sampled_from(["1", "2.0", "0.5"]),
    ),
    st.builds(
        lambda op, v: f"signup {op} '{v}'",
        st.sampled_from(["<", ">", "="]),
        st.sampled_from(["2024-01-01", "2024-03-01"]),
    ),
    st.builds(
        lambda neg, vs: f"tier {'not in' if neg else 'in'} ({', '.join(map(str, vs))})",
        st.booleans(),
        st.lists(st.integers(0, 4), min_size=1, max_size=3),
    ),
    st.builds(
        lambda f, neg: f"{f} is {'not ' if neg else ''}null",
        st.sampled_from(["region", "tier", "ltv", "signup"]),
        st.booleans(),
    ),
)
_rules = st.recursive(
    _condition,
    lambda inner: st.one_of(
        st.builds(lambda a, b: f"({a} and {b})", inner, inner),
        st.builds(lambda a, b: f"({a} or {b})", inner, inner),
        st.builds(lambda a: f"not {a}", inner),
    ),
    max_leaves=6,
)


def reference(node, row) -> bool:
    """Python semantics of the language: a condition on a missing value is false."""
    values = dict(zip(["region", "tier", "ltv", "signup"], row, strict=True))
    if isinstance(node, And):
        return all(reference(item, row) for item in node.items)
    if isinstance(node, Or):
        return any(reference(item, row) for item in node.items)
    if isinstance(node, Not):
        return not reference(node.item, row)
    value = values[node.field]
    if isinstance(node, IsNull):
        return (value is not None) if node.negated else (value is None)
    if value is None:
        return False

    def literal(lit):
        if node.field == "signup":
            return date.fromisoformat(lit.value)
        return float(lit.value) if node.field == "ltv" else lit.value

    if isinstance(node, InList):
        found = value in [literal(v) for v in node.values]
        return not found if node.negated else found
    other = literal(node.value)
    return {
        "=": value == other,
        "!=": value != other,
        "<": value < other,
        "<=": value <= other,
        ">": value > other,
        ">=": value >= other,
    }[node.op]


@pytest.fixture
def evaluation_db(engine, operator):
    with transaction(engine) as session:
        database = profiles.create_database(
            session, operator, "eval", [(f.name, f.type) for f in FIELDS]
        )
        fields = profiles.database_fields(session, database.id)
        slots = [f.slot for f in fields]
        for i, row in enumerate(ROWS):
            session.add(
                Profile(
                    database_id=database.id,
                    external_id=f"E{i:03d}",
                    **dict(zip(slots, row, strict=True)),
                )
            )
    return engine, fields


@given(text=_rules)
@settings(
    max_examples=60,
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture],
)
def test_compiled_rules_select_exactly_what_the_reference_selects(evaluation_db, text):
    engine, fields = evaluation_db
    rule = parse_rule(text)
    expected = sorted(f"E{i:03d}" for i, row in enumerate(ROWS) if reference(rule.root, row))
    with engine.connect() as conn:
        found = sorted(
            conn.scalars(
                sa.select(Profile.__table__.c.external_id).where(compile_rule(rule, fields))
            )
        )
    assert found == expected, text
