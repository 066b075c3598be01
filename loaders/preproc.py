"""The preprocessor's conditionals decided under one kernel build: dead branches blanked before tree-sitter.

A C file read without a preprocessor shows every branch of every ``#if`` at once: the inlines of a
header for configurations the kernel was not built with, the ``#if LINUX_VERSION_CODE <
KERNEL_VERSION(...)`` branches for older kernels. :func:`preprocess` decides each
``#if/#ifdef/#ifndef/#elif/#else/#endif`` of one file under a :class:`PreprocContext` (the
kernel's ``.config``, its version, whether the file is built into a module, the architecture) in
one pass, and blanks the branches that are not compiled byte for byte (every character a space,
newlines kept), so that lines and byte offsets stay exact: the contract of the passes over a
file's text in :data:`ksymgraph.loaders.cparse.TEXT_PASSES`. The directive lines of a
conditional decided throughout are blanked too, so the parser sees plain C.

What a condition may use, as the compiler would see it:

* the ``.config``: ``CONFIG_X=y`` is ``#define CONFIG_X 1``, ``=m`` is ``#define CONFIG_X_MODULE 1``,
  a number or a string is defined as itself, an option not set is not defined — as
  ``include/generated/autoconf.h`` has it; ``IS_BUILTIN``, ``IS_MODULE``, ``IS_REACHABLE`` and
  ``IS_ENABLED`` as ``include/linux/kconfig.h`` defines them (6.1: ``IS_BUILTIN(option)`` is
  ``__is_defined(option)``, 1 only when the option is defined as ``1``; ``IS_MODULE(option)`` is
  ``__is_defined(option##_MODULE)``; ``IS_REACHABLE(option)`` is ``IS_BUILTIN(option) ||
  (IS_MODULE(option) && __is_defined(MODULE))``; ``IS_ENABLED(option)`` is ``IS_BUILTIN(option) ||
  IS_MODULE(option)``), and kconfig.h's ``__LITTLE_ENDIAN``/``__BIG_ENDIAN`` from
  ``CONFIG_CPU_BIG_ENDIAN``; kconfig.h is included in every compilation unit (``-include`` in
  the top Makefile's ``LINUXINCLUDE``);
* ``MODULE``, defined for the parts of a module and not for built-in code (6.1 scripts/Makefile.lib:
  ``modkern_cflags`` is ``$(KBUILD_CFLAGS_MODULE)`` when ``part-of-module``, the object being in
  ``real-obj-m``; the top Makefile sets ``KBUILD_CFLAGS_MODULE := -DMODULE``);
  unknown (conditions on it kept) for headers and for files built both ways;
* the version: ``LINUX_VERSION_CODE``, ``KERNEL_VERSION(a,b,c)`` and ``LINUX_VERSION_MAJOR``/
  ``PATCHLEVEL``/``SUBLEVEL`` as the top Makefile writes ``include/generated/uapi/linux/version.h``
  (6.1: ``KERNEL_VERSION(a,b,c)`` is ``(((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))``,
  and the code's sublevel is clamped at 255 likewise);
* the architecture: ``__KERNEL__`` (``-D__KERNEL__`` in the top Makefile), the compiler's
  predefined macros of the target (:data:`ARCH_PREDEFINES`; the few its headers define for every
  file, :data:`ARCH_HEADER_MACROS`, such as ``BITS_PER_LONG``; ``__GNUC__``/``__clang__`` from
  ``CONFIG_GCC_VERSION``/``CONFIG_CC_IS_CLANG``), the other architectures' predefined macros,
  ``__ASSEMBLY__`` and ``__CHECKER__`` not defined (:data:`KNOWN_UNDEFINED`);
* the object-like and function-like macros the file itself defines above the condition
  (``#define``/``#undef`` in branches that are compiled; one in a branch kept undecided makes the
  name unknown from there on), and the extra ones a context carries (``defines``: a tree's
  version macros, such as LTTng's ``LTTNG_KERNEL_VERSION``);
* integer expressions with the C operators, integer suffixes and character constants, in the
  preprocessor's 64-bit arithmetic (``intmax_t``/``uintmax_t``); ``defined X``/``defined(X)``;
  an identifier known not to be defined is 0, as in C.

What the pass cannot decide keeps every branch, and is counted: a condition on a macro whose value
it does not know (one defined in a header the file includes), an unknown function-like macro
(``__has_attribute(x)``), a macro that pastes or stringifies. ``&&``, ``||`` and ``?:`` are
decided from the side that is known where C would be (``0 && unknown`` is 0). Bad input — a
condition that does not parse, ``#else`` without ``#if``, an unterminated conditional, a macro that
recurses — is reported with its line, the conditional is kept whole, and the rest of the file is
decided as usual. The work is bounded: the scan is linear in the file, each condition's expansion
is capped at :data:`MAX_STEPS` tokens and :data:`MAX_DEPTH` nested macros, and a file's at
:data:`WORK_PER_BYTE` times its length.
"""

from __future__ import annotations

import hashlib
import re
from typing import Mapping, NamedTuple

__all__ = [
    "PreprocContext",
    "PreprocResult",
    "ARCH_PREDEFINES",
    "ARCH_HEADER_MACROS",
    "KNOWN_UNDEFINED",
    "MAX_STEPS",
    "MAX_DEPTH",
    "WORK_PER_BYTE",
    "MAX_NOTES",
    "preprocess",
    "context_for_build",
    "version_code",
    "tree_version",
    "command_line_defines",
    "version_macros",
]

#: Tokens one condition's macro expansion may produce before it is given up (kept).
MAX_STEPS = 20_000
#: Macros nested in one another within one condition before it is given up (kept).
MAX_DEPTH = 64
#: A file's conditions together may expand this many tokens per byte of the file (plus
#: :data:`MAX_STEPS`); past it the rest of the file's conditions are kept, with a note.
WORK_PER_BYTE = 16
#: Notes kept per file (the rest are counted in one more).
MAX_NOTES = 20

#: Macros the compiler predefines for each target the context may name (``gcc -dM -E -x c
#: /dev/null``, gcc 12 for x86_64): the ones kernel code tests.
ARCH_PREDEFINES: dict[str, dict[str, str]] = {
    "x86_64": {"__x86_64__": "1", "__x86_64": "1", "__amd64__": "1", "__amd64": "1", "__LP64__": "1",
               "_LP64": "1", "__SIZEOF_LONG__": "8", "__SIZEOF_POINTER__": "8", "__SIZEOF_INT__": "4",
               "__SIZEOF_LONG_LONG__": "8", "__SIZEOF_SHORT__": "2", "__CHAR_BIT__": "8",
               "__BYTE_ORDER__": "1234", "__ORDER_LITTLE_ENDIAN__": "1234", "__ORDER_BIG_ENDIAN__": "4321",
               "__ORDER_PDP_ENDIAN__": "3412", "__linux__": "1", "__linux": "1", "__unix__": "1",
               "__gnu_linux__": "1", "__ELF__": "1", "__STDC__": "1", "__OPTIMIZE__": "1"},
    "i386": {"__i386__": "1", "__i386": "1", "__SIZEOF_LONG__": "4", "__SIZEOF_POINTER__": "4",
             "__SIZEOF_INT__": "4", "__CHAR_BIT__": "8", "__BYTE_ORDER__": "1234",
             "__ORDER_LITTLE_ENDIAN__": "1234", "__ORDER_BIG_ENDIAN__": "4321", "__linux__": "1",
             "__ELF__": "1", "__STDC__": "1", "__OPTIMIZE__": "1"},
    "arm64": {"__aarch64__": "1", "__LP64__": "1", "_LP64": "1", "__SIZEOF_LONG__": "8",
              "__SIZEOF_POINTER__": "8", "__SIZEOF_INT__": "4", "__CHAR_BIT__": "8", "__linux__": "1",
              "__ELF__": "1", "__STDC__": "1", "__OPTIMIZE__": "1"},
}

#: Macros the architecture's own headers define unconditionally (under its ``.config``), that the
#: headers every file includes bring in (6.1): ``__LITTLE_ENDIAN_BITFIELD`` from
#: include/uapi/linux/byteorder/little_endian.h (arch/x86/include/uapi/asm/byteorder.h),
#: ``__BITS_PER_LONG`` from arch/x86/include/uapi/asm/bitsperlong.h, ``BITS_PER_LONG`` from
#: include/asm-generic/bitsperlong.h (``CONFIG_64BIT``), ``PAGE_SHIFT``/``PAGE_SIZE`` from
#: arch/x86/include/asm/page_types.h. A file that tests them without those headers would not
#: build: a file that tests ``__LITTLE_ENDIAN_BITFIELD`` and ``__BIG_ENDIAN_BITFIELD`` has an
#: ``#error`` for neither.
ARCH_HEADER_MACROS: dict[str, dict[str, str]] = {
    "x86_64": {"__LITTLE_ENDIAN_BITFIELD": "", "__BITS_PER_LONG": "64", "BITS_PER_LONG": "64", "PAGE_SHIFT": "12",
               "PAGE_SIZE": "4096UL"},
}

#: Architecture macros of the compilers' other targets: not defined when the context's target is
#: known and is not theirs.
_OTHER_ARCH_MACROS = frozenset(
    "__i386__ __i386 __x86_64__ __x86_64 __amd64__ __amd64 __aarch64__ __arm__ __thumb__ __thumb2__ "
    "__powerpc__ __powerpc64__ __PPC__ __PPC64__ __ppc__ __s390__ __s390x__ __mips__ __mips64 __sparc__ "
    "__sparc_v9__ __riscv __ia64__ __alpha__ __hppa__ __m68k__ __sh__ __loongarch__ __loongarch64 "
    "__xtensa__ __nios2__ __microblaze__ __arc__ __csky__ __or1k__ __hexagon__ __ILP32__ __mc68000__ mc68000 "
    "__sparc __sparc64__ __mips __powerpc64 __PPC64 __arm64__ __BIG_ENDIAN_BITFIELD".split())

#: Not defined in a kernel compilation unit of C: ``__ASSEMBLY__`` (only in ``KBUILD_AFLAGS``, for
#: ``.S`` files: the top Makefile, 6.1 line 578), ``__CHECKER__`` (sparse only), ``__GENKSYMS__`` (genksyms
#: only), ``__cplusplus``, ``__OPTIMIZE_SIZE__`` unless ``CONFIG_CC_OPTIMIZE_FOR_SIZE``.
KNOWN_UNDEFINED = frozenset("__ASSEMBLY__ __CHECKER__ __GENKSYMS__ __cplusplus __BPF__ __BPF_TRACING__ "
                            "__DISABLE_EXPORTS __KERNEL_STRICT_NAMES".split())


class PreprocContext(NamedTuple):
    """What decides a kernel file's conditionals: one build of one kernel, seen from one file."""

    config: Mapping[str, str]
    """The ``.config`` (:func:`ksymgraph.loaders.kbuild.read_config`: ``{CONFIG_X: "y" | "m" | value}``);
    an option absent is not set."""
    version: tuple[int, int, int] | None
    """The kernel's version (6, 1, 192); None: conditions on it are kept."""
    module: bool | None
    """``MODULE`` defined (a part of a module), not defined (built-in), or None: not known (a
    header, a file built both ways, a file not built)."""
    arch: str = ""
    """The compiler's target (a key of :data:`ARCH_PREDEFINES`); ``""``: its macros are unknown."""
    defines: tuple[tuple[str, str], ...] = ()
    """Extra macros as (``NAME`` or ``NAME(a, b)``, body), as if defined before the file."""

    def digest(self) -> str:
        """A hash of everything here, for a cache key: a file's result depends on its bytes and this."""
        h = hashlib.sha1(b"preproc-context-1\0")
        for k in sorted(self.config):
            h.update(f"{k}={self.config[k]}\n".encode())
        h.update(repr((self.version, self.module, self.arch, self.defines)).encode())
        return h.hexdigest()


class PreprocResult(NamedTuple):
    """One file after :func:`preprocess`."""

    text: bytes
    """The file with its dead branches (and the directives of conditionals decided throughout)
    blanked: same length, same newlines."""
    decided: int
    """Conditions (``#if``, ``#ifdef``, ``#ifndef``, ``#elif``) evaluated to true or false."""
    kept: int
    """Conditions that could not be decided: every branch they choose between is kept."""
    lines_blanked: int
    """Lines of dead branches blanked."""
    notes: list[tuple[int, str]]
    """(line, message) for bad input and for conditions given up, at most :data:`MAX_NOTES` (and one
    saying how many more)."""


def version_code(version: tuple[int, int, int]) -> int:
    """``LINUX_VERSION_CODE`` of a version, as the top Makefile computes it (sublevel clamped at 255
    since 4.9.256/4.4.256: ``filechk_version.h``)."""
    a, b, c = version
    return (a << 16) + (b << 8) + min(c, 255)


_MAKE_VERSION_RE = re.compile(rb"^(VERSION|PATCHLEVEL|SUBLEVEL)\s*=\s*(\d+)\s*$", re.M)


def tree_version(root) -> tuple[int, int, int] | None:
    """(VERSION, PATCHLEVEL, SUBLEVEL) from the top ``Makefile`` of a kernel tree, or None."""
    import os

    try:
        with open(os.path.join(root, "Makefile"), "rb") as f:
            head = f.read(4096)
    except OSError:
        return None
    found = {m.group(1): int(m.group(2)) for m in _MAKE_VERSION_RE.finditer(head)}
    if {b"VERSION", b"PATCHLEVEL", b"SUBLEVEL"} <= set(found):
        return found[b"VERSION"], found[b"PATCHLEVEL"], found[b"SUBLEVEL"]
    return None


def context_for_build(config: Mapping[str, str], version: tuple[int, int, int] | None,
                      module: bool | None = None, defines: tuple[tuple[str, str], ...] = ()) -> PreprocContext:
    """The context of a kernel build: the target is read from the ``.config`` (``CONFIG_X86_64``,
    ``CONFIG_X86_32``, ``CONFIG_ARM64``)."""
    arch = ""
    if config.get("CONFIG_X86_64") == "y":
        arch = "x86_64"
    elif config.get("CONFIG_X86_32") == "y":
        arch = "i386"
    elif config.get("CONFIG_ARM64") == "y":
        arch = "arm64"
    return PreprocContext(dict(config), version, module, arch, tuple(defines))


# --------------------------------------------------------------------------------------------
# Macros and their environment

_UNKNOWN = object()  # a name whose definition the pass does not know
_UNDEF = object()  # a name known not to be defined


class _Macro:
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
            self._body = _tokens(self.text)
        return self._body


_DEFINE_RE = re.compile(r"([A-Za-z_]\w*)(\([^)]*\))?\s*(.*)", re.S)


def _parse_define(rest: str) -> tuple[str, _Macro] | None:
    """(name, macro) of a ``#define`` line's text after ``define``, or None when it is malformed."""
    m = _DEFINE_RE.match(rest)
    if not m:
        return None
    name, params, body = m.group(1), m.group(2), m.group(3).strip()
    if params is None:
        return name, _Macro(None, body)
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
    return name, _Macro(tuple(names), body, variadic)


# KERNEL_VERSION as include/generated/uapi/linux/version.h has it (the top Makefile's filechk_version.h).
_KERNEL_VERSION = _Macro(("a", "b", "c"), "(((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))")


class _Env:
    """A context compiled for lookups: the macros it defines and the names it knows are not defined."""

    def __init__(self, ctx: PreprocContext):
        macros: dict[str, object] = {}
        for key, value in ctx.config.items():
            if value == "y":
                macros[key] = _Macro(None, "1")
            elif value == "m":
                macros[key + "_MODULE"] = _Macro(None, "1")
            elif re.fullmatch(r"-?(0[xX][0-9a-fA-F]+|\d+)", value):
                macros[key] = _Macro(None, value)
            else:
                macros[key] = _Macro(None, '"' + value.replace("\\", "\\\\").replace('"', '\\"') + '"')
        if ctx.config:
            macros["__KERNEL__"] = _Macro(None, "1")
            macros["__BIG_ENDIAN" if ctx.config.get("CONFIG_CPU_BIG_ENDIAN") == "y" else "__LITTLE_ENDIAN"] = \
                _Macro(None, "4321" if ctx.config.get("CONFIG_CPU_BIG_ENDIAN") == "y" else "1234")
            gcc = ctx.config.get("CONFIG_GCC_VERSION", "0")
            if ctx.config.get("CONFIG_CC_IS_GCC") == "y" and gcc.isdigit() and int(gcc):
                v = int(gcc)
                macros.update(__GNUC__=_Macro(None, str(v // 10000)), __GNUC_MINOR__=_Macro(None, str(v // 100 % 100)),
                              __GNUC_PATCHLEVEL__=_Macro(None, str(v % 100)))
            if ctx.config.get("CONFIG_CC_IS_CLANG") == "y":
                macros["__clang__"] = _Macro(None, "1")
            if ctx.config.get("CONFIG_CC_OPTIMIZE_FOR_SIZE") == "y":
                macros["__OPTIMIZE_SIZE__"] = _Macro(None, "1")
        predefined = dict(ARCH_PREDEFINES.get(ctx.arch, {}))
        predefined.update(ARCH_HEADER_MACROS.get(ctx.arch, {}) if ctx.config else {})
        for key, value in predefined.items():
            macros[key] = _Macro(None, value)
        if ctx.version is not None:
            macros["LINUX_VERSION_CODE"] = _Macro(None, str(version_code(ctx.version)))
            macros["KERNEL_VERSION"] = _KERNEL_VERSION
            for key, value in zip(("LINUX_VERSION_MAJOR", "LINUX_VERSION_PATCHLEVEL", "LINUX_VERSION_SUBLEVEL"),
                                  ctx.version):
                macros[key] = _Macro(None, str(value))
        if ctx.module is True:
            macros["MODULE"] = _Macro(None, "1")
        for head, body in ctx.defines:
            parsed = _parse_define(f"{head} {body}")
            if parsed is not None:
                macros[parsed[0]] = parsed[1]
        self.macros = macros
        self.has_config = bool(ctx.config)
        self.undefined = set(KNOWN_UNDEFINED) if ctx.config else set()
        if ctx.arch:
            self.undefined |= _OTHER_ARCH_MACROS - set(predefined)
        if ctx.config:
            self.undefined |= {"__BIG_ENDIAN", "__LITTLE_ENDIAN", "__GNUC__", "__clang__", "__OPTIMIZE_SIZE__"} - set(macros)
        if ctx.module is False:
            self.undefined.add("MODULE")

    def lookup(self, name: str):
        m = self.macros.get(name)
        if m is not None:
            return m
        if name in self.undefined or (self.has_config and name.startswith("CONFIG_")):
            return _UNDEF
        return _UNKNOWN


_ENVS: dict[tuple, tuple[Mapping[str, str], _Env]] = {}


def _env(ctx: PreprocContext) -> _Env:
    """The compiled environment of ``ctx``, a few kept per process (a tree has three contexts,
    sharing one ``config`` object: it is known by its identity, kept alive with the entry)."""
    key = (id(ctx.config), ctx.version, ctx.module, ctx.arch, ctx.defines)
    cached = _ENVS.get(key)
    if cached is not None and cached[0] is ctx.config:
        return cached[1]
    if len(_ENVS) >= 8:
        _ENVS.clear()
    env = _Env(ctx)
    _ENVS[key] = (ctx.config, env)
    return env


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


class _Undecidable(Exception):
    """The condition cannot be decided; the message says why (None: nothing to report)."""


class _BadInput(Exception):
    """The condition is bad input (does not parse, a macro recurses); reported with its line."""


def _tokens(text: str) -> list[tuple[str, object]]:
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
        raise _BadInput(f"not an integer constant: {text}")
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
        raise _BadInput(f"integer constant too large: {text}")
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
            raise _BadInput(f"unknown escape in {text}")
    elif len(body) == 1:
        v = ord(body)
    else:
        raise _Undecidable(f"multi-character constant {text}")
    v &= 0xFF
    return (v - 256 if v >= 128 else v), False  # char is signed on the kernel's targets (6.1)


def _norm(v: int, unsigned: bool) -> tuple[int, bool]:
    v &= _MASK
    if not unsigned and v >= 1 << 63:
        v -= 1 << 64
    return v, unsigned


UNK = None  # an unknown value in an expression


class _Eval:
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
            raise _BadInput("no expression")
        v = self.ternary()
        if self.i != len(self.toks):
            raise _BadInput(f"unexpected {self.toks[self.i][1]!r}")
        return v

    def ternary(self):
        c = self.binary(0)
        if self.take("?"):
            a = self.ternary()
            if not self.take(":"):
                raise _BadInput("'?' without ':'")
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
                raise _BadInput("missing ')'")
            return x
        if kind == "end":
            raise _BadInput("expression ends too early")
        raise _BadInput(f"unexpected {v!r}")


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
            raise _Undecidable(f"shift by {y}")
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
            raise _BadInput("division by zero")
        q = abs(x) // abs(y)
        if (x < 0) != (y < 0):
            q = -q
        return _norm(q if op == "/" else x - y * q, unsigned)
    r = {"+": x + y, "-": x - y, "*": x * y, "&": x & y, "|": x | y, "^": x ^ y}[op]
    return _norm(r, unsigned)


_KCONFIG_FUNCS = frozenset(("IS_ENABLED", "IS_BUILTIN", "IS_MODULE", "IS_REACHABLE"))


class _Expander:
    """Macro expansion of one condition's tokens, with ``defined`` and kconfig.h's helpers."""

    def __init__(self, lookup, budget: list[int]):
        self.lookup = lookup
        self.steps = 0
        self.budget = budget  # [tokens the file may still expand]

    def charge(self, n: int = 1) -> None:
        self.steps += n
        self.budget[0] -= n
        if self.steps > MAX_STEPS:
            raise _Undecidable(f"macro expansion longer than {MAX_STEPS} tokens")
        if self.budget[0] < 0:
            raise _Undecidable("the file's expansion budget is spent")

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
        raise _BadInput("unterminated macro arguments")

    def is_one(self, name: str, hide: frozenset, depth: int):
        """kconfig.h's ``__is_defined(name)``: 1 when ``name`` expands to exactly ``1``."""
        m = self.lookup(name)
        if m is _UNKNOWN:
            return UNK
        if m is _UNDEF or not isinstance(m, _Macro) or m.params is not None:
            return 0, False
        body = self.expand(m.body, hide | {name}, depth + 1)
        if any(v is UNK for k, v in body if k == "val"):
            return UNK
        return (1 if body in ([("num", "1")], [("val", (1, False))]) else 0), False

    def kconfig(self, func: str, args: list[list], hide: frozenset, depth: int):
        if len(args) != 1 or len(args[0]) != 1 or args[0][0][0] != "id":
            raise _Undecidable(f"{func}() of something other than one name")
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
        if depth > MAX_DEPTH:
            raise _Undecidable(f"macros nested deeper than {MAX_DEPTH}")
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
                j = i + 1
                paren = j < n and toks[j] == ("op", "(")
                if paren:
                    j += 1
                if j >= n or toks[j][0] != "id":
                    raise _BadInput("'defined' without a name")
                name = toks[j][1]
                j += 1
                if paren:
                    if j >= n or toks[j] != ("op", ")"):
                        raise _BadInput("'defined(' without ')'")
                    j += 1
                m = self.lookup(name)
                out.append(("val", UNK if m is _UNKNOWN else ((0 if m is _UNDEF else 1), False)))
                i = j
                continue
            m = self.lookup(v)
            if v in _KCONFIG_FUNCS and m is _UNKNOWN and nxt == ("op", "("):
                args, i = self.args(toks, i + 1)
                out.append(("val", self.kconfig(v, args, hide, depth)))
                continue
            if m is _UNDEF:
                out.append(("val", (0, False)))
                i += 1
                continue
            if m is _UNKNOWN:
                if nxt == ("op", "("):  # an unknown function-like macro: its value is unknown
                    _args, i = self.args(toks, i + 1)
                else:
                    i += 1
                out.append(("val", UNK))
                continue
            if v in hide:
                raise _BadInput(f"macro {v} recurses")
            if m.params is None:
                out += self.expand(m.body, hide | {v}, depth + 1)
                i += 1
                continue
            if nxt != ("op", "("):  # a function-like macro's name alone is not expanded: 0 in #if
                out.append(("val", (0, False)))
                i += 1
                continue
            args, i = self.args(toks, i + 1)
            if args == [[]] and not m.params:
                args = []
            if m.variadic:
                fixed = len(m.params) - 1
                if len(args) < fixed:
                    raise _BadInput(f"macro {v} takes {fixed}+ arguments, given {len(args)}")
                rest = []
                for k, a in enumerate(args[fixed:]):
                    if k:
                        rest.append(("op", ","))
                    rest += a
                args = args[:fixed] + [rest]
            elif len(args) != len(m.params):
                raise _BadInput(f"macro {v} takes {len(m.params)} arguments, given {len(args)}")
            body = m.body
            if any(k == "op" and t in ("#", "##") for k, t in body):
                raise _Undecidable(f"macro {v} pastes or stringifies")
            index = {p: k for k, p in enumerate(m.params)}
            subst: list = []
            for tok in body:
                if tok[0] == "id" and tok[1] in index:
                    subst += self.expand(args[index[tok[1]]], hide, depth + 1)
                else:
                    subst.append(tok)
            self.charge(len(subst))
            out += self.expand(subst, hide | {v}, depth + 1)
        return out


# --------------------------------------------------------------------------------------------
# The scan

_SCAN_RE = re.compile(rb"/\*|//|\"|'|\n[ \t]*#")
_LINE_COMMENT_RE = re.compile(rb"//(?:[^\\\n]|\\(?:\r?\n|.))*", re.S)
_STRING_RE = re.compile(rb"\"(?:[^\"\\\n]|\\(?:\r?\n|.))*\"?", re.S)
_CHAR_RE = re.compile(rb"'(?:[^'\\\n]|\\(?:\r?\n|.))*'?", re.S)
_DIRECTIVE_PART_RE = re.compile(rb"/\*|//|\\\r?\n|\n|\"|'")
_LEAD_RE = re.compile(rb"[ \t]*#")
_NAME_RE = re.compile(r"\s*([A-Za-z_]\w*)?(.*)", re.S)
_BLANK_TABLE = bytes(10 if i == 10 else 32 for i in range(256))


def _directive(src: bytes, at: int) -> tuple[int, str]:
    """(end, text) of the directive whose ``#`` line starts at ``at``: continuation lines and
    comments (which may span lines) belong to it; the text has comments as spaces and
    continuations removed."""
    n = len(src)
    parts = []
    pos = at
    while True:
        m = _DIRECTIVE_PART_RE.search(src, pos)
        if m is None:
            parts.append(src[pos:])
            return n, b"".join(parts).decode("latin-1")
        parts.append(src[pos : m.start()])
        tok = m.group()
        if tok == b"\n":
            return m.start(), b"".join(parts).decode("latin-1")
        if tok == b"/*":
            end = src.find(b"*/", m.end())
            pos = n if end < 0 else end + 2
            parts.append(b" ")
        elif tok == b"//":
            end = _LINE_COMMENT_RE.match(src, m.start()).end()
            parts.append(b" ")
            return end, b"".join(parts).decode("latin-1")
        elif tok in (b'"', b"'"):
            end = (_STRING_RE if tok == b'"' else _CHAR_RE).match(src, m.start()).end()
            parts.append(src[m.start() : end])
            pos = end
        else:  # backslash-newline
            pos = m.end()


def _directives(src: bytes) -> list[tuple[int, int, str]]:
    """(start of line, end, text) of every directive that is not inside a comment or a literal."""
    out = []
    n = len(src)
    first = _LEAD_RE.match(src, 0)
    pos = 0
    if first:
        end, text = _directive(src, first.end() - 1)
        out.append((0, end, text))
        pos = end
    while pos < n:
        m = _SCAN_RE.search(src, pos)
        if m is None:
            break
        tok = m.group()
        if tok == b"/*":
            end = src.find(b"*/", m.end())
            pos = n if end < 0 else end + 2
        elif tok == b"//":
            pos = _LINE_COMMENT_RE.match(src, m.start()).end()
        elif tok == b'"':
            pos = _STRING_RE.match(src, m.start()).end()
        elif tok == b"'":
            pos = _CHAR_RE.match(src, m.start()).end()
        else:
            start = m.start() + 1
            end, text = _directive(src, m.end() - 1)
            out.append((start, end, text))
            pos = end
    return out


class _Chain:
    """One ``#if`` ... ``#endif`` being read."""

    __slots__ = ("line", "outer_live", "outer_sure", "taken", "maybe", "decided", "live", "sure",
                 "branch_from", "lines", "dead", "seen_else", "broken")

    def __init__(self, line: int, outer_live: bool, outer_sure: bool):
        self.line = line
        self.outer_live = outer_live
        self.outer_sure = outer_sure
        self.taken = False  # a branch so far is known to be the one compiled
        self.maybe = False  # a branch so far was kept undecided
        self.decided = True  # every condition so far was decided
        self.live = False  # the current branch is kept
        self.sure = False  # ... and known to be compiled
        self.branch_from = 0
        self.lines: list[tuple[int, int]] = []  # the chain's directive lines
        self.dead: list[tuple[int, int]] = []  # its dead branches
        self.seen_else = False
        self.broken = False


class _File:
    """The state of one file's pass."""

    def __init__(self, src: bytes, ctx: PreprocContext):
        self.src = src
        self.env = _env(ctx)
        self.local: dict[str, object] = {}
        self.decided = 0
        self.kept = 0
        self.notes: list[tuple[int, str]] = []
        self.more_notes = 0
        self.budget = [WORK_PER_BYTE * len(src) + MAX_STEPS]
        self.exhausted = False  # the budget is spent: the rest of the conditions are kept

    def note(self, line: int, message: str) -> None:
        if len(self.notes) < MAX_NOTES:
            self.notes.append((line, message))
        else:
            self.more_notes += 1

    def lookup(self, name: str):
        m = self.local.get(name)
        if m is not None:
            return m
        return self.env.lookup(name)

    def condition(self, kind: str, rest: str, line: int):
        """The value of a condition: True, False, or None (kept)."""
        try:
            if kind in ("ifdef", "ifndef", "elifdef", "elifndef"):
                toks = _tokens(rest)
                if not toks or toks[0][0] != "id":  # (extra tokens after the name: ignored, as cpp does)
                    raise _BadInput(f"#{kind} needs a name")
                m = self.lookup(toks[0][1])
                if m is _UNKNOWN:
                    return None
                defined = m is not _UNDEF
                return defined if kind in ("ifdef", "elifdef") else not defined
            toks = _tokens(rest)  # (strings may be arguments of __has_include("x.h"): unknown, not bad)
            expanded = _Expander(self.lookup, self.budget).expand(toks)
            if any(k in ("id", "str", "bad") for k, _ in expanded):
                raise _BadInput("not an integer expression after expansion")
            value = _Eval(expanded).parse()
            return None if value is UNK else bool(value[0])
        except _BadInput as e:
            self.note(line, f"#{kind} {rest.strip()[:80]}: {e}; every branch kept")
            return None
        except _Undecidable:
            if self.budget[0] < 0 and not self.exhausted:
                self.exhausted = True
                self.note(line, f"the file's macro expansion budget ({WORK_PER_BYTE} tokens a byte) is spent: "
                                "this condition and the ones after it kept")
            return None
        except (RecursionError, ValueError, OverflowError) as e:
            self.note(line, f"#{kind} {rest.strip()[:80]}: cannot be evaluated ({e}); every branch kept")
            return None


def preprocess(src: bytes, ctx: PreprocContext) -> PreprocResult:
    """Decide ``src``'s conditionals under ``ctx`` and blank what is not compiled (see the module's
    docstring); never raises for bad input, which is in ``notes``."""
    return _preprocess(src, ctx)[0]


def _preprocess(src: bytes, ctx: PreprocContext) -> tuple[PreprocResult, _File]:
    f = _File(src, ctx)
    directives = _directives(src)
    line_at = _LineIndex(src)
    guard = _include_guard(directives)
    if guard is not None:
        f.local[guard] = _UNDEF
    stack: list[_Chain] = []
    live, sure = True, True  # the region being read is kept / known to be compiled
    blank: list[tuple[int, int]] = []
    for start, end, text in directives:
        m = _NAME_RE.match(text, text.index("#") + 1)
        kind, rest = m.group(1) or "", m.group(2)
        if kind in ("if", "ifdef", "ifndef"):
            c = _Chain(line_at(start), live, sure)
            c.lines.append((start, end))
            c.branch_from = end
            stack.append(c)
            if live:
                value = None if f.exhausted else f.condition(kind, rest, c.line)
                _enter(f, c, value)
            live, sure = c.live, c.sure
        elif kind in ("elif", "else", "elifdef", "elifndef"):
            if not stack:
                f.note(line_at(start), f"#{kind} without #if: ignored")
                continue
            c = stack[-1]
            if c.seen_else:
                f.note(line_at(start), f"#{kind} after #else (the #if at line {c.line}): every branch kept")
                c.broken = True
            c.lines.append((start, end))
            if c.outer_live and not c.live:
                c.dead.append((c.branch_from, start))
            c.branch_from = end
            if kind == "else":
                c.seen_else = True
            if not c.outer_live or c.taken:
                c.live = c.sure = False
            elif kind == "else":
                _enter(f, c, True, counted=False)
            else:
                value = None if f.exhausted else f.condition(kind, rest, line_at(start))
                _enter(f, c, value)
            live, sure = c.live, c.sure
        elif kind == "endif":
            if not stack:
                f.note(line_at(start), "#endif without #if: ignored")
                continue
            c = stack.pop()
            c.lines.append((start, end))
            if c.outer_live and not c.live:
                c.dead.append((c.branch_from, start))
            if c.outer_live and not c.broken:
                blank += c.dead
                if c.decided:
                    blank += c.lines
            live, sure = c.outer_live, c.outer_sure
        elif live and kind in ("define", "undef"):
            _define(f, kind, rest, sure)
    for c in stack:
        f.note(c.line, "#if without #endif: every branch kept")
    text = src
    lines_blanked = 0
    if blank:
        buf = bytearray(src)
        for a, b in blank:
            if b > a:
                chunk = src[a:b]
                lines_blanked += max(chunk.count(b"\n") - 1, 0)  # (it starts at the end of a directive line)
                buf[a:b] = chunk.translate(_BLANK_TABLE)
        text = bytes(buf)
    notes = f.notes
    if f.more_notes:
        notes = notes + [(notes[-1][0], f"and {f.more_notes} more preprocessor notes")]
    return PreprocResult(text, f.decided, f.kept, lines_blanked, notes), f


def _enter(f: _File, c: _Chain, value: bool | None, counted: bool = True) -> None:
    """Start a branch of ``c`` whose condition is ``value`` (the chain's region is kept, and no
    branch before is known to be taken)."""
    if counted:
        if value is None:
            f.kept += 1
        else:
            f.decided += 1
    if value is None:
        c.maybe = True
        c.decided = False
        c.live, c.sure = True, False
    elif value:
        c.live, c.sure = True, c.outer_sure and not c.maybe
        c.taken = True
    else:
        c.live = c.sure = False


def _define(f: _File, kind: str, rest: str, sure: bool) -> None:
    """A ``#define`` or ``#undef`` in a kept region; one not known to be compiled makes the name unknown."""
    m = re.match(r"\s*([A-Za-z_]\w*)", rest)
    if not m:
        return
    name = m.group(1)
    if not sure:
        f.local[name] = _UNKNOWN
    elif kind == "undef":
        f.local[name] = _UNDEF
    else:
        parsed = _parse_define(rest.strip())
        f.local[name] = _UNKNOWN if parsed is None else parsed[1]


def _include_guard(directives: list[tuple[int, int, str]]) -> str | None:
    """The name of the include guard when the file's first directive is ``#ifndef X``, its second
    ``#define X`` and its last ``#endif``: X is not defined when the file's text is first read."""
    if len(directives) < 3:
        return None
    first = re.match(r"\s*#\s*ifndef\s+([A-Za-z_]\w*)\s*$", directives[0][2])
    second = re.match(r"\s*#\s*define\s+([A-Za-z_]\w*)\b", directives[1][2])
    last = re.match(r"\s*#\s*endif\b", directives[-1][2])
    if first and second and last and first.group(1) == second.group(1):
        return first.group(1)
    return None


class _LineIndex:
    """Line numbers of offsets asked for in increasing order, counted incrementally."""

    def __init__(self, src: bytes):
        self.src = src
        self.pos = 0
        self.line = 1

    def __call__(self, offset: int) -> int:
        if offset < self.pos:
            self.pos, self.line = 0, 1
        self.line += self.src.count(b"\n", self.pos, offset)
        self.pos = offset
        return self.line


# --------------------------------------------------------------------------------------------
# A tree's own defines: its command line, its version macros

_CMD_DEFINE_RE = re.compile(rb"(?:^|\s)-D\s*([A-Za-z_]\w*)(?:=(\S*))?")
_MAX_CMD_FILES = 5000


def command_line_defines(root) -> tuple[tuple[str, str], ...]:
    """The ``-D`` flags every object of a built out-of-tree tree was compiled with, from Kbuild's
    ``.<object>.o.cmd`` files (``cmd_<object> := gcc ... -DLTTNG_LINUX_PATCH=192 ...``): those
    with the same value in every one (``KBUILD_*`` and ``MODULE``, which the context knows, left
    out). Values with quotes are left out too (strings: no use in ``#if``). At most
    :data:`_MAX_CMD_FILES` files are read, each up to 1 MiB."""
    import os

    common: dict[str, str] | None = None
    seen = 0
    for directory, dirs, names in os.walk(root):
        dirs[:] = [d for d in dirs if not os.path.islink(os.path.join(directory, d))]
        for name in names:
            if not (name.startswith(".") and name.endswith(".o.cmd")) or name.endswith(".mod.o.cmd"):
                continue
            seen += 1
            if seen > _MAX_CMD_FILES:
                break
            try:
                with open(os.path.join(directory, name), "rb") as f:
                    first = f.readline(1 << 20)
            except OSError:
                continue
            if b":=" not in first or b" -c " not in first:  # (a link: ld -r, no flags)
                continue
            flags = {}
            for m in _CMD_DEFINE_RE.finditer(first):
                value = (m.group(2) or b"1").decode("latin-1")
                if not m.group(1).startswith(b"KBUILD_") and m.group(1) != b"MODULE" and not set("\"'\\") & set(value):
                    flags[m.group(1).decode()] = value
            common = flags if common is None else {k: v for k, v in common.items() if flags.get(k) == v}
    return tuple(sorted((common or {}).items()))


_VERSION_NAMES = ("LINUX_VERSION_CODE", "KERNEL_VERSION")


def version_macros(headers, ctx: PreprocContext) -> tuple[tuple[str, str], ...]:
    """The version macros a tree's headers define, for the context of the files that include
    them: each header (``(name, bytes)`` pairs) decided under ``ctx``, and the macros it defines
    for certain kept when they are constant (their bodies use only numbers, operators, their
    parameters and other such macros) and reach ``LINUX_VERSION_CODE`` or ``KERNEL_VERSION``, or
    one of these (LTTng's ``LTTNG_KERNEL_VERSION(a, b, c)``, ``LTTNG_KERNEL_RANGE(...)``); a name
    two headers define differently is left out. As (``NAME`` or ``NAME(a, b)``, body) pairs for
    :attr:`PreprocContext.defines`."""
    found: dict[str, _Macro | None] = {}
    for _name, src in headers:
        if b"VERSION" not in src:
            continue
        _result, f = _preprocess(src, ctx)
        for name, m in f.local.items():
            if not isinstance(m, _Macro):
                continue
            old = found.get(name, m)
            same = old is m or (old is not None and (old.params, old.variadic, old.text) == (m.params, m.variadic, m.text))
            found[name] = m if same else None
    macros = {k: m for k, m in found.items() if m is not None}
    env = _env(ctx)

    def names(m: _Macro) -> set[str]:
        return {v for k, v in m.body if k == "id" and v not in (m.params or ()) and v != "defined"}

    # constant: the names used are constant macros of the tree, or macros the context defines
    constant = set(macros)
    changed = True
    while changed:
        changed = False
        for k in list(constant):
            m = macros[k]
            if any(t[0] in ("str", "bad") or t == ("op", "#") or t == ("op", "##") for t in m.body) or \
                    not all(n in constant or isinstance(env.lookup(n), _Macro) for n in names(m)):
                constant.discard(k)
                changed = True
    # ... and reaching the version
    version = set()
    changed = True
    while changed:
        changed = False
        for k in constant - version:
            if names(macros[k]) & (version | set(_VERSION_NAMES)):
                version.add(k)
                changed = True
    needed = set(version)
    todo = list(version)
    while todo:
        for n in names(macros[todo.pop()]):
            if n in constant and n not in needed:
                needed.add(n)
                todo.append(n)
    out = []
    for k in sorted(needed):
        m = macros[k]
        params = list(m.params or ())
        if m.variadic:
            params[-1] = "..." if params[-1] == "__VA_ARGS__" else params[-1] + "..."
        head = k if m.params is None else f"{k}({', '.join(params)})"
        out.append((head, m.text))
    return tuple(out)
