"""The ``#if`` expression language: tokens, macros, their expansion, and evaluation.

A condition of ``#if``/``#elif`` is read as the C preprocessor reads it (C11 6.10.1): its tokens,
the macros in it expanded (object-like and function-like, variadic ones too; ``defined X`` and
``defined(X)``; kconfig.h's ``IS_ENABLED``/``IS_BUILTIN``/``IS_MODULE``/``IS_REACHABLE``, 6.1
include/linux/kconfig.h, where the name is not otherwise known), and the result evaluated as an
integer expression in the preprocessor's 64-bit arithmetic (``intmax_t``/``uintmax_t``), with
integer suffixes and character constants (``char`` signed on the kernel's targets). A value the
pass does not know is carried through as :data:`UNK`: ``&&``, ``||`` and ``?:`` are decided from
the side that is known where C would be (``0 && unknown`` is 0). A macro that pastes or
stringifies, or an expansion past :data:`MAX_STEPS` tokens or :data:`MAX_DEPTH` nested macros,
raises :class:`Undecidable`; bad input (a condition that does not parse, a macro that recurses)
raises :class:`BadInput`. Used by :mod:`ksymgraph.loaders.preproc`, which decides the conditions.
"""

from __future__ import annotations

import re

__all__ = [
    "EVALUATOR_NAMES",
    "MAX_STEPS",
    "MAX_DEPTH",
    "UNK",
    "UNKNOWN",
    "UNDEF",
    "Macro",
    "Undecidable",
    "BadInput",
    "Expander",
    "Eval",
    "parse_define",
    "tokens",
]

#: Tokens one condition's macro expansion may produce before it is given up (kept).
MAX_STEPS = 20_000
#: Macros nested in one another within one condition before it is given up (kept).
MAX_DEPTH = 64

# --------------------------------------------------------------------------------------------
# Macros

UNKNOWN = object()  # a name whose definition the pass does not know
UNDEF = object()  # a name known not to be defined


class Macro:
    """One macro: parameters (None for an object-like one) and its body, tokenised when first used."""

    __slots__ = ("params", "variadic", "text", "_body")

    def __init__(self, params: tuple[str, ...] | None, text: str, variadic: bool = False):
        self.params = params
        self.variadic = variadic
        self.text = text
        self._body = None

    @property
    def body(self) -> list:
        if self._body is None:
            self._body = tokens(self.text)
        return self._body


_DEFINE_RE = re.compile(r"([A-Za-z_]\w*)(\([^)]*\))?\s*(.*)", re.S)


def parse_define(rest: str) -> tuple[str, Macro] | None:
    """(name, macro) of a ``#define`` line's text after ``define``, or None when it is malformed."""
    m = _DEFINE_RE.match(rest)
    if not m:
        return None
    name, params, body = m.group(1), m.group(2), m.group(3).strip()
    if params is None:
        return name, Macro(None, body)
    names = [p.strip() for p in params[1:-1].split(",")]
    if names == [""]:
        names = []
    variadic = False
    if names and names[-1].endswith("..."):
        variadic = True
        last = names[-1][:-3].strip()
        names[-1] = last or "__VA_ARGS__"
    if not all(re.fullmatch(r"[A-Za-z_]\w*", n) for n in names):
        return None
    return name, Macro(tuple(names), body, variadic)


# --------------------------------------------------------------------------------------------
# Tokens and expressions

_TOKEN_RE = re.compile(r"""
    (?P<ws>\s+)
  | (?P<chr>[LuU]?'(?:[^'\\\n]|\\.)*')
  | (?P<str>[LuU8]*"(?:[^"\\\n]|\\.)*")
  | (?P<num>\.?[0-9](?:[eEpP][+-]|[0-9A-Za-z_.])*)
  | (?P<id>[A-Za-z_]\w*)
  | (?P<op>\#\#|<<|>>|<=|>=|==|!=|&&|\|\||\.\.\.|[-+*/%<>&|^!~?:(),\#])
  | (?P<bad>.)
""", re.X | re.S)


class Undecidable(Exception):
    """The condition cannot be decided; the message says why (None: nothing to report)."""


class BadInput(Exception):
    """The condition is bad input (does not parse, a macro recurses); reported with its line."""


def tokens(text: str) -> list[tuple[str, object]]:
    out = []
    for m in _TOKEN_RE.finditer(text):
        kind = m.lastgroup
        if kind == "ws":
            continue
        out.append((kind, m.group()))
    return out


_MASK = (1 << 64) - 1
_INT_RE = re.compile(r"(0[xX][0-9a-fA-F]+|0[bB][01]+|0[0-7]*|[1-9][0-9]*)([uUlL]*)")


def _number(text: str) -> tuple[int, bool]:
    m = _INT_RE.fullmatch(text)
    if not m or not re.fullmatch(r"(?i)(u?l{0,2}|l{0,2}u?)", m.group(2)) or m.group(2).lower() in ("lul",):
        raise BadInput(f"not an integer constant: {text}")
    digits = m.group(1)
    if digits[:2] in ("0x", "0X"):
        v = int(digits, 16)
    elif digits[:2] in ("0b", "0B"):
        v = int(digits[2:], 2)
    elif digits.startswith("0") and len(digits) > 1:
        v = int(digits, 8)
    else:
        v = int(digits)
    if v > _MASK:
        raise BadInput(f"integer constant too large: {text}")
    unsigned = "u" in m.group(2).lower() or v > (1 << 63) - 1
    return v, unsigned


_ESCAPES = {"n": 10, "t": 9, "r": 13, "a": 7, "b": 8, "f": 12, "v": 11, "\\": 92, "'": 39, '"': 34, "?": 63, "e": 27}


def _char(text: str) -> tuple[int, bool]:
    body = text[text.index("'") + 1 : -1]
    if body.startswith("\\"):
        e = body[1:]
        if e in _ESCAPES:
            v = _ESCAPES[e]
        elif re.fullmatch(r"[0-7]{1,3}", e):
            v = int(e, 8)
        elif re.fullmatch(r"x[0-9a-fA-F]+", e):
            v = int(e[1:], 16)
        else:
            raise BadInput(f"unknown escape in {text}")
    elif len(body) == 1:
        v = ord(body)
    else:
        raise Undecidable(f"multi-character constant {text}")
    v &= 0xFF
    return (v - 256 if v >= 128 else v), False  # char is signed on the kernel's targets (6.1)


def _norm(v: int, unsigned: bool) -> tuple[int, bool]:
    v &= _MASK
    if not unsigned and v >= 1 << 63:
        v -= 1 << 64
    return v, unsigned


UNK = None  # an unknown value in an expression


class Eval:
    """Recursive descent over expanded tokens, with unknown values carried through."""

    def __init__(self, toks: list):
        self.toks = toks
        self.i = 0

    def peek(self):
        return self.toks[self.i] if self.i < len(self.toks) else ("end", "")

    def take(self, value: str) -> bool:
        kind, v = self.peek()
        if kind == "op" and v == value:
            self.i += 1
            return True
        return False

    def parse(self):
        if not self.toks:
            raise BadInput("no expression")
        v = self.ternary()
        if self.i != len(self.toks):
            raise BadInput(f"unexpected {self.toks[self.i][1]!r}")
        return v

    def ternary(self):
        c = self.binary(0)
        if self.take("?"):
            a = self.ternary()
            if not self.take(":"):
                raise BadInput("'?' without ':'")
            b = self.ternary()
            if c is UNK:
                return a if a == b else UNK
            return a if c[0] else b
        return c

    _LEVELS = (("||",), ("&&",), ("|",), ("^",), ("&",), ("==", "!="), ("<", "<=", ">", ">="), ("<<", ">>"),
               ("+", "-"), ("*", "/", "%"))

    def binary(self, level: int):
        if level == len(self._LEVELS):
            return self.unary()
        ops = self._LEVELS[level]
        left = self.binary(level + 1)
        while True:
            kind, v = self.peek()
            if kind != "op" or v not in ops:
                return left
            self.i += 1
            right = self.binary(level + 1)
            left = _binary(v, left, right)

    def unary(self):
        kind, v = self.peek()
        if kind == "op" and v in ("!", "~", "-", "+"):
            self.i += 1
            x = self.unary()
            if x is UNK:
                return UNK
            n, u = x
            if v == "!":
                return (0 if n else 1), False
            if v == "~":
                return _norm(~n, u)
            if v == "-":
                return _norm(-n, u)
            return x
        return self.primary()

    def primary(self):
        kind, v = self.peek()
        self.i += 1
        if kind == "val":
            return v
        if kind == "num":
            return _number(v)
        if kind == "chr":
            return _char(v)
        if kind == "op" and v == "(":
            x = self.ternary()
            if not self.take(")"):
                raise BadInput("missing ')'")
            return x
        if kind == "end":
            raise BadInput("expression ends too early")
        raise BadInput(f"unexpected {v!r}")


def _binary(op: str, a, b):
    if op == "&&":
        if a is not UNK and not a[0] or b is not UNK and not b[0]:
            return 0, False
        return UNK if a is UNK or b is UNK else (1, False)
    if op == "||":
        if a is not UNK and a[0] or b is not UNK and b[0]:
            return 1, False
        return UNK if a is UNK or b is UNK else (0, False)
    if a is UNK or b is UNK:
        return UNK
    (x, ua), (y, ub) = a, b
    if op in ("<<", ">>"):
        if y < 0 or y >= 64:
            raise Undecidable(f"shift by {y}")
        return _norm(x << y if op == "<<" else x >> y, ua)
    unsigned = ua or ub
    if unsigned:
        x &= _MASK
        y &= _MASK
    if op in ("==", "!=", "<", "<=", ">", ">="):
        r = {"==": x == y, "!=": x != y, "<": x < y, "<=": x <= y, ">": x > y, ">=": x >= y}[op]
        return int(r), False
    if op in ("/", "%"):
        if y == 0:
            raise BadInput("division by zero")
        q = abs(x) // abs(y)
        if (x < 0) != (y < 0):
            q = -q
        return _norm(q if op == "/" else x - y * q, unsigned)
    r = {"+": x + y, "-": x - y, "*": x * y, "&": x & y, "|": x | y, "^": x ^ y}[op]
    return _norm(r, unsigned)


_KCONFIG_FUNCS = frozenset(("IS_ENABLED", "IS_BUILTIN", "IS_MODULE", "IS_REACHABLE"))

#: Names a condition's evaluation gives their meaning itself: ``defined`` and kconfig.h's helpers
#: (a header's ``#define IS_ENABLED(option) __or(...)`` must not replace them).
EVALUATOR_NAMES = _KCONFIG_FUNCS | {"defined"}


class Expander:
    """Macro expansion of one condition's tokens, with ``defined`` and kconfig.h's helpers."""

    def __init__(self, lookup, budget: list[int]):
        self.lookup = lookup
        self.steps = 0
        self.budget = budget  # [tokens the file may still expand]

    def charge(self, n: int = 1) -> None:
        self.steps += n
        self.budget[0] -= n
        if self.steps > MAX_STEPS:
            raise Undecidable(f"macro expansion longer than {MAX_STEPS} tokens")
        if self.budget[0] < 0:
            raise Undecidable("the file's expansion budget is spent")

    def args(self, toks: list, i: int) -> tuple[list[list], int]:
        """The arguments of a call whose ``(`` is at ``i``, and the index after its ``)``."""
        depth, cur, out = 0, [], []
        while i < len(toks):
            kind, v = toks[i]
            self.charge()
            if kind == "op" and v == "(":
                depth += 1
                if depth > 1:
                    cur.append(toks[i])
            elif kind == "op" and v == ")":
                depth -= 1
                if depth == 0:
                    out.append(cur)
                    return out, i + 1
                cur.append(toks[i])
            elif kind == "op" and v == "," and depth == 1:
                out.append(cur)
                cur = []
            else:
                cur.append(toks[i])
            i += 1
        raise BadInput("unterminated macro arguments")

    def is_one(self, name: str, hide: frozenset, depth: int):
        """kconfig.h's ``__is_defined(name)``: 1 when ``name`` expands to exactly ``1``."""
        m = self.lookup(name)
        if m is UNKNOWN:
            return UNK
        if m is UNDEF or not isinstance(m, Macro) or m.params is not None:
            return 0, False
        body = self.expand(m.body, hide | {name}, depth + 1)
        if any(v is UNK for k, v in body if k == "val"):
            return UNK
        return (1 if body in ([("num", "1")], [("val", (1, False))]) else 0), False

    def kconfig(self, func: str, args: list[list], hide: frozenset, depth: int):
        if len(args) != 1 or len(args[0]) != 1 or args[0][0][0] != "id":
            raise Undecidable(f"{func}() of something other than one name")
        name = args[0][0][1]
        builtin = self.is_one(name, hide, depth)
        module = self.is_one(name + "_MODULE", hide, depth)
        if func == "IS_BUILTIN":
            return builtin
        if func == "IS_MODULE":
            return module
        if func == "IS_ENABLED":
            return _binary("||", builtin, module)
        return _binary("||", builtin, _binary("&&", module, self.is_one("MODULE", hide, depth)))

    def expand(self, toks: list, hide: frozenset = frozenset(), depth: int = 0) -> list:
        """``toks`` with their macros expanded (the names in ``hide`` are being expanded already)."""
        if depth > MAX_DEPTH:
            raise Undecidable(f"macros nested deeper than {MAX_DEPTH}")
        out: list = []
        i, n = 0, len(toks)
        while i < n:
            kind, v = toks[i]
            self.charge()
            if kind != "id":
                out.append(toks[i])
                i += 1
                continue
            nxt = toks[i + 1] if i + 1 < n else ("end", "")
            if v == "defined":
                value, i = self.defined(toks, i)
                out.append(("val", value))
                continue
            m = self.lookup(v)
            if v in _KCONFIG_FUNCS and m is UNKNOWN and nxt == ("op", "("):
                args, i = self.args(toks, i + 1)
                out.append(("val", self.kconfig(v, args, hide, depth)))
                continue
            if m is UNDEF:
                out.append(("val", (0, False)))
                i += 1
                continue
            if m is UNKNOWN:
                if nxt == ("op", "("):  # an unknown function-like macro: its value is unknown
                    _args, i = self.args(toks, i + 1)
                else:
                    i += 1
                out.append(("val", UNK))
                continue
            if m.params is not None and nxt != ("op", "("):
                # a function-like macro's name alone is not expanded: 0 in #if — also inside its
                # own expansion (vdso/const.h's UL(x) is (_UL(x)), _UL(x) is (_AC(x, UL))): no recursion
                out.append(("val", (0, False)))
                i += 1
                continue
            if v in hide:
                raise BadInput(f"macro {v} recurses")
            if m.params is None:
                out += self.expand(m.body, hide | {v}, depth + 1)
                i += 1
                continue
            args, i = self.args(toks, i + 1)
            out += self.call(v, m, args, hide, depth)
        return out

    def defined(self, toks: list, i: int):
        """The value of ``defined X`` or ``defined(X)`` whose ``defined`` is at ``i``, and the index after it."""
        n = len(toks)
        j = i + 1
        paren = j < n and toks[j] == ("op", "(")
        if paren:
            j += 1
        if j >= n or toks[j][0] != "id":
            raise BadInput("'defined' without a name")
        name = toks[j][1]
        j += 1
        if paren:
            if j >= n or toks[j] != ("op", ")"):
                raise BadInput("'defined(' without ')'")
            j += 1
        m = self.lookup(name)
        return (UNK if m is UNKNOWN else ((0 if m is UNDEF else 1), False)), j

    def call(self, name: str, m: Macro, args: list[list], hide: frozenset, depth: int) -> list:
        """The expansion of the function-like macro ``name`` called with ``args``."""
        if args == [[]] and not m.params:
            args = []
        if m.variadic:
            fixed = len(m.params) - 1
            if len(args) < fixed:
                raise BadInput(f"macro {name} takes {fixed}+ arguments, given {len(args)}")
            rest = []
            for k, a in enumerate(args[fixed:]):
                if k:
                    rest.append(("op", ","))
                rest += a
            args = args[:fixed] + [rest]
        elif len(args) != len(m.params):
            raise BadInput(f"macro {name} takes {len(m.params)} arguments, given {len(args)}")
        body = m.body
        if any(k == "op" and t in ("#", "##") for k, t in body):
            raise Undecidable(f"macro {name} pastes or stringifies")
        index = {p: k for k, p in enumerate(m.params)}
        subst: list = []
        for tok in body:
            if tok[0] == "id" and tok[1] in index:
                subst += self.expand(args[index[tok[1]]], hide, depth + 1)
            else:
                subst.append(tok)
        self.charge(len(subst))
        return self.expand(subst, hide | {name}, depth + 1)


