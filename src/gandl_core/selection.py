"""A safe selection language for user queries (``--controls``, ``--positive``, ``--query``, ...).

Every row selection a user types -- on the command line, in a config file, in napari -- goes
through :func:`select`. It reads like a pandas query but can never run code:

* the text is parsed with :mod:`ast` (never ``eval``/``exec``, never ``DataFrame.query``);
* only these pieces are allowed: comparisons ``== != < <= > >=`` (chained too), ``in`` / ``not in``,
  ``and`` / ``or`` / ``not`` (and pandas' ``&`` / ``|`` / ``~``, with pandas' precedence: they bind
  looser than comparisons), parentheses, column names (``backticks`` for names that are not
  identifiers: ```Metadata_Dose (uM)` > 1``), literals (text in quotes, numbers, ``True``,
  ``False``, ``None``) and lists/tuples of literals;
* ``'text' in column`` selects the rows whose value contains ``text`` (what pandas users write as
  ``column.str.contains('text', regex=False, na=False)``; calls are not allowed);
* everything else -- attribute access, calls, subscripts, ``@`` local variables, lambdas,
  arithmetic, f-strings -- is refused with a :class:`~gandl_core.errors.ConfigError` naming the
  option and the offending part;
* a name is only ever looked up as a column of the table; a backticked name is mapped to a
  placeholder before parsing and back to the column afterwards, so its text is never code.

The result is a boolean mask built from pandas comparisons. On clean inputs it equals
``DataFrame.query``'s selection; one deliberate difference: ``col == None`` selects the missing
values (``isna``) and ``col != None`` the present ones (pandas' query selects nothing / everything).
"""

from __future__ import annotations

import ast
import difflib
import operator
import re
from typing import Any

import numpy as np
import pandas as pd

from .errors import ConfigError

__all__ = ["select", "check_expr", "ALLOWED"]

ALLOWED = ("comparisons (==, !=, <, <=, >, >=), in / not in (column in [list]; 'text' in column: the column's "
           "text contains it), and / or / not (or &, |, ~), parentheses, "
           "column names (`backticks` around names with spaces or symbols), literals (text in quotes, "
           "numbers, True, False, None) and lists of literals")
EXAMPLE = "e.g. \"Metadata_Role == 'negative'\" or \"Metadata_Treatment in ['DMSO', 'none'] and Metadata_Dose > 0\""
MAX_LENGTH = 10_000

_CMP = {ast.Eq: operator.eq, ast.NotEq: operator.ne, ast.Lt: operator.lt, ast.LtE: operator.le,
        ast.Gt: operator.gt, ast.GtE: operator.ge}
_SCALARS = (str, int, float, bool, type(None))
_WHAT = {ast.Attribute: "attribute access", ast.Call: "a function call", ast.Subscript: "indexing",
         ast.Lambda: "a lambda", ast.BinOp: "arithmetic", ast.JoinedStr: "an f-string",
         ast.NamedExpr: "an assignment", ast.IfExp: "an if-expression", ast.Starred: "unpacking",
         ast.Dict: "a dict", ast.Set: "a set", ast.ListComp: "a comprehension",
         ast.GeneratorExp: "a comprehension", ast.DictComp: "a comprehension", ast.SetComp: "a comprehension",
         ast.Await: "await", ast.Yield: "yield", ast.Slice: "a slice"}


class _Parsed:
    """An expression parsed and checked: its AST and the placeholder -> column-name map."""

    def __init__(self, tree: ast.Expression, names: dict[str, str], expr: str, option: str):
        self.tree, self.names, self.expr, self.option = tree, names, expr, option

    def column(self, node: ast.Name) -> str:
        return self.names.get(node.id, node.id)

    def columns(self) -> list[str]:
        seen: list[str] = []
        for node in ast.walk(self.tree):
            if isinstance(node, ast.Name) and self.column(node) not in seen:
                seen.append(self.column(node))
        return seen

    def show(self, node: ast.AST) -> str:
        """The source of ``node`` with backticked names restored, for messages."""
        try:
            text = ast.unparse(node)
        except Exception:  # noqa: BLE001 - only used for a message
            text = type(node).__name__
        for ph, name in self.names.items():
            text = text.replace(ph, f"`{name}`")
        return text if len(text) <= 80 else text[:77] + "..."

    def fail(self, message: str) -> ConfigError:
        return ConfigError(f"{self.option} {self.expr!r}: {message}")


def _refuse(option: str, expr: str, part: str) -> ConfigError:
    return ConfigError(f"{option} {expr!r}: {part} is not allowed in a selection. Allowed: {ALLOWED}; {EXAMPLE}.")


def _rewrite(expr: str, option: str) -> tuple[str, dict[str, str]]:
    """Replace backticked names with placeholders and pandas' ``&``/``|`` with ``and``/``or``
    outside string literals; refuse ``@`` (pandas' local-variable reference)."""
    out: list[str] = []
    names: dict[str, str] = {}
    stem = "_gandl_col"
    while stem in expr:
        stem += "_"
    i, n = 0, len(expr)
    while i < n:
        ch = expr[i]
        if ch in "'\"":
            quote = expr[i:i + 3] if expr[i:i + 3] in ("'''", '"""') else ch
            j = i + len(quote)
            while j < n and not expr.startswith(quote, j):
                j += 2 if expr[j] == "\\" else 1
            if j >= n:
                raise ConfigError(f"{option} {expr!r}: a text value is not closed; close the quote {ch} "
                                  f"({EXAMPLE}).")
            j += len(quote)
            out.append(expr[i:j])
            i = j
        elif ch == "`":
            j = expr.find("`", i + 1)
            if j < 0:
                raise ConfigError(f"{option} {expr!r}: a backticked column name is not closed; write `name`.")
            name = expr[i + 1:j]
            if not name:
                raise ConfigError(f"{option} {expr!r}: empty backticks; write the column name between them.")
            ph = next((p for p, v in names.items() if v == name), None) or f"{stem}{len(names)}_"
            names[ph] = name
            out.append(f" {ph} ")
            i = j + 1
        elif ch == "@":
            raise _refuse(option, expr, f"'@' (a reference to a Python variable, here {expr[i:i + 40]!r})")
        elif ch == "&":
            out.append(" and ")
            i += 1
        elif ch == "|":
            out.append(" or ")
            i += 1
        elif ch == "#":
            raise _refuse(option, expr, "a comment ('#')")
        elif ch in "\r\n\t":  # a query pasted over several lines
            out.append(" ")
            i += 1
        else:
            out.append(ch)
            i += 1
    return "".join(out), names


def _parse(expr: Any, option: str) -> _Parsed:
    if not isinstance(expr, str) or not expr.strip():
        raise ConfigError(f"{option} {expr!r}: give a condition on the table's columns, {EXAMPLE}.")
    if len(expr) > MAX_LENGTH:
        raise ConfigError(f"{option}: the selection is {len(expr)} characters long; the limit is {MAX_LENGTH}.")
    text, names = _rewrite(expr.strip(), option)
    text = text.strip()
    try:
        tree = ast.parse(text, mode="eval")
    except SyntaxError as exc:
        raise ConfigError(f"{option} {expr!r} is not a valid selection ({exc.msg}). Allowed: {ALLOWED}; "
                          f"{EXAMPLE}.") from None
    except (RecursionError, MemoryError, ValueError):
        raise ConfigError(f"{option}: the selection is nested too deeply to read; simplify it.") from None
    parsed = _Parsed(tree, names, expr, option)
    try:
        _check(parsed, tree.body)
    except RecursionError:
        raise ConfigError(f"{option}: the selection is nested too deeply to read; simplify it.") from None
    return parsed


def _check(p: _Parsed, node: ast.AST) -> None:
    """Refuse every node type outside the language (before anything is evaluated)."""
    if isinstance(node, ast.BoolOp):
        for v in node.values:
            _check(p, v)
    elif isinstance(node, ast.UnaryOp):
        if isinstance(node.op, (ast.USub, ast.UAdd)):
            if not (isinstance(node.operand, ast.Constant) and type(node.operand.value) in (int, float)):
                raise _refuse(p.option, p.expr, f"arithmetic ({p.show(node)!r}; only a number may carry a sign)")
        elif isinstance(node.op, (ast.Not, ast.Invert)):
            _check(p, node.operand)
        else:
            raise _refuse(p.option, p.expr, f"the operator in {p.show(node)!r}")
    elif isinstance(node, ast.Compare):
        for op in node.ops:
            if type(op) not in _CMP and not isinstance(op, (ast.In, ast.NotIn)):
                raise _refuse(p.option, p.expr, f"'{'is' if isinstance(op, ast.Is) else 'is not'}' "
                              f"in {p.show(node)!r} (use == or !=)")
        for v in [node.left, *node.comparators]:
            _check(p, v)
    elif isinstance(node, ast.Name):
        pass
    elif isinstance(node, ast.Constant):
        if type(node.value) not in _SCALARS:
            raise _refuse(p.option, p.expr, f"the literal {p.show(node)!r} ({type(node.value).__name__})")
    elif isinstance(node, (ast.List, ast.Tuple)):
        for v in node.elts:
            if isinstance(v, ast.UnaryOp):
                _check(p, v)
            elif not (isinstance(v, ast.Constant) and type(v.value) in _SCALARS):
                raise _refuse(p.option, p.expr, f"{p.show(v)!r} inside a list (lists hold literals only)")
    else:
        what = _WHAT.get(type(node), type(node).__name__)
        raise _refuse(p.option, p.expr, f"{what} ({p.show(node)!r})")


def check_expr(expr: str, *, option: str = "--query") -> list[str]:
    """Check that ``expr`` is in the selection language, without a table.

    Returns the column names it uses (in order of appearance). Use it where options are read
    (argument parsing, config files) so a bad query fails before any work is done.

    Raises
    ------
    ConfigError
        The text does not parse, or uses anything outside the language (the part is named).
    """
    return _parse(expr, option).columns()


def select(df: pd.DataFrame, expr: str, *, option: str = "--query") -> pd.Series:
    """Boolean mask (indexed like ``df``) of the rows matching ``expr``.

    Raises
    ------
    ConfigError
        The expression is not in the language, names a column ``df`` lacks, or compares values
        that cannot be ordered (e.g. text < number); the message names ``option``.
    """
    p = _parse(expr, option)
    try:
        mask = _mask(p, p.tree.body, df)
    except RecursionError:
        raise p.fail("the selection is nested too deeply to evaluate; simplify it.") from None
    if np.ndim(mask) == 0:  # a literal condition (True / 1 == 1): every row or none
        mask = pd.Series(bool(mask), index=df.index)
    return mask.fillna(False).astype(bool).rename(None)


def _mask(p: _Parsed, node: ast.AST, df: pd.DataFrame):
    """A condition: a boolean Series (or a bool for a literal-only condition)."""
    if isinstance(node, ast.BoolOp):
        parts = [_mask(p, v, df) for v in node.values]
        combine = operator.and_ if isinstance(node.op, ast.And) else operator.or_
        out = parts[0]
        for part in parts[1:]:
            out = combine(out, part)
        return out
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.Not, ast.Invert)):
        inner = _mask(p, node.operand, df)
        return ~inner if isinstance(inner, pd.Series) else not inner
    if isinstance(node, ast.Compare):
        return _compare(p, node, df)
    if isinstance(node, ast.Name):
        col = _column(p, node, df)
        if not pd.api.types.is_bool_dtype(col.dtype):
            raise p.fail(f"column {p.column(node)!r} ({col.dtype}) is not a true/false column; compare it, "
                         f"e.g. {p.show(node)} == 'value'.")
        return col.fillna(False).astype(bool)
    if isinstance(node, ast.Constant) and isinstance(node.value, bool):
        return node.value
    raise p.fail(f"{p.show(node)!r} is not a condition (true/false per row); use a comparison, {EXAMPLE}.")


def _column(p: _Parsed, node: ast.Name, df: pd.DataFrame) -> pd.Series:
    name = p.column(node)
    if name in df.columns:
        col = df[name]
    else:
        by_text = [c for c in df.columns if str(c) == name]
        if not by_text:
            close = difflib.get_close_matches(name, [str(c) for c in df.columns], n=3)
            hint = f"did you mean {close}? " if close else ""
            meta = [str(c) for c in df.columns if str(c).startswith("Metadata_")][:15]
            raise p.fail(f"no column {name!r} in the table; {hint}metadata columns: {meta}. Quote text values "
                         f"(\"Metadata_Condition == 'Mock'\") and put odd column names in `backticks`.")
        col = df[by_text[0]]
    if isinstance(col, pd.DataFrame):
        raise p.fail(f"the table has {col.shape[1]} columns named {name!r}; make the names unique.")
    return col


def _value(p: _Parsed, node: ast.AST, df: pd.DataFrame):
    """An operand of a comparison: a Series, a scalar or a list of scalars."""
    if isinstance(node, ast.Name):
        return _column(p, node, df)
    if isinstance(node, ast.Constant):
        return node.value
    if isinstance(node, ast.UnaryOp) and isinstance(node.op, (ast.USub, ast.UAdd)):
        v = node.operand.value  # _check allowed a signed number only
        return -v if isinstance(node.op, ast.USub) else v
    if isinstance(node, (ast.List, ast.Tuple)):
        return [_value(p, e, df) for e in node.elts]
    return _mask(p, node, df)


def _compare(p: _Parsed, node: ast.Compare, df: pd.DataFrame):
    left = _value(p, node.left, df)
    out = None
    for op, right_node in zip(node.ops, node.comparators):
        right = _value(p, right_node, df)
        part = _one(p, node, op, left, right)
        out = part if out is None else out & part
        left = right
    return out


def _one(p: _Parsed, node: ast.Compare, op: ast.cmpop, left, right):
    if isinstance(op, (ast.In, ast.NotIn)):
        if isinstance(left, pd.Series) and isinstance(right, (list, pd.Series)):
            hit = left.isin(list(right))
        elif isinstance(left, list) and isinstance(right, pd.Series):
            hit = right.isin(left)
        elif isinstance(left, str) and isinstance(right, pd.Series):  # 'text' in column: substring
            text = right.astype("string")
            hit = text.str.contains(left, regex=False).fillna(False).astype(bool)
        elif not isinstance(left, pd.Series) and isinstance(right, list):
            hit = left in right
        else:
            raise p.fail(f"'in' needs a column and a list, e.g. Metadata_Role in ['positive', 'negative'] "
                         f"(in {p.show(node)!r}); for one value use ==.")
        return ~hit if isinstance(op, ast.NotIn) else hit
    if isinstance(left, list) or isinstance(right, list):
        raise p.fail(f"a list can only follow 'in' / 'not in' (in {p.show(node)!r}).")
    fn = _CMP[type(op)]
    if right is None or left is None:
        other = left if right is None else right
        if isinstance(op, (ast.Eq, ast.NotEq)) and isinstance(other, pd.Series):
            return other.isna() if isinstance(op, ast.Eq) else other.notna()
        if isinstance(op, (ast.Eq, ast.NotEq)):
            return fn(left, right)
        raise p.fail(f"None (missing) cannot be ordered with <, >; in {p.show(node)!r} use == None or != None.")
    try:
        result = fn(left, right)
    except TypeError as exc:
        raise p.fail(f"cannot compare {_kind(left)} with {_kind(right)} in {p.show(node)!r} ({exc}); quote "
                     "text values and leave numbers unquoted.") from None
    return result


def _kind(v) -> str:
    if isinstance(v, pd.Series):
        return f"column {v.name!r} ({v.dtype})"
    return f"{type(v).__name__} {v!r}"


def quote_column(name: str) -> str:
    """``name`` as a selection-language column reference (backticked unless a plain identifier).

    Raises
    ------
    ConfigError
        The name contains a backtick (no way to reference it; rename the column).
    """
    if re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name) and name not in ("and", "or", "not", "in", "True",
                                                                       "False", "None"):
        return name
    if "`" in name:
        raise ConfigError(f"column {name!r} contains a backtick and cannot be used in a selection; rename it.")
    return f"`{name}`"
