"""The rule language of dynamic segments: a tokenizer, a recursive-descent parser, a compiler.

A rule is a boolean expression over the declared fields of one profile database:

    region = 'Moscow' and age < 30
    tier in (2, 3) and not (region = 'Sochi' or signup < '2020-01-01')
    ltv >= 99.5 or email is null

Grammar (keywords are case-insensitive)::

    rule        := or_expr END
    or_expr     := and_expr ( "or" and_expr )*
    and_expr    := not_expr ( "and" not_expr )*
    not_expr    := "not" not_expr | primary
    primary     := "(" or_expr ")" | condition
    condition   := FIELD op literal
                 | FIELD [ "not" ] "in" "(" literal ( "," literal )* ")"
                 | FIELD "is" [ "not" ] "null"
    op          := "=" | "!=" | "<>" | "<" | "<=" | ">" | ">="
    literal     := STRING | NUMBER
    STRING      := single-quoted, '' inside for a quote: 'O''Brien'
    NUMBER      := [-] digits [ "." digits ]

Types: a text field takes a string and only = != in / not in / is null (ordering of text
differs between SQLite and PostgreSQL collations, so it is refused); an int field takes a
whole number; a float field takes any number; a date field takes a string 'YYYY-MM-DD'.

Missing values: a comparison (including !=, in, not in) with a field that has no value is
false; `not` negates that, so `not region = 'Moscow'` also matches profiles without a
region, while `region != 'Moscow'` does not. Use `is null` / `is not null` to test for it.

The parser never evaluates text: literals become bound parameters of a SQLAlchemy
expression over the `profile` slot columns (store.models), and field names are checked
against the database's declared fields. Errors are `RuleError` (a ValidationError) naming
the 1-based character position.
"""

from __future__ import annotations

import difflib
import operator
import re
from collections.abc import Iterable
from dataclasses import dataclass
from datetime import date
from typing import Any, Protocol

import sqlalchemy as sa

from store.errors import ValidationError
from store.models import Profile

MAX_RULE_LENGTH = 4000
MAX_DEPTH = 40  # nesting of parentheses / not
MAX_IN_VALUES = 1000
INT_RANGE = (-(2**63), 2**63 - 1)

KEYWORDS = {"and", "or", "not", "in", "is", "null"}
COMPARISONS = ("=", "!=", "<>", "<", "<=", ">", ">=")
ORDERED_OPS = ("<", "<=", ">", ">=")
OPERATORS = {
    "=": operator.eq,
    "!=": operator.ne,
    "<": operator.lt,
    "<=": operator.le,
    ">": operator.gt,
    ">=": operator.ge,
}


class RuleError(ValidationError):
    """A rule that cannot be parsed or does not fit the database's fields."""

    def __init__(self, message: str, position: int | None = None, text: str | None = None):
        self.reason = message
        self.position = position  # 1-based character position, None for the whole rule
        where = f" at position {position}" if position is not None else ""
        excerpt = ""
        if text is not None and position is not None:
            start = max(position - 1, 0)
            near = text[start : start + 20]
            excerpt = f" (near {near!r})" if near else " (at the end of the rule)"
        super().__init__(f"rule error{where}: {message}{excerpt}")


# --------------------------------------------------------------------------- tokens


@dataclass(frozen=True)
class Token:
    kind: str  # "name" | "keyword" | "string" | "number" | "op" | "(" | ")" | "," | "end"
    value: Any
    pos: int  # 1-based
    text: str  # as written


_NUMBER = re.compile(r"-?\d+(\.\d+)?")
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")


def tokenize(text: str) -> list[Token]:
    tokens: list[Token] = []
    i = 0
    n = len(text)
    while i < n:
        ch = text[i]
        pos = i + 1
        if ch.isspace():
            i += 1
            continue
        if ch in "(),":
            tokens.append(Token(ch, ch, pos, ch))
            i += 1
            continue
        two = text[i : i + 2]
        if two in ("!=", "<>", "<=", ">="):
            tokens.append(Token("op", "!=" if two == "<>" else two, pos, two))
            i += 2
            continue
        if ch in "=<>":
            tokens.append(Token("op", ch, pos, ch))
            i += 1
            continue
        if ch == "'":
            value, i = _read_string(text, i)
            tokens.append(Token("string", value, pos, text[pos - 1 : i]))
            continue
        if ch == '"':
            raise RuleError("write text in single quotes ('Moscow'), not double quotes", pos, text)
        match = _NUMBER.match(text, i)
        if match and (ch != "-" or len(match.group()) > 1):
            raw = match.group()
            end = match.end()
            if end < n and (text[end].isalpha() or text[end] == "_" or text[end] == "."):
                raise RuleError(f"malformed number {text[i : end + 1]!r}", pos, text)
            value: int | float = float(raw) if match.group(1) else int(raw)
            tokens.append(Token("number", value, pos, raw))
            i = end
            continue
        match = _NAME.match(text, i)
        if match:
            word = match.group()
            lower = word.lower()
            if lower in KEYWORDS:
                tokens.append(Token("keyword", lower, pos, word))
            else:
                tokens.append(Token("name", word, pos, word))
            i = match.end()
            continue
        raise RuleError(f"unexpected character {ch!r}", pos, text)
    tokens.append(Token("end", None, n + 1, ""))
    return tokens


def _read_string(text: str, start: int) -> tuple[str, int]:
    """A single-quoted string from text[start] == "'"; '' is an escaped quote."""
    parts: list[str] = []
    i = start + 1
    while i < len(text):
        ch = text[i]
        if ch == "'":
            if text[i + 1 : i + 2] == "'":
                parts.append("'")
                i += 2
                continue
            return "".join(parts), i + 1
        parts.append(ch)
        i += 1
    raise RuleError("text literal is not closed: add the final '", start + 1, text)


# --------------------------------------------------------------------------- syntax tree


@dataclass(frozen=True)
class Literal:
    value: str | int | float
    kind: str  # "string" | "number"
    pos: int
    text: str


@dataclass(frozen=True)
class Compare:
    field: str
    op: str  # one of = != < <= > >=
    value: Literal
    pos: int
    op_pos: int


@dataclass(frozen=True)
class InList:
    field: str
    values: tuple[Literal, ...]
    negated: bool
    pos: int


@dataclass(frozen=True)
class IsNull:
    field: str
    negated: bool
    pos: int


@dataclass(frozen=True)
class And:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Or:
    items: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    item: Node


Node = Compare | InList | IsNull | And | Or | Not


@dataclass(frozen=True)
class Rule:
    text: str
    root: Node

    def field_names(self) -> list[str]:
        """The field names the rule uses, in order of first appearance."""
        seen: dict[str, None] = {}
        for cond in _conditions(self.root):
            seen.setdefault(cond.field, None)
        return list(seen)


def _conditions(node: Node) -> Iterable[Compare | InList | IsNull]:
    if isinstance(node, And | Or):
        for item in node.items:
            yield from _conditions(item)
    elif isinstance(node, Not):
        yield from _conditions(node.item)
    else:
        yield node


# --------------------------------------------------------------------------- parser


def parse_rule(text: str) -> Rule:
    """Parse a rule (syntax only); `compile_rule` checks fields and literal types."""
    if text is None or not str(text).strip():
        raise RuleError("the rule is empty: write a condition such as region = 'Moscow'")
    text = str(text)
    if len(text) > MAX_RULE_LENGTH:
        raise RuleError(f"the rule is longer than {MAX_RULE_LENGTH} characters")
    return Rule(text=text, root=_Parser(text).parse())


class _Parser:
    def __init__(self, text: str):
        self.text = text
        self.tokens = tokenize(text)
        self.i = 0
        self.depth = 0

    @property
    def tok(self) -> Token:
        return self.tokens[self.i]

    def error(self, message: str, token: Token | None = None) -> RuleError:
        token = token or self.tok
        return RuleError(message, token.pos, self.text)

    def describe(self, token: Token) -> str:
        return "the end of the rule" if token.kind == "end" else repr(token.text)

    def advance(self) -> Token:
        token = self.tok
        self.i += 1
        return token

    def at_keyword(self, word: str) -> bool:
        return self.tok.kind == "keyword" and self.tok.value == word

    def expect(self, kind: str, what: str) -> Token:
        if self.tok.kind != kind:
            raise self.error(f"expected {what}, found {self.describe(self.tok)}")
        return self.advance()

    def parse(self) -> Node:
        node = self.or_expr()
        if self.tok.kind != "end":
            if self.tok.kind == ")":
                raise self.error("unbalanced ')': no '(' is open here")
            raise self.error(
                f"expected 'and', 'or' or the end of the rule, found {self.describe(self.tok)}"
            )
        return node

    def or_expr(self) -> Node:
        items = [self.and_expr()]
        while self.at_keyword("or"):
            self.advance()
            items.append(self.and_expr())
        return items[0] if len(items) == 1 else Or(tuple(items))

    def and_expr(self) -> Node:
        items = [self.not_expr()]
        while self.at_keyword("and"):
            self.advance()
            items.append(self.not_expr())
        return items[0] if len(items) == 1 else And(tuple(items))

    def not_expr(self) -> Node:
        if self.at_keyword("not"):
            self.nest()
            self.advance()
            node = Not(self.not_expr())
            self.depth -= 1
            return node
        return self.primary()

    def nest(self) -> None:
        self.depth += 1
        if self.depth > MAX_DEPTH:
            raise self.error(f"the rule nests deeper than {MAX_DEPTH} levels")

    def primary(self) -> Node:
        if self.tok.kind == "(":
            self.nest()
            opening = self.advance()
            node = self.or_expr()
            if self.tok.kind != ")":
                raise self.error(
                    f"expected ')' to close the '(' at position {opening.pos}, "
                    f"found {self.describe(self.tok)}"
                )
            self.advance()
            self.depth -= 1
            return node
        return self.condition()

    def condition(self) -> Node:
        token = self.tok
        if token.kind != "name":
            if token.kind == "keyword":
                raise self.error(
                    f"expected a field name, found the keyword {token.text!r} "
                    "(field names cannot be keywords)"
                )
            raise self.error(f"expected a field name, found {self.describe(token)}")
        self.advance()
        field = token.value
        if self.tok.kind == "op":
            op_token = self.advance()
            op = op_token.value
            value = self.literal(f"a value after {op!r}")
            return Compare(field, op, value, token.pos, op_token.pos)
        if self.at_keyword("is"):
            self.advance()
            negated = False
            if self.at_keyword("not"):
                self.advance()
                negated = True
            if not self.at_keyword("null"):
                raise self.error(f"expected 'null' after 'is', found {self.describe(self.tok)}")
            self.advance()
            return IsNull(field, negated, token.pos)
        negated = False
        if self.at_keyword("not"):
            self.advance()
            negated = True
            if not self.at_keyword("in"):
                raise self.error(
                    f"expected 'in' after '{field} not', found {self.describe(self.tok)}"
                )
        if self.at_keyword("in"):
            self.advance()
            self.expect("(", "'(' to open the list after 'in'")
            values = [self.literal("a value in the list")]
            while self.tok.kind == ",":
                self.advance()
                values.append(self.literal("a value after ','"))
                if len(values) > MAX_IN_VALUES:
                    raise self.error(f"an 'in' list holds at most {MAX_IN_VALUES} values")
            if self.tok.kind != ")":
                raise self.error(
                    f"expected ',' or ')' in the list, found {self.describe(self.tok)}"
                )
            self.advance()
            return InList(field, tuple(values), negated, token.pos)
        raise self.error(
            f"expected a comparison (= != < <= > >=), 'in', 'not in' or 'is' after "
            f"field {field!r}, found {self.describe(self.tok)}"
        )

    def literal(self, what: str) -> Literal:
        token = self.tok
        if token.kind in ("string", "number"):
            self.advance()
            return Literal(token.value, token.kind, token.pos, token.text)
        if token.kind == "name":
            raise self.error(
                f"expected {what}, found {token.text!r}: write text in single quotes "
                f"('{token.text}'); a rule compares a field with a value, not with another field"
            )
        raise self.error(f"expected {what}, found {self.describe(token)}")


# --------------------------------------------------------------------------- compiler


class FieldLike(Protocol):
    name: str
    type: str  # "text" | "int" | "float" | "date"
    slot: str


def compile_rule(rule: Rule, fields: Iterable[FieldLike]) -> sa.ColumnElement[bool]:
    """A parameterised SQL boolean over `profile` slot columns; checks names and types."""
    declared = {f.name: f for f in fields}
    return _Compiler(rule.text, declared).node(rule.root)


def check_rule(text: str, fields: Iterable[FieldLike]) -> Rule:
    """Parse and compile (for validation); returns the parsed rule."""
    rule = parse_rule(text)
    compile_rule(rule, fields)
    return rule


class _Compiler:
    def __init__(self, text: str, declared: dict[str, FieldLike]):
        self.text = text
        self.declared = declared
        self.table = Profile.__table__

    def error(self, message: str, pos: int) -> RuleError:
        return RuleError(message, pos, self.text)

    def node(self, node: Node) -> sa.ColumnElement[bool]:
        if isinstance(node, And):
            return sa.and_(*(self.node(item) for item in node.items))
        if isinstance(node, Or):
            return sa.or_(*(self.node(item) for item in node.items))
        if isinstance(node, Not):
            return sa.not_(self.node(node.item))
        field = self.field(node.field, node.pos)
        column = self.table.c[field.slot]
        if isinstance(node, IsNull):
            return column.is_not(None) if node.negated else column.is_(None)
        if isinstance(node, Compare):
            if field.type == "text" and node.op in ORDERED_OPS:
                raise self.error(
                    f"field {field.name!r} is text: use = != in or not in "
                    f"(ordering {node.op!r} is not supported for text)",
                    node.op_pos,
                )
            value = self.value(field, node.value)
            comparison = OPERATORS[node.op](column, sa.literal(value, column.type))
            return self.two_valued(column, comparison)
        values = [self.value(field, literal) for literal in node.values]
        bound = [sa.literal(v, column.type) for v in values]
        if node.negated:
            return self.two_valued(column, column.not_in(bound))
        return self.two_valued(column, column.in_(bound))

    @staticmethod
    def two_valued(column: sa.ColumnElement[Any], condition: Any) -> sa.ColumnElement[bool]:
        # A missing value makes the condition false (not NULL), so `not` is a plain negation.
        return sa.and_(column.is_not(None), condition)

    def field(self, name: str, pos: int) -> FieldLike:
        field = self.declared.get(name)
        if field is None:
            known = ", ".join(sorted(self.declared)) or "none"
            close = difflib.get_close_matches(name.lower(), list(self.declared), n=1)
            hint = f" (did you mean {close[0]!r}?)" if close else ""
            raise self.error(f"unknown field {name!r}{hint}; the declared fields are: {known}", pos)
        return field

    def value(self, field: FieldLike, literal: Literal) -> str | int | float | date:
        ftype = field.type
        if ftype == "text":
            if literal.kind != "string":
                raise self.error(
                    f"field {field.name!r} is text: quote the value ('{literal.text}')",
                    literal.pos,
                )
            return literal.value
        if ftype == "int":
            if literal.kind != "number" or not isinstance(literal.value, int):
                raise self.error(
                    f"field {field.name!r} is an int: write a whole number, not {literal.text}",
                    literal.pos,
                )
            if not INT_RANGE[0] <= literal.value <= INT_RANGE[1]:
                raise self.error(f"number {literal.text} is out of the int range", literal.pos)
            return literal.value
        if ftype == "float":
            if literal.kind != "number":
                raise self.error(
                    f"field {field.name!r} is a float: write a number, not {literal.text}",
                    literal.pos,
                )
            return float(literal.value)
        if ftype == "date":
            if literal.kind == "string" and re.fullmatch(r"\d{4}-\d{2}-\d{2}", literal.value):
                try:
                    return date.fromisoformat(literal.value)
                except ValueError:
                    pass
            raise self.error(
                f"field {field.name!r} is a date: write a date as 'YYYY-MM-DD', not {literal.text}",
                literal.pos,
            )
        raise self.error(f"field {field.name!r} has an unsupported type {ftype!r}", literal.pos)
