"""Is a SQL statement a read? The client-side half of a read-only engine's guard.

Behind Neon's pooler nothing on the server can be told to refuse writes (PgBouncer refuses
startup options, and a SET would leak to other clients), so this check is the only guard there.
It reads the statement as PostgreSQL's lexer splits it — comments, string literals and quoted
identifiers are never mistaken for keywords — and refuses what it cannot show to be a read:

- anything but SELECT, VALUES, TABLE, SHOW, FETCH, WITH, or EXPLAIN of one of these (with or
  without ANALYZE: EXPLAIN ANALYZE runs what it explains; a write's plan is for SessionDep);
- more than one statement in one call (libpq runs `SELECT 1; DELETE …` as one string);
- a data-modifying WITH (INSERT/UPDATE/DELETE/MERGE opening a parenthesised part, or the
  statement after the WITH list), SELECT … INTO (creates a table), row locks (FOR UPDATE/SHARE);
- calls of the built-in functions below, which write or act on the server.

What it cannot see is what a function does: a user-defined function that writes looks like any
other call. Direct hosts have the server's guard for that (backend/db/readonly.py); behind the
pooler, only a role without write privileges can refuse it (README, "Reads in one round trip").
It assumes standard_conforming_strings=on (PostgreSQL's default since 9.1, and Neon's).
"""

import functools
import re
from typing import Literal, NamedTuple

# What a read starts with (after any opening parentheses), and what EXPLAIN may explain.
READS = frozenset({"select", "values", "table", "show", "fetch", "with", "explain"})
EXPLAINABLE_READS = frozenset({"select", "values", "table", "with"})
WRITES = frozenset({"insert", "update", "delete", "merge"})
EXPLAIN_OPTIONS = frozenset({"analyze", "analyse", "verbose"})
# Built-in functions that write or act on the server although a SELECT calls them. Explicit and
# modest: the ones a read route could plausibly call by mistake or be tricked into calling.
SIDE_EFFECTS = frozenset(
    {
        "nextval",
        "setval",
        "set_config",  # e.g. switches default_transaction_read_only off for the session
        "pg_notify",
        "pg_cancel_backend",
        "pg_terminate_backend",
        "pg_reload_conf",
        "pg_rotate_logfile",
        "pg_switch_wal",
        "pg_create_restore_point",
        "pg_logical_emit_message",
        "pg_create_physical_replication_slot",
        "pg_create_logical_replication_slot",
        "pg_drop_replication_slot",
        # Large objects: created, written, deleted, or copied to and from the server's disk.
        "lo_creat",
        "lo_create",
        "lo_from_bytea",
        "lo_import",
        "lo_export",
        "lo_open",
        "lo_put",
        "lo_truncate",
        "lo_truncate64",
        "lo_unlink",
        "lowrite",
    }
)
SIDE_EFFECT_PREFIXES = ("dblink", "pg_stat_reset")  # dblink runs any SQL on another server

Kind = Literal["word", "quoted", "unicode_quoted", "literal", "symbol"]


class Token(NamedTuple):
    kind: Kind
    text: str  # a word lowercased (as the server folds it), a quoted identifier's name


OPEN, CLOSE, SEMICOLON = Token("symbol", "("), Token("symbol", ")"), Token("symbol", ";")
LITERAL = Token("literal", "")


class UnreadableSQL(ValueError):
    """An unterminated literal, quoted identifier or comment: the server would refuse it too."""


_LETTER = "A-Za-z_\u0080-\U0010ffff"
# One alternative per kind of token, tried in order at each position (PostgreSQL's scan.l).
_TOKEN = re.compile(
    rf"""
      (?P<space>[ \t\n\r\f\v]+)
    | (?P<line_comment>--[^\n\r]*)
    | (?P<block_comment>/\*)
    | (?P<escape_string>[eE]'[^'\\]*(?:(?:\\.|'')[^'\\]*)*')
    | (?P<string>'[^']*(?:''[^']*)*')
    | (?P<unicode_quoted>[uU]&"[^"]*(?:""[^"]*)*")
    | (?P<quoted>"[^"]*(?:""[^"]*)*")
    | (?P<dollar_quote>\$(?:[{_LETTER}][{_LETTER}0-9]*)?\$)
    | (?P<word>[{_LETTER}][{_LETTER}0-9$]*)
    | (?P<number>[0-9]+)
    | (?P<unterminated>['"])
    | (?P<symbol>.)
    """,
    re.VERBOSE | re.DOTALL,
)


def tokens(sql: str) -> list[Token]:
    """Words, quoted identifiers, literals and symbols; comments and whitespace are dropped."""
    found: list[Token] = []
    pos = 0
    while pos < len(sql):
        match = _TOKEN.match(sql, pos)
        assert match is not None  # the last alternative matches any character
        kind, text, pos = match.lastgroup, match.group(), match.end()
        if kind in ("space", "line_comment"):
            continue
        if kind == "block_comment":
            pos = _block_comment_end(sql, match.start())
        elif kind == "dollar_quote":
            end = sql.find(text, pos)
            if end < 0:
                raise UnreadableSQL("an unterminated dollar-quoted string")
            pos = end + len(text)
            found.append(LITERAL)
        elif kind in ("string", "escape_string", "number"):
            found.append(LITERAL)
        elif kind == "quoted":
            found.append(Token("quoted", text[1:-1].replace('""', '"')))
        elif kind == "unicode_quoted":  # U&"…" may spell any name with escapes
            found.append(Token("unicode_quoted", ""))
        elif kind == "word":
            found.append(Token("word", text.lower()))
        elif kind == "unterminated":
            raise UnreadableSQL(f"an unterminated {text}…{text}")
        else:
            found.append(Token("symbol", text))
    return found


@functools.lru_cache(maxsize=1024)
def not_a_read(sql: str) -> str | None:
    """None for a read; else what makes it something else, worded for an error message.

    Cached: an application sends the same few hundred statement texts (SQLAlchemy binds values
    as parameters), and reading one costs tens of microseconds.
    """
    try:
        statement = tokens(sql)
    except UnreadableSQL as error:
        return f"SQL it cannot read ({error})"
    while statement and statement[-1] == SEMICOLON:
        statement.pop()
    if SEMICOLON in statement:
        return "more than one statement in one call"
    if reason := _leading_keyword(statement):
        return reason
    for index, token in enumerate(statement):
        before = statement[index - 1] if index else None
        after = statement[index + 1] if index + 1 < len(statement) else None
        if reason := _refused_at(token, before, after):
            return reason
    return None


def _leading_keyword(statement: list[Token], allowed: frozenset[str] = READS) -> str | None:
    index = 0
    while index < len(statement) and statement[index] == OPEN:
        index += 1  # SQLAlchemy's union() of limited SELECTs starts with "("
    if index == len(statement):
        return None  # nothing to run
    first = statement[index]
    if first.kind != "word" or first.text not in allowed:
        return repr(first.text.upper() or first.kind)
    if first.text != "explain":
        return None
    index += 1
    if index < len(statement) and statement[index] == OPEN:
        index = _after_parentheses(statement, index)
    while index < len(statement) and statement[index].text in EXPLAIN_OPTIONS:
        index += 1
    if reason := _leading_keyword(statement[index:], EXPLAINABLE_READS):
        return f"EXPLAIN of {reason}"
    return None


def _refused_at(token: Token, before: Token | None, after: Token | None) -> str | None:
    if token.kind == "word":
        if token.text in WRITES and before in (OPEN, CLOSE):
            return f"a data-modifying WITH ({token.text.upper()})"
        if token.text == "into":
            return "SELECT … INTO, which creates a table"
        if token.text == "for" and after and after.text in ("update", "share", "no", "key"):
            return "a row lock (FOR UPDATE/SHARE), which writes to the rows"
    if after != OPEN:
        return None
    if token.kind == "unicode_quoted":
        return 'a call of a function named with U&"…", whose name it cannot check'
    if token.kind in ("word", "quoted") and (
        token.text in SIDE_EFFECTS or token.text.startswith(SIDE_EFFECT_PREFIXES)
    ):
        return f"{token.text}(), which has side effects"
    return None


def _after_parentheses(statement: list[Token], index: int) -> int:
    depth = 0
    for position in range(index, len(statement)):
        if statement[position] == OPEN:
            depth += 1
        elif statement[position] == CLOSE:
            depth -= 1
            if depth == 0:
                return position + 1
    return len(statement)


def _block_comment_end(sql: str, start: int) -> int:
    """PostgreSQL's block comments nest: /* a /* b */ c */ is one comment."""
    depth, pos = 0, start
    while pos < len(sql):
        two = sql[pos : pos + 2]
        if two == "/*":
            depth, pos = depth + 1, pos + 2
        elif two == "*/":
            depth, pos = depth - 1, pos + 2
            if depth == 0:
                return pos
        else:
            pos += 1
    raise UnreadableSQL("an unterminated /* comment")
