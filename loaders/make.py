"""A small make evaluator: the subset of make that Kbuild files use, bounded for hostile trees.

``=``, ``:=``, ``+=``, ``?=``, line continuations, ``ifeq``/``ifneq``/``ifdef``/``ifndef``
blocks, ``include``, and the common text functions (``$(addprefix)``, ``$(patsubst)``,
``$(filter)``, ``$(if)``, ``$(foreach)``, ``$(wildcard)``...); ``$(shell ...)`` and rules are
ignored. :mod:`ksymgraph.loaders.kbuild` walks a kernel tree with it.

A Makefile of a tree given to ``--source`` can be hostile. The evaluator reads only files inside
the tree (:func:`~ksymgraph.loaders.cfiles.read_source`, at most
:data:`~ksymgraph.loaders.cfiles.MAX_MAKEFILE_BYTES` each): an ``include`` or ``$(wildcard)`` of an
absolute path or of one that leaves the tree is not followed; includes nest at most
:data:`MAX_INCLUDE_DEPTH` deep. Its work is bounded: one expansion may produce at most
:data:`MAX_EXPANSION` characters (``x2 = $(x1)$(x1)`` thirty times over would be a gigabyte) and one
makefile may cost at most :data:`MAX_WORK` characters scanned (nested ``$(foreach)``). A makefile
past a bound keeps the variables it had and is reported in :attr:`Makefile.skipped`.
"""

from __future__ import annotations

import glob
import os
import re

from .cfiles import MAX_MAKEFILE_BYTES, inside_tree, read_source
from .records import LoaderError, Skipped

__all__ = ["MAX_EXPANSION", "MAX_WORK", "MAX_INCLUDE_DEPTH", "Makefile"]

#: The longest text one ``$(...)`` expansion may produce (the kernel's longest are a few kB).
MAX_EXPANSION = 1 << 20

#: The most characters the evaluation of one makefile (with its includes) may scan. The most a
#: makefile of linux-source-6.1 scans is 5.4M (drivers/gpu/drm/nouveau/Kbuild).
MAX_WORK = 64 << 20

#: How deep ``include`` may nest.
MAX_INCLUDE_DEPTH = 16

#: The most names one ``$(wildcard)`` may give.
_MAX_WILDCARD_HITS = 10_000


class _TooCostly(Exception):
    """An evaluation past one of the bounds; the message says which."""


class Makefile:
    """Variables of one directory's Kbuild makefile, evaluated like make would (the subset).

    ``root`` is the tree (with its links resolved, :func:`~ksymgraph.loaders.cfiles.real_root`),
    ``directory`` the makefile's directory relative to it, ``base`` the variables it starts with;
    what is not read or evaluated is added to ``skipped``."""

    def __init__(self, root: str, directory: str, base: dict[str, str], skipped: list[Skipped] | None = None):
        self.root = root
        self.dir = directory
        # name -> (value, recursive); recursive values are expanded on use, like make's "=".
        self.vars: dict[str, tuple[str, bool]] = {k: (v, False) for k, v in base.items()}
        self.skipped: list[Skipped] = [] if skipped is None else skipped
        """Files not read (or not to the end), includes not followed and variables not evaluated,
        with the reason."""
        self.file = directory
        """The makefile read (what a variable that cannot be evaluated is reported against)."""
        self._work = 0

    def _charge(self, n: int) -> None:
        self._work += n
        if self._work > MAX_WORK:
            raise _TooCostly(f"evaluating it would scan more than {MAX_WORK} characters")

    # -- expansion
    def value(self, name: str, depth: int = 0) -> str:
        value, recursive = self.vars.get(name, ("", False))
        return self.expand(value, depth + 1) if recursive else value

    def expand(self, text: str, depth: int = 0) -> str:
        if "$" not in text or depth > 30:
            return text
        self._charge(len(text))
        out = []
        i = 0
        n = len(text)
        while i < n:
            c = text[i]
            if c != "$":
                out.append(c)
                i += 1
                continue
            if i + 1 >= n:
                break
            nxt = text[i + 1]
            if nxt == "$":
                out.append("$")
                i += 2
            elif nxt in "({":
                close = ")" if nxt == "(" else "}"
                j = self._matching(text, i + 1, nxt, close)
                self._charge(j - i)
                inner = text[i + 2 : j]
                out.append(self._reference(inner, depth))
                i = j + 1
            else:
                out.append(self.value(nxt, depth))
                i += 2
        result = "".join(out)
        if len(result) > MAX_EXPANSION:
            raise _TooCostly(f"an expansion grows past {MAX_EXPANSION} characters")
        return result

    @staticmethod
    def _matching(text: str, start: int, open_: str, close: str) -> int:
        depth = 0
        for j in range(start, len(text)):
            if text[j] == open_:
                depth += 1
            elif text[j] == close:
                depth -= 1
                if depth == 0:
                    return j
        return len(text) - 1

    def _split_args(self, text: str) -> list[str]:
        self._charge(len(text))
        args, depth, cur = [], 0, []
        for c in text:
            if c in "({":
                depth += 1
            elif c in ")}":
                depth -= 1
            if c == "," and depth == 0:
                args.append("".join(cur))
                cur = []
            else:
                cur.append(c)
        args.append("".join(cur))
        return args

    def _reference(self, inner: str, depth: int) -> str:
        m = re.match(r"([a-z-]+)\s+(.*)\Z", inner, re.S)
        if m and m.group(1) in _FUNCTIONS:
            return _FUNCTIONS[m.group(1)](self, self._split_args(m.group(2)), depth)
        if ":" in inner and "=" in inner:  # $(var:.o=.c) substitution reference
            var, _, pattern = inner.partition(":")
            old, _, new = pattern.partition("=")
            words = self.expand(f"$({var})", depth + 1).split()
            old, new = self.expand(old, depth + 1), self.expand(new, depth + 1)
            if "%" not in old:
                old, new = "%" + old, "%" + new
            return _join(_patsubst_word(old, new, w) for w in words)
        return self.value(self.expand(inner, depth + 1), depth)

    # -- reading
    def read(self, rel: str) -> None:
        """Evaluate the makefile ``rel`` (relative to the root) into :attr:`vars`. A makefile
        past a bound stops there, with what it set so far, and is added to :attr:`skipped`."""
        self.file = rel
        try:
            self._read(rel, set(), 0)
        except _TooCostly as e:
            self.skipped.append(Skipped(rel, f"not evaluated to the end: {e}"))

    def _read(self, rel: str, seen: set[str], depth: int) -> None:
        if rel in seen:
            return
        seen.add(rel)
        try:
            text = read_source(self.root, rel, MAX_MAKEFILE_BYTES)[0].decode("utf-8", "replace")
        except LoaderError as e:
            self.skipped.append(Skipped(rel, e.reason))
            return
        stack: list[tuple[bool, bool]] = []  # (this branch active, some branch already taken)
        in_define = False
        for line in _logical_lines(text):
            stripped = line.strip()
            if in_define:
                if stripped.startswith("endef"):
                    in_define = False
                continue
            if not stripped:
                continue
            word = stripped.split(None, 1)[0]
            if word in ("ifeq", "ifneq", "ifdef", "ifndef", "else", "endif"):
                self._conditional(word, stripped, stack)
                continue
            if not all(a for a, _ in stack):
                continue
            if word == "define":
                in_define = True
            elif line.startswith("\t"):
                continue  # a recipe line
            elif word in ("include", "-include", "sinclude"):
                self._include(rel, stripped, seen, depth)
            else:
                self._assignment(stripped)

    def _conditional(self, word: str, stripped: str, stack: list[tuple[bool, bool]]) -> None:
        """``ifeq``/``ifneq``/``ifdef``/``ifndef``, ``else`` (and ``else ifeq ...``), ``endif``."""
        if word == "endif":
            if stack:
                stack.pop()
            return
        if word != "else":
            cond = self._condition(stripped) if all(a for a, _ in stack) else False
            stack.append((cond, cond))
            return
        if not stack:
            return
        _, taken = stack.pop()
        rest = stripped[4:].strip()
        outer = all(a for a, _ in stack)
        if rest and rest.split(None, 1)[0] in ("ifeq", "ifneq", "ifdef", "ifndef"):
            cond = (not taken) and outer and self._condition(rest)
            stack.append((cond, taken or cond))
        else:
            stack.append((not taken, True))

    def _include(self, rel: str, stripped: str, seen: set[str], depth: int) -> None:
        """Read each file an ``include`` names: relative to the root, else to this directory;
        never one outside the tree, nor deeper than :data:`MAX_INCLUDE_DEPTH`."""
        for name in self.expand(stripped.split(None, 1)[1] if " " in stripped else "").split():
            candidates = [os.path.normpath(name), os.path.normpath(os.path.join(self.dir, name))]
            if os.path.isabs(name) or not any(inside_tree(c) for c in candidates):
                self.skipped.append(Skipped(rel, f"include {name} not followed: outside the tree"))
                continue
            target = next((c for c in candidates if inside_tree(c) and os.path.isfile(os.path.join(self.root, c))), None)
            if target is None:
                continue
            if depth >= MAX_INCLUDE_DEPTH:
                self.skipped.append(Skipped(rel, f"include {name} not followed: includes nest deeper than "
                                                 f"{MAX_INCLUDE_DEPTH}"))
                continue
            self._read(target, seen, depth + 1)

    def _condition(self, line: str) -> bool:
        word, _, rest = line.partition(" ")
        rest = rest.strip()
        if word in ("ifdef", "ifndef"):
            defined = bool(self.value(self.expand(rest)).strip())
            return defined if word == "ifdef" else not defined
        if rest.startswith("("):
            j = self._matching(rest, 0, "(", ")")
            args = self._split_args(rest[1:j])
            if len(args) != 2:
                return False
            a, b = args
        else:
            parts = re.findall(r"\"[^\"]*\"|'[^']*'", rest)
            if len(parts) != 2:
                return False
            a, b = parts[0][1:-1], parts[1][1:-1]
        equal = self.expand(a).strip() == self.expand(b).strip()
        return equal if word == "ifeq" else not equal

    _OPERATOR_RE = re.compile(r"::=|:=|\+=|\?=|=")

    def _assignment(self, line: str) -> None:
        m = self._OPERATOR_RE.search(line)
        if not m:
            return
        target = line[: m.start()].strip()
        for prefix in ("export ", "override "):
            if target.startswith(prefix):
                target = target[len(prefix) :].strip()
        if ":" in re.sub(r"\$\([^)]*\)", "", target):
            return  # a rule or a target-specific variable
        name = self.expand(target).strip()
        if not name or " " in name:
            return
        op, value = m.group(), line[m.end() :].strip()
        if op in (":=", "::="):
            self.vars[name] = (self.expand(value), False)
        elif op == "=":
            self.vars[name] = (value, True)
        elif op == "?=":
            if name not in self.vars:
                self.vars[name] = (value, True)
        else:  # +=
            old, recursive = self.vars.get(name, ("", True))
            self._charge(len(old))
            new = value if recursive else self.expand(value)
            self.vars[name] = ((old + " " + new).strip(), recursive)

    def words(self, name: str) -> list[str]:
        """The words of variable ``name``, expanded; none (and a skip) when the expansion passes
        a bound."""
        try:
            return self.value(name).split()
        except _TooCostly as e:
            self.skipped.append(Skipped(self.file, f"{name} not evaluated: {e}"))
            return []


def _logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined and ``#`` comments removed (make's rules)."""
    out = []
    cur: list[str] = []
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        if raw.endswith("\\"):
            cur.append(raw[:-1] + " ")
            continue
        cur.append(raw)
        out.append(_strip_comment("".join(cur)))
        cur = []
    if cur:
        out.append(_strip_comment("".join(cur)))
    return out


def _strip_comment(line: str) -> str:
    i = line.find("#")
    while i >= 0:
        if i == 0 or line[i - 1] != "\\":
            return line[:i].rstrip()
        i = line.find("#", i + 1)
    return line


def _patsubst_word(pattern: str, replacement: str, word: str) -> str:
    if "%" not in pattern:
        return replacement if word == pattern else word
    pre, _, post = pattern.partition("%")
    if word.startswith(pre) and word.endswith(post) and len(word) >= len(pre) + len(post):
        stem = word[len(pre) : len(word) - len(post)]
        return replacement.replace("%", stem, 1) if "%" in replacement else replacement
    return word


def _match(pattern: str, word: str) -> bool:
    if "%" not in pattern:
        return word == pattern
    pre, _, post = pattern.partition("%")
    return word.startswith(pre) and word.endswith(post) and len(word) >= len(pre) + len(post)


def _join(parts) -> str:
    """``" ".join(parts)``, with :class:`_TooCostly` as soon as it would pass :data:`MAX_EXPANSION`."""
    out, size = [], 0
    for part in parts:
        size += len(part) + 1
        if size > MAX_EXPANSION:
            raise _TooCostly(f"an expansion grows past {MAX_EXPANSION} characters")
        out.append(part)
    return " ".join(out)


def _f_patsubst(mk, args, depth):
    p, r, text = (mk.expand(a, depth + 1) for a in (args + ["", "", ""])[:3])
    return _join(_patsubst_word(p.strip(), r.strip(), w) for w in text.split())


def _f_filter(mk, args, depth, keep=True):
    pats = mk.expand(args[0], depth + 1).split()
    words = mk.expand(",".join(args[1:]), depth + 1).split()
    mk._charge(len(pats) * len(words))
    return " ".join(w for w in words if any(_match(p, w) for p in pats) == keep)


def _f_if(mk, args, depth):
    cond = mk.expand(args[0], depth + 1).strip()
    if cond:
        return mk.expand(args[1], depth + 1) if len(args) > 1 else ""
    return mk.expand(",".join(args[2:]), depth + 1) if len(args) > 2 else ""


def _f_foreach(mk, args, depth):
    if len(args) < 3:
        return ""
    var = mk.expand(args[0], depth + 1).strip()
    saved = mk.vars.get(var)
    out = []
    body = ",".join(args[2:])
    try:
        for w in mk.expand(args[1], depth + 1).split():
            mk._charge(len(body) + 1)
            mk.vars[var] = (w, False)
            out.append(mk.expand(body, depth + 1))
    finally:
        if saved is None:
            mk.vars.pop(var, None)
        else:
            mk.vars[var] = saved
    return _join(out)


def _f_addfix(mk, args, depth, prefix: bool):
    fix = mk.expand(args[0], depth + 1).strip()
    words = mk.expand(",".join(args[1:]), depth + 1).split()
    return _join((fix + w) if prefix else (w + fix) for w in words)


def _f_subst(mk, args, depth):
    if len(args) < 3:
        return ""
    old, new, text = mk.expand(args[0], depth + 1), mk.expand(args[1], depth + 1), mk.expand(",".join(args[2:]), depth + 1)
    if not old:
        return text
    if len(text) + text.count(old) * (len(new) - len(old)) > MAX_EXPANSION:
        raise _TooCostly(f"an expansion grows past {MAX_EXPANSION} characters")
    return text.replace(old, new)


def _f_wildcard(mk, args, depth):
    """The files a pattern names, relative to the root; a pattern outside the tree names none."""
    out = []
    for pat in mk.expand(args[0], depth + 1).split():
        pat = os.path.normpath(pat)
        if not inside_tree(pat):
            mk.skipped.append(Skipped(mk.dir, f"$(wildcard {pat}) not read: outside the tree"))
            continue
        hits = []
        for hit in glob.iglob(os.path.join(glob.escape(mk.root), pat)):
            hits.append(os.path.relpath(hit, mk.root))
            if len(hits) > _MAX_WILDCARD_HITS:
                raise _TooCostly(f"$(wildcard {pat}) names more than {_MAX_WILDCARD_HITS} files")
        out += sorted(hits)
    return " ".join(out)


_FUNCTIONS = {
    "addprefix": lambda mk, a, d: _f_addfix(mk, a, d, prefix=True),
    "addsuffix": lambda mk, a, d: _f_addfix(mk, a, d, prefix=False),
    "patsubst": _f_patsubst,
    "subst": _f_subst,
    "filter": _f_filter,
    "filter-out": lambda mk, a, d: _f_filter(mk, a, d, keep=False),
    "strip": lambda mk, a, d: " ".join(mk.expand(",".join(a), d + 1).split()),
    "sort": lambda mk, a, d: " ".join(sorted(set(mk.expand(",".join(a), d + 1).split()))),
    "if": _f_if,
    "or": lambda mk, a, d: next((v for v in (mk.expand(x, d + 1).strip() for x in a) if v), ""),
    "and": lambda mk, a, d: (lambda vs: vs[-1] if all(vs) else "")([mk.expand(x, d + 1).strip() for x in a]),
    "foreach": _f_foreach,
    "wildcard": _f_wildcard,
    "notdir": lambda mk, a, d: " ".join(os.path.basename(w) for w in mk.expand(",".join(a), d + 1).split()),
    "dir": lambda mk, a, d: " ".join((os.path.dirname(w) or ".") + "/" for w in mk.expand(",".join(a), d + 1).split()),
    "basename": lambda mk, a, d: " ".join(os.path.splitext(w)[0] for w in mk.expand(",".join(a), d + 1).split()),
    "firstword": lambda mk, a, d: next(iter(mk.expand(",".join(a), d + 1).split()), ""),
    "shell": lambda mk, a, d: "",
    "info": lambda mk, a, d: "",
    "warning": lambda mk, a, d: "",
    "error": lambda mk, a, d: "",
    "call": lambda mk, a, d: "",
}
