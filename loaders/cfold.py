"""What gcc's constant folding decides about a call: which of its arguments are integer constant
expressions, and under which ``__builtin_constant_p()`` conditions on its function's parameters
a call in an inline function is compiled at all.

The kernel's header inlines choose their callee by whether an argument is a compile-time constant,
and gcc folds the choice in every caller after inlining. include/linux/slab.h (6.1)::

    static __always_inline void *kmalloc(size_t size, gfp_t flags)
    {
            if (__builtin_constant_p(size)) {
                    if (size > KMALLOC_MAX_CACHE_SIZE)
                            return kmalloc_large(size, flags);
                    ...
                    return kmalloc_trace(kmalloc_caches[kmalloc_type(flags)][index], flags, size);
            }
            return __kmalloc(size, flags);
    }

``kmalloc(sizeof(*p), GFP_KERNEL)`` imports ``kmalloc_trace`` and ``kmalloc_caches``, never
``__kmalloc`` or ``kmalloc_large``; ``kmalloc(len, GFP_KERNEL)`` imports only ``__kmalloc``.
``msecs_to_jiffies()``, ``check_object_size()``, ``check_copy_size()`` and ``kmalloc_array()``
do the same. And gcc expands ``memset``/``memcpy`` of a constant size inline (x86-64's
``-mtune=generic`` string-operation tables, gcc/config/i386/x86-tune-costs.h: a known size up to
8 KiB is a ``rep stos``/``rep movs`` or moves, anything else a call).

Two strings per call carry this from the C loader (``Call.args``, ``Call.guard``,
``Reference.guard``) to the graph, where a call keeps both in one property, ``CALLS.fold`` =
``args`` or ``args|guard`` (:func:`split_fold`; LadybugDB spends 16 bytes a row on each string
column of the 4M calls, whatever they hold), and a reference its ``REFERENCES.guard``:

* **args**: one class per argument, comma-separated — ``c`` an integer constant expression
  (a literal, ``sizeof``, an upper-case macro or enumerator, arithmetic of those) taken to be
  small (at most :data:`SMALL_LIMIT`), ``C`` one known to be larger (a literal or ``SZ_64K``), ``-``
  not constant, ``?`` unknown (a local inside a constant-only branch), ``p0.1`` constant exactly
  when the caller's parameters 0 and 1 are. ``""`` when no argument is anything but ``-``.
* **guard**: the conditions on the enclosing function's parameters under which the call is
  compiled, ``;``-separated: ``c0.1`` parameters 0 and 1 are all constant, ``n0.1`` not all of
  them are, ``b0`` parameter 0 is not a small constant (``size > KMALLOC_MAX_CACHE_SIZE`` inside
  ``if (__builtin_constant_p(size))``), ``s0`` it is not a large one (what follows that test when
  it returns), ``x`` never (the dead branch of ``if (sizeof(long) == sizeof(long long))``).
  ``""``: always compiled.

This module is the format, which the C loader writes (so a change here re-reads every tree). The
rules a walk through header inlines applies to it — carrying a *frame*, the class of each parameter
of the function it is in, from call to call — are :mod:`ksymgraph.queries.folding`'s, which every
reader of such a walk uses.
"""

from __future__ import annotations

import re

__all__ = ["SMALL_LIMIT", "UNKNOWN", "NOT_CONSTANT", "join_classes", "literal_value", "split_fold", "UNREAD"]

#: The largest constant taken as small: ``KMALLOC_MAX_CACHE_SIZE`` on x86-64 with SLUB
#: (``1 << (PAGE_SHIFT + 1)``, include/linux/slab.h) and gcc's inline limit for a known-size
#: ``memset``/``memcpy`` under ``-mtune=generic`` (``{8192, rep_prefix_8_byte}``).
SMALL_LIMIT = 8192

UNKNOWN = "?"
NOT_CONSTANT = "-"

_SZ = re.compile(r"SZ_(\d+)([KMG]?)$")
_SCALE = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30}
#: x86-64's page size macros (arch/x86/include/asm/page_types.h), the only macro values read.
_KNOWN_VALUES = {"PAGE_SIZE": 4096, "PAGE_SHIFT": 12}


def literal_value(text: str) -> int | None:
    """The value of an integer literal (``0x1000``, ``4096UL``, ``010``) or of a size macro whose
    name says it (``SZ_64K``, ``PAGE_SIZE``), else None."""
    if text in _KNOWN_VALUES:
        return _KNOWN_VALUES[text]
    m = _SZ.match(text)
    if m:
        return int(m.group(1)) * _SCALE[m.group(2)]
    t = text.rstrip("uUlL")
    try:
        if t[:2] in ("0x", "0X"):
            return int(t, 16)
        if t[:2] in ("0b", "0B"):
            return int(t, 2)
        if len(t) > 1 and t[0] == "0":
            return int(t, 8)
        return int(t)
    except ValueError:
        return None


def join_classes(classes) -> str:
    """The class of an expression made of operands of ``classes`` (``-`` if any is not constant;
    ``pN.M`` when constant exactly when those parameters are; ``?`` if any is unknown)."""
    params: set[str] = set()
    big = unknown = False
    for c in classes:
        if c == NOT_CONSTANT:
            return NOT_CONSTANT
        if c == UNKNOWN:
            unknown = True
        elif c == "C":
            big = True
        elif c[:1] == "p":
            params.update(c[1:].split("."))
    if unknown:
        return UNKNOWN
    if params:
        return "p" + ".".join(sorted(params, key=int))
    return "C" if big else "c"


#: The ``args`` of a ``CALLS.fold`` whose call's arguments were not read but which has a guard (a
#: macro's call under its ``__builtin_constant_p()``: ``*|c0``).
UNREAD = "*"


def split_fold(fold: str | None) -> tuple[str | None, str]:
    """(args, guard) of a ``CALLS.fold`` value (``"c,p0|c0;b0"``; args None: a call whose arguments
    were not read, a macro's: None, or ``*|guard``)."""
    if fold is None:
        return None, ""
    args, _bar, guard = fold.partition("|")
    return (None if args == UNREAD else args), guard
