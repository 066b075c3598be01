"""Kbuild: which source file is built into which module, under a kernel ``.config``.

The kernel's build descends from the top-level ``Kbuild`` file through ``obj-y += dir/`` and
``obj-$(CONFIG_X) += dir/`` into every directory, reads that directory's ``Kbuild`` (or, when there
is none, its ``Makefile``) and collects ``obj-y`` (built into vmlinux) and ``obj-m`` (one ``.ko``
each). An object is either one source file (``foo.o`` from ``foo.c``) or a composite listed by
``foo-y``, ``foo-objs`` or ``foo-$(CONFIG_Y)``. :func:`evaluate_kbuild` re-does that walk with a small
evaluator of the make subset Kbuild files use: ``=``, ``:=``, ``+=``, ``?=``, line continuations,
``ifeq``/``ifneq``/``ifdef``/``ifndef`` blocks, ``include``, and the common text functions
(``$(addprefix)``, ``$(patsubst)``, ``$(filter)``, ``$(if)``, ``$(foreach)``, ``$(wildcard)``...);
``$(shell ...)`` and rules are ignored.

A directory entered only through ``obj-m += dir/`` is not linked into vmlinux, as in Kbuild: its
``obj-y`` objects are dropped (its ``obj-y`` sub-directories are still entered, in the same
mode), its ``obj-m`` objects are modules.
"""

from __future__ import annotations

import glob
import os
import re
from pathlib import Path
from typing import Iterable, Iterator

from .records import BuiltInto

__all__ = [
    "read_config",
    "evaluate_kbuild",
    "evaluate_makefile",
    "kbuild_coverage",
    "module_name",
]


def module_name(ko: str) -> str:
    """The kernel's name of a module given its ``.ko`` path or base name (``-`` becomes ``_``)."""
    base = os.path.basename(ko)
    for suffix in (".xz", ".zst", ".gz"):
        if base.endswith(suffix):
            base = base[: -len(suffix)]
    if base.endswith(".ko"):
        base = base[:-3]
    return base.replace("-", "_")


_CONFIG_RE = re.compile(r"^(CONFIG_\w+)=(.*)$")
_NOT_SET_RE = re.compile(r"^# (CONFIG_\w+) is not set")


def read_config(path: str | os.PathLike) -> dict[str, str]:
    """``{CONFIG_X: value}`` of a ``.config``: ``y``, ``m``, numbers, or strings without quotes.
    Options that are ``not set`` are absent."""
    out = {}
    with open(path, encoding="utf-8", errors="replace") as f:
        for line in f:
            m = _CONFIG_RE.match(line.rstrip("\n"))
            if m:
                value = m.group(2)
                if len(value) >= 2 and value[0] == value[-1] == '"':
                    value = value[1:-1].replace('\\"', '"')
                out[m.group(1)] = value
    return out


# --------------------------------------------------------------------------------------------
# A small make evaluator


class _Makefile:
    """Variables of one directory's Kbuild makefile, evaluated like make would (the subset)."""

    def __init__(self, root: Path, directory: str, base: dict[str, str]):
        self.root = root
        self.dir = directory
        # name -> (value, recursive); recursive values are expanded on use, like make's "=".
        self.vars: dict[str, tuple[str, bool]] = {k: (v, False) for k, v in base.items()}

    # -- expansion
    def value(self, name: str, depth: int = 0) -> str:
        value, recursive = self.vars.get(name, ("", False))
        return self.expand(value, depth + 1) if recursive else value

    def expand(self, text: str, depth: int = 0) -> str:
        if "$" not in text or depth > 30:
            return text
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
                inner = text[i + 2 : j]
                out.append(self._reference(inner, depth))
                i = j + 1
            else:
                out.append(self.value(nxt, depth))
                i += 2
        return "".join(out)

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
            return " ".join(_patsubst_word(old, new, w) for w in words)
        return self.value(self.expand(inner, depth + 1), depth)

    # -- reading
    def read(self, path: Path, seen: set[Path] | None = None) -> None:
        seen = set() if seen is None else seen
        if path in seen:
            return
        seen.add(path)
        try:
            text = path.read_text(encoding="utf-8", errors="replace")
        except OSError:
            return
        lines = _logical_lines(text)
        stack: list[tuple[bool, bool]] = []  # (this branch active, some branch already taken)
        in_define = False
        for line in lines:
            stripped = line.strip()
            if in_define:
                if stripped.startswith("endef"):
                    in_define = False
                continue
            if not stripped:
                continue
            word = stripped.split(None, 1)[0]
            active = all(a for a, _ in stack)
            if word in ("ifeq", "ifneq", "ifdef", "ifndef"):
                cond = self._condition(stripped) if active else False
                stack.append((cond, cond))
                continue
            if word == "else":
                if not stack:
                    continue
                _, taken = stack.pop()
                rest = stripped[4:].strip()
                outer = all(a for a, _ in stack)
                if rest and rest.split(None, 1)[0] in ("ifeq", "ifneq", "ifdef", "ifndef"):
                    cond = (not taken) and outer and self._condition(rest)
                    stack.append((cond, taken or cond))
                else:
                    stack.append((not taken, True))
                continue
            if word == "endif":
                if stack:
                    stack.pop()
                continue
            if not active:
                continue
            if word == "define":
                in_define = True
                continue
            if line.startswith("\t"):
                continue  # a recipe line
            if word in ("include", "-include", "sinclude"):
                for name in self.expand(stripped.split(None, 1)[1] if " " in stripped else "").split():
                    target = Path(name) if os.path.isabs(name) else self.root / name
                    if not target.is_file():
                        target = self.root / self.dir / name
                    if target.is_file():
                        self.read(target.resolve(), seen)
                continue
            self._assignment(stripped)

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
            new = value if recursive else self.expand(value)
            self.vars[name] = ((old + " " + new).strip(), recursive)

    def words(self, name: str) -> list[str]:
        return self.value(name).split()


def _logical_lines(text: str) -> list[str]:
    """Lines with ``\\`` continuations joined and ``#`` comments removed (make's rules)."""
    out = []
    cur = ""
    for raw in text.splitlines():
        if raw.lstrip().startswith("#") and not cur:
            continue
        if raw.endswith("\\"):
            cur += raw[:-1] + " "
            continue
        cur += raw
        out.append(_strip_comment(cur))
        cur = ""
    if cur:
        out.append(_strip_comment(cur))
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


def _f_patsubst(mk, args, depth):
    p, r, text = (mk.expand(a, depth + 1) for a in (args + ["", "", ""])[:3])
    return " ".join(_patsubst_word(p.strip(), r.strip(), w) for w in text.split())


def _f_filter(mk, args, depth, keep=True):
    pats = mk.expand(args[0], depth + 1).split()
    words = mk.expand(",".join(args[1:]), depth + 1).split()
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
    for w in mk.expand(args[1], depth + 1).split():
        mk.vars[var] = (w, False)
        out.append(mk.expand(",".join(args[2:]), depth + 1))
    if saved is None:
        mk.vars.pop(var, None)
    else:
        mk.vars[var] = saved
    return " ".join(out)


def _f_wildcard(mk, args, depth):
    out = []
    for pat in mk.expand(args[0], depth + 1).split():
        full = pat if os.path.isabs(pat) else str(mk.root / pat)
        for hit in sorted(glob.glob(full)):
            out.append(os.path.relpath(hit, mk.root) if not os.path.isabs(pat) else hit)
    return " ".join(out)


_FUNCTIONS = {
    "addprefix": lambda mk, a, d: " ".join(mk.expand(a[0], d + 1).strip() + w for w in mk.expand(",".join(a[1:]), d + 1).split()),
    "addsuffix": lambda mk, a, d: " ".join(w + mk.expand(a[0], d + 1).strip() for w in mk.expand(",".join(a[1:]), d + 1).split()),
    "patsubst": _f_patsubst,
    "subst": lambda mk, a, d: mk.expand(",".join(a[2:]), d + 1).replace(mk.expand(a[0], d + 1), mk.expand(a[1], d + 1)) if len(a) >= 3 else "",
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


def evaluate_makefile(root: str | os.PathLike, directory: str, variables: dict[str, str]) -> dict[str, list[str]]:
    """Evaluate the Kbuild makefile of ``directory`` (``Kbuild`` preferred over ``Makefile``) with
    ``variables`` (the ``.config`` and the arch variables) and return every variable's words."""
    root = Path(root)
    mk = _Makefile(root, directory, _base_variables(variables, directory))
    for name in ("Kbuild", "Makefile"):
        path = root / directory / name
        if path.is_file():
            mk.read(path)
            break
    return {name: mk.words(name) for name in mk.vars}


def _base_variables(variables: dict[str, str], directory: str) -> dict[str, str]:
    base = dict(variables)
    base.update(srctree=".", objtree=".", src=directory, obj=directory)
    return base


# --------------------------------------------------------------------------------------------
# The walk


def _arch_variables(root: Path, config: dict[str, str], arch: str) -> dict[str, str]:
    """``SRCARCH``, ``BITS`` and ``ARCH_CORE``/``ARCH_LIB``/``ARCH_DRIVERS`` from the arch Makefile
    (``core-y``, ``libs-y``, ``drivers-y``), as the top Makefile exports them to ``./Kbuild``."""
    is_64 = config.get("CONFIG_64BIT") == "y"
    variables = dict(config)
    variables.update(SRCARCH=arch, ARCH=arch, BITS="64" if is_64 else "32")
    mk = _Makefile(root, f"arch/{arch}", _base_variables(variables, f"arch/{arch}"))
    mk.vars.update({"core-y": ("", False), "drivers-y": ("", False), "libs-y": ("lib/", False)})
    mk.read(root / "arch" / arch / "Makefile")
    core = mk.words("core-y")
    libs = [w for w in mk.words("libs-y") if w.endswith("/")]
    drivers = mk.words("drivers-y") + mk.words("drivers-m")
    variables.update(ARCH_CORE=" ".join(core), ARCH_LIB=" ".join(libs), ARCH_DRIVERS=" ".join(drivers))
    return variables


def _source_of(root: Path, obj: str) -> str | None:
    stem = obj[:-2]
    for ext in (".c", ".S", ".rs"):
        if (root / (stem + ext)).is_file():
            return stem + ext
    return None


def _components(mk_vars: dict[str, list[str]], name: str, mode: str) -> list[str] | None:
    """Parts of composite object ``name`` (without ``.o``), or None when it is not composite."""
    parts = mk_vars.get(f"{name}-objs", []) + mk_vars.get(f"{name}-y", [])
    if mode == "m":
        parts += mk_vars.get(f"{name}-m", [])
    return parts if parts else None


def evaluate_kbuild(root: str | os.PathLike, config: str | os.PathLike | dict[str, str], arch: str = "x86") -> Iterator[BuiltInto]:
    """Every source file built into vmlinux or a module under ``config`` (a ``.config`` path or
    :func:`read_config`'s dict), walking Kbuild from the tree's top-level ``Kbuild`` file."""
    root = Path(root)
    if not isinstance(config, dict):
        config = read_config(config)
    variables = _arch_variables(root, config, arch)
    top = evaluate_makefile(root, ".", variables)
    dirs = [(d, "y") for d in top.get("obj-y", [])] + [(d, "m") for d in top.get("obj-m", [])]
    if not dirs:  # older kernels list the top directories in the Makefile, not in ./Kbuild
        dirs = [(d, "y") for d in ("init/", "kernel/", "mm/", "fs/", "ipc/", "security/", "crypto/",
                                    "block/", "drivers/", "sound/", "net/", "lib/", "virt/",
                                    f"arch/{arch}/")]
    seen_dirs: set[tuple[str, str]] = set()
    emitted: set[tuple[str, str]] = set()
    todo = [(os.path.normpath(d.rstrip("/")), mode) for d, mode in dirs if d.endswith("/")]
    while todo:
        directory, mode = todo.pop(0)
        if (directory, mode) in seen_dirs or not (root / directory).is_dir():
            continue
        seen_dirs.add((directory, mode))
        mk_vars = evaluate_makefile(root, directory, variables)
        objects = []
        for o in mk_vars.get("obj-y", []) + mk_vars.get("lib-y", []):
            if mode == "y":
                objects.append((o, "y"))
            elif o.endswith("/"):  # Kbuild descends anyway; nothing there reaches vmlinux
                objects.append((o, "m"))
        objects += [(o, "m") for o in mk_vars.get("obj-m", [])]
        for sub in mk_vars.get("subdir-y", []) + mk_vars.get("subdir-m", []):
            objects.append((sub.rstrip("/") + "/", "m"))
        for obj, obj_mode in objects:
            if obj.endswith("/"):
                todo.append((os.path.normpath(os.path.join(directory, obj)), obj_mode))
                continue
            if not obj.endswith(".o"):
                continue
            name = obj[:-2]
            if obj_mode == "m":
                ko = os.path.normpath(os.path.join(directory, name + ".ko"))
                module = module_name(ko)
            else:
                ko, module = None, "vmlinux"
            for src in _expand_object(root, directory, mk_vars, name, obj_mode, 0):
                if (src, module) not in emitted:
                    emitted.add((src, module))
                    yield BuiltInto(src, module, ko)


def _expand_object(root: Path, directory: str, mk_vars, name: str, mode: str, depth: int) -> Iterator[str]:
    parts = _components(mk_vars, name, mode) if depth < 4 else None
    if parts is None:
        src = _source_of(root, os.path.normpath(os.path.join(directory, name + ".o")))
        if src is not None:
            yield src
        return
    for part in parts:
        if part.endswith(".o") and part[:-2] != name:
            yield from _expand_object(root, directory, mk_vars, part[:-2], mode, depth + 1)
        elif part.endswith(".o"):
            src = _source_of(root, os.path.normpath(os.path.join(directory, part)))
            if src is not None:
                yield src


def kbuild_coverage(records: Iterable[BuiltInto], ko_names: Iterable[str]) -> tuple[float, list[str]]:
    """Share of the modules in ``ko_names`` (``.ko`` paths, base names or module names) that
    ``records`` give at least one source file, and the sorted list of those they do not."""
    mapped = {r.module for r in records if r.module != "vmlinux"}
    wanted = sorted({module_name(k) for k in ko_names})
    if not wanted:
        return 0.0, []
    unmapped = [m for m in wanted if m not in mapped]
    return 1 - len(unmapped) / len(wanted), unmapped
