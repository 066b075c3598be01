"""The build context of the preprocessor: what one kernel build defines before a file's first line.

A :class:`PreprocContext` is the kernel's ``.config``, its version, whether the file is a part of
a module, the compiler's target and extra macros; :func:`env` compiles it into the macros it
defines and the names it knows are not defined, as the compiler sees them:

* the ``.config`` as ``include/generated/autoconf.h`` has it (``CONFIG_X=y`` is ``#define CONFIG_X 1``,
  ``=m`` is ``#define CONFIG_X_MODULE 1``, an option not set is not defined), and kconfig.h's
  ``__LITTLE_ENDIAN``/``__BIG_ENDIAN`` from ``CONFIG_CPU_BIG_ENDIAN`` (6.1 include/linux/kconfig.h);
* ``MODULE`` for the parts of a module (6.1 scripts/Makefile.lib ``modkern_cflags``; the top
  Makefile's ``KBUILD_CFLAGS_MODULE := -DMODULE``);
* ``LINUX_VERSION_CODE``, ``KERNEL_VERSION(a,b,c)`` and ``LINUX_VERSION_MAJOR``/``PATCHLEVEL``/
  ``SUBLEVEL`` as the top Makefile writes ``include/generated/uapi/linux/version.h``
  (``filechk_version.h``; the sublevel clamped at 255);
* ``__KERNEL__`` (``-D__KERNEL__`` in the top Makefile), the compiler's predefined macros of the
  target (:data:`ARCH_PREDEFINES`, :data:`ARCH_HEADER_MACROS`), the other targets' macros and
  :data:`KNOWN_UNDEFINED` not defined.

:func:`context_for_build` makes the context of a build (its target read from the ``.config``),
:func:`tree_version` reads a tree's version from its top ``Makefile``, and
:func:`command_line_defines` the ``-D`` flags an out-of-tree tree was built with (Kbuild's
``.<object>.o.cmd`` files).
"""

from __future__ import annotations

import hashlib
import re
from typing import Mapping, NamedTuple

from .ppexpr import UNDEF as _UNDEF, UNKNOWN as _UNKNOWN, Macro as _Macro, parse_define as _parse_define

__all__ = [
    "PreprocContext",
    "ARCH_PREDEFINES",
    "ARCH_HEADER_MACROS",
    "KNOWN_UNDEFINED",
    "version_code",
    "tree_version",
    "context_for_build",
    "command_line_defines",
    "Env",
    "env",
]

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
    undefined: tuple[str, ...] = ()
    """Names known not to be defined in this build (only other architectures define them:
    :func:`ksymgraph.loaders.preproc.macros_only_elsewhere`), unless the file defines them."""

    def digest(self) -> str:
        """A hash of everything here, for a cache key: a file's result depends on its bytes and this."""
        h = hashlib.sha1(b"preproc-context-1\0")
        for k in sorted(self.config):
            h.update(f"{k}={self.config[k]}\n".encode())
        h.update(repr((self.version, self.module, self.arch, self.defines)).encode())
        if self.undefined:
            h.update(repr(self.undefined).encode())
        return h.hexdigest()


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
# The context compiled: the macros it defines, the names it knows are not defined

# KERNEL_VERSION as include/generated/uapi/linux/version.h has it (the top Makefile's filechk_version.h).
_KERNEL_VERSION = _Macro(("a", "b", "c"), "(((a) << 16) + ((b) << 8) + ((c) > 255 ? 255 : (c)))")


class Env:
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
        self.undefined |= set(ctx.undefined) - set(macros)

    def lookup(self, name: str):
        m = self.macros.get(name)
        if m is not None:
            return m
        if name in self.undefined or (self.has_config and name.startswith("CONFIG_")):
            return _UNDEF
        return _UNKNOWN


_ENVS: dict[tuple, tuple[Mapping[str, str], Env]] = {}


def env(ctx: PreprocContext) -> Env:
    """The compiled environment of ``ctx``, a few kept per process (a tree has three contexts,
    sharing one ``config`` object: it is known by its identity, kept alive with the entry)."""
    key = (id(ctx.config), ctx.version, ctx.module, ctx.arch, ctx.defines, ctx.undefined)
    cached = _ENVS.get(key)
    if cached is not None and cached[0] is ctx.config:
        return cached[1]
    if len(_ENVS) >= 8:
        _ENVS.clear()
    compiled = Env(ctx)
    _ENVS[key] = (ctx.config, compiled)
    return compiled

# --------------------------------------------------------------------------------------------
# A tree's own defines: its command line

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
