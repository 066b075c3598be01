"""Neutralising kernel macros: a same-length rewrite of a C file's text before tree-sitter reads it.

Kernel sources are not quite C to a parser that does not run the preprocessor: annotations
(``__init``, ``__user``, ``__printf(1, 2)``, ``__acquires(x)``...), brace-less loop macros
(``list_for_each_entry(pos, head, member) {``) and function-defining macros
(``SYSCALL_DEFINE3(read, ...)``) make tree-sitter lose whole functions.
:func:`neutralise_kernel_macros` rewrites them first, in place and byte for byte (every replaced
character becomes a space, newlines stay), so that lines and byte offsets stay exact.

It is one pass over the text of :data:`ksymgraph.loaders.cparse.TEXT_PASSES`: a pass takes a
file's bytes and returns bytes of the same length with the same newlines. Its work is bounded by
the file's size: the scans around each rewrite (to a closing parenthesis, back to the previous
token) are charged to a budget of :data:`WORK_PER_BYTE` times the file's length, which no file of
the kernel comes near; a file that spends it (hostile text: a million ``__printf(`` that never
close) raises :class:`~ksymgraph.loaders.ctext.TextPassIncomplete` and is parsed as it is.
"""

from __future__ import annotations

import heapq
import re

from .ctext import WORD_BYTES, Spans, TextPassIncomplete, directives, scan_paren

__all__ = [
    "ANNOTATIONS",
    "INLINE_ANNOTATIONS",
    "STATIC_ANNOTATIONS",
    "ANNOTATIONS_WITH_ARGS",
    "FUNCTION_MACROS",
    "WORK_PER_BYTE",
    "MAX_ARGS_BYTES",
    "neutralise_kernel_macros",
]


#: Annotations without arguments, replaced by spaces. Most come from
#: include/linux/compiler_types.h, compiler_attributes.h, init.h, cache.h and linkage.h.
ANNOTATIONS = (
    "__init __exit __initdata __initconst __exitdata __ref __refdata __refconst __meminit "
    "__meminitdata __meminitconst __init_memblock __initdata_memblock __init_or_module __cpuinit "
    "__devinit __devexit __devinitdata __net_init __net_exit __net_initdata __head __nosavedata "
    "__user __kernel __iomem __rcu __percpu __force __nocast __safe __private __bitwise __bitwise__ "
    "__must_check __cold __hot __pure __weak __visible __used __maybe_unused __always_unused "
    "__read_mostly __ro_after_init __lsm_ro_after_init __page_aligned_bss __page_aligned_data "
    "__cacheline_aligned __cacheline_aligned_in_smp ____cacheline_aligned "
    "____cacheline_aligned_in_smp ____cacheline_internodealigned_in_smp __aligned_largest "
    "__packed __noreturn __noclone __naked __flatten __malloc __nonstring __deprecated "
    "__latent_entropy __randomize_layout __no_randomize_layout __designated_init "
    "__attribute_const__ __sched __lockfunc __kprobes __irq_entry __softirq_entry __cpuidle "
    "__no_kcsan __no_sanitize_address __no_sanitize_thread __no_sanitize_undefined "
    "__no_sanitize_coverage __no_sanitize_or_inline __no_kasan_or_inline __no_profile __noscs "
    "__nostackprotector __nocfi __noendbr __noinitretpoline __no_fgcse __gnu_inline __ksym "
    "__bpf_kfunc __exitused __exit_call __weak asmlinkage notrace noinstr noinline "
    "noinline_for_stack __noinline __init_refok __ref_refok __xipram __tracepoint_string"
).split()

#: Annotations written as ``__inline``-like keywords: replaced by ``inline`` and spaces.
INLINE_ANNOTATIONS = ("__always_inline", "__inline_maybe_unused", "__fastpath_inline")

#: XFS and the decompressors spell ``static`` as ``STATIC`` (a ``#define``).
STATIC_ANNOTATIONS = ("STATIC",)

#: Annotations with an argument list (``__printf(1, 2)``): the name and the balanced parentheses
#: become spaces.
ANNOTATIONS_WITH_ARGS = (
    "__attribute__ __attribute __printf __scanf __section __aligned __acquires __releases "
    "__must_hold __cond_lock_annotation __cond_acquires __cond_releases __alloc_size "
    "__realloc_size __assume_aligned __cleanup __free __counted_by __alias __copy "
    "__noinstr_section __zero_call_used_regs __diag_ignore_all __nocfi_section"
).split()

#: Macros that define a function: (regex on the macro name, format of the function's name).
#: ``SYSCALL_DEFINEn(name, ...)`` defines ``sys_name`` (include/linux/syscalls.h; arch wrappers
#: such as ``__x64_sys_name`` are generated around it), ``COMPAT_SYSCALL_DEFINEn`` defines
#: ``compat_sys_name`` (include/linux/compat.h), ``BPF_CALL_n(name, ...)`` defines ``name``
#: (include/linux/filter.h), ``SYSCALL32_DEFINEn`` is ``COMPAT_SYSCALL_DEFINEn`` under CONFIG_COMPAT
#: (include/linux/syscalls.h, since 5.6), x86 ``DEFINE_IDTENTRY*(name)`` (arch/x86/include/asm/idtentry.h,
#: since 5.8) and powerpc ``DEFINE_INTERRUPT_HANDLER*(name)`` (since 5.12) define ``name``.
FUNCTION_MACROS = (
    (r"COMPAT_SYSCALL_DEFINE\d", "compat_sys_{}"),
    (r"SYSCALL32_DEFINE\d", "compat_sys_{}"),
    (r"SYSCALL_DEFINE\d", "sys_{}"),
    (r"BPF_CALL_\d", "{}"),
    (r"DEFINE_IDTENTRY\w*", "{}"),
    (r"DEFINE_INTERRUPT_HANDLER\w*", "{}"),
)

#: The budget of the scans around the rewrites, in bytes read per byte of the file, plus 64 KiB.
#: (The most any file of linux-source-6.1 reads is 1.5 times its length, arch/x86/um/syscalls_32.c.)
WORK_PER_BYTE = 8

#: The longest argument list of an annotation or a macro that is rewritten (``__printf(1, 2)``,
#: ``SYSCALL_DEFINE6(...)``, a loop macro's arguments); the kernel's longest are a few hundred
#: bytes.
MAX_ARGS_BYTES = 16 << 10

_ANNOTATION_KIND = {a.encode(): "blank" for a in ANNOTATIONS}
_ANNOTATION_KIND.update({a.encode(): "inline" for a in INLINE_ANNOTATIONS})
_ANNOTATION_KIND.update({a.encode(): "args" for a in ANNOTATIONS_WITH_ARGS})
_ANNOTATION_KIND.update({a.encode(): "static" for a in STATIC_ANNOTATIONS})
# Candidate words, then a dict look-up (an alternation of 150 words is several times slower in
# ``re``). Each pattern starts with a literal, which ``re`` finds by a fast search, where a
# leading ``\b`` or alternation makes it try every byte; the word boundary before is checked apart.
_ANNOT_RES = [re.compile(re.escape(w) + rb"\w*") for w in (b"__", b"asmlinkage", b"notrace", b"noinstr",
                                                            b"noinline", b"STATIC")]
_FOR_EACH_RE = re.compile(rb"for_each")
_FUNC_MACRO_RE = re.compile(
    rb"^[ \t]*(" + b"|".join(m.encode() for m, _ in FUNCTION_MACROS) + rb")[ \t]*\([ \t]*([A-Za-z_]\w*)",
    re.M,
)
#: The literal start of each :data:`FUNCTION_MACROS` name, to skip files that name none of them.
_FUNC_MACRO_WORDS = tuple(re.match(r"\w+?(?=\\|$)", m).group().encode() for m, _ in FUNCTION_MACROS)
#: A type written as a macro argument: ``container_of(p, struct foo, list)``, ``min_t(unsigned
#: long, a, b)``, ``va_arg(ap, const char *)``. The C grammar has no expression of that shape.
_TYPE = (
    rb"\s*(?:(?:const|volatile)\s+)*"
    rb"(?:(?:struct|union|enum)\s+\w+"
    rb"|(?:(?:unsigned|signed)\s+)?(?:char|short|int|long\s+long(?:\s+int)?|long(?:\s+int)?|bool|_Bool|float|double|void)"
    rb"|unsigned|signed)"
    rb"(?:\s*(?:\*|const\b|volatile\b))*\s*"
)
#: A whole macro argument that is a type: it holds no brackets or commas, so it ends at the
#: first ``,`` or ``)``.
_TYPE_ARG_RE = re.compile(rb"[(,](" + _TYPE + rb")(?=[,)])")
#: Built-ins that take a type and that tree-sitter-c already reads.
_TYPE_TAKERS = {b"sizeof", b"typeof", b"__typeof__", b"__typeof", b"alignof", b"_Alignof", b"__alignof__",
                b"offsetof", b"__builtin_offsetof", b"_Generic", b"__builtin_types_compatible_p"}
#: What may come before a call in an expression (not a declaration's type).
#: (``*`` is not among them: ``struct page *alloc(void)`` is a definition.)
_EXPRESSION_BEFORE = set(b"=(,;{}:?!&|+-/%<>[^~")



_BLANK = bytes.maketrans(bytes(range(256)), b" " * 256)
_IF_RE = re.compile(rb"[ \t]*#[ \t]*(if|ifdef|ifndef|elif|else|endif)\b")
_ELSE_RE = re.compile(rb"else\b")
_PREV_WORD_RE = re.compile(rb"(\w+)\s*$")


def _annotation_words(src: bytes):
    """(start, end) of each word that may be an annotation (``__x``, ``notrace``...), in order
    (merged from one search per literal, never all held at once)."""
    def words(pattern):
        for m in pattern.finditer(src):
            start = m.start()
            if start == 0 or src[start - 1] not in WORD_BYTES:
                yield start, m.end()

    return heapq.merge(*(words(p) for p in _ANNOT_RES))


def _is_word_byte(c: int) -> bool:
    """A byte of a word as the rewrites see it: ASCII letters, digits, ``_``, and the Latin-1
    letters (``chr(c).isalnum()``)."""
    return c == 0x5F or chr(c).isalnum()


class _Rewrite:
    """One run of :func:`neutralise_kernel_macros`: the original text, the copy being rewritten,
    the directive spans, and the budget of the scans around the rewrites."""

    def __init__(self, src: bytes):
        self.src = src
        self.buf = bytearray(src)
        self.in_directive: Spans = directives(src)
        self.work_left = WORK_PER_BYTE * len(src) + (64 << 10)
        #: End of the last range a rewrite blanked (each rewrite starts at 0): a candidate of that
        #: rewrite inside it is gone already.
        self.blanked_until = 0

    def charge(self, nbytes: int) -> None:
        """Count ``nbytes`` read by a scan; :class:`TextPassIncomplete` when the budget is spent."""
        self.work_left -= nbytes
        if self.work_left < 0:
            raise TextPassIncomplete(f"kernel macros not neutralised: rewriting them would read the file more "
                                     f"than {WORK_PER_BYTE} times over")

    def closing_paren(self, open_at: int) -> int:
        end, read = scan_paren(self.src, open_at, MAX_ARGS_BYTES)
        self.charge(read)
        return end

    def blank(self, start: int, end: int) -> None:
        """Turn buf[start:end] into spaces, keeping newlines."""
        self.charge(end - start)
        chunk = bytes(self.buf[start:end])
        self.buf[start:end] = b"\n".join(part.translate(_BLANK) for part in chunk.split(b"\n"))
        self.blanked_until = max(self.blanked_until, end)

    def prev_significant(self, pos: int) -> bytes:
        """The last non-blank byte before ``pos`` (comments skipped), or b'' at the start."""
        src = self.src
        i = pos - 1
        read = 0
        try:
            while i >= 0:
                c = src[i]
                if c in b" \t\r\n\\":
                    i -= 1
                    read += 1
                    continue
                if c == 0x2F and i > 0 and src[i - 1] == 0x2A:  # end of a /* comment */
                    j = src.rfind(b"/*", 0, i - 1)
                    if j < 0:
                        return b"/"
                    read += i - j
                    i = j - 1
                    continue
                line_start = src.rfind(b"\n", 0, i) + 1
                read += 2 * (i - line_start)
                k = src.find(b"//", line_start, i + 1)
                if k >= 0 and src.count(b'"', line_start, k) % 2 == 0:
                    i = k - 1
                    continue
                return src[i : i + 1]
            return b""
        finally:
            self.charge(read)

    def prev_word(self, pos: int) -> bytes:
        m = _PREV_WORD_RE.search(self.src[max(0, pos - 40) : pos])
        return m.group(1) if m else b""

    def open_paren_before(self, pos: int, limit: int = 4000) -> int:
        """Offset of the parenthesis that encloses ``pos``, scanning back at most ``limit`` bytes."""
        src = self.src
        depth = 0
        i = pos - 1
        stop = max(0, pos - limit)
        try:
            while i >= stop:
                c = src[i]
                if c == 0x29 or c == 0x5D or c == 0x7D:  # ) ] }
                    depth += 1
                elif c == 0x28 or c == 0x5B or c == 0x7B:  # ( [ {
                    if depth == 0:
                        return i if c == 0x28 else -1
                    depth -= 1
                elif c == 0x3B:  # ;
                    return -1
                i -= 1
            return -1
        finally:
            self.charge(pos - i)

    def skip_blanks(self, pos: int, blanks: bytes) -> int:
        """The first offset from ``pos`` on that is not one of ``blanks``."""
        src = self.src
        end = pos
        while end < len(src) and src[end] in blanks:
            end += 1
        self.charge(end - pos)
        return end

    def word_around(self, start: int, stop: int) -> tuple[int, int]:
        """The whole identifier that holds src[start:stop]."""
        src = self.src
        first, last = start, stop
        while first > 0 and _is_word_byte(src[first - 1]):
            first -= 1
        while last < len(src) and _is_word_byte(src[last]):
            last += 1
        self.charge(last - first)
        return first, last

    # -- the rewrites

    def annotations(self) -> None:
        """``__init`` -> spaces, ``__always_inline`` -> ``inline``, ``STATIC`` -> ``static``, and
        ``__printf(1, 2)`` with its arguments -> spaces."""
        src, buf = self.src, self.buf
        self.blanked_until = 0
        for start, stop in _annotation_words(src):
            kind = _ANNOTATION_KIND.get(src[start:stop])
            if kind is None or start in self.in_directive:
                continue
            if kind == "blank":
                buf[start:stop] = b" " * (stop - start)
            elif kind == "inline":
                buf[start:stop] = b"inline".ljust(stop - start)
            elif kind == "static":
                buf[start:stop] = b"static"
            elif start >= self.blanked_until:  # (inside an annotation blanked already: gone)
                paren = self.skip_blanks(stop, b" \t\n")
                end = self.closing_paren(paren) if paren < len(src) and src[paren] == 0x28 else -1
                if end > 0:
                    self.blank(start, end)

    def loop_macros(self) -> None:
        """``list_for_each_entry(pos, head, member) {`` -> ``while              (pos, head, member) {``:
        a macro whose name holds ``for_each``, in statement position and followed by a loop body."""
        src, buf = self.src, self.buf
        last_word = -1
        for m in _FOR_EACH_RE.finditer(src):
            if m.start() < last_word:
                continue  # another for_each in the same word
            start, stop = self.word_around(m.start(), m.end())
            last_word = stop
            paren = self.skip_blanks(stop, b" \t")
            if paren >= len(src) or src[paren] != 0x28 or stop - start < 5:
                continue
            if start in self.in_directive:
                continue
            prev = self.prev_significant(start)
            if prev not in (b";", b"{", b"}", b")", b":", b"") and not (
                prev.isalpha() and self.prev_word(start) in (b"else", b"do")
            ):
                continue  # a definition, a declaration or an expression
            end = self.closing_paren(paren)
            if end < 0:
                continue
            rest = src[end : end + 200].lstrip()
            if not rest or rest[:1] in b";,)=+-*/%&|^<>?.[]":
                continue  # used as an expression or a call statement, not a loop head
            buf[start:stop] = b"while".ljust(stop - start)

    def type_args(self) -> None:
        """``container_of(p, struct foo, list)`` -> ``container_of(p, 0         , list)``: a type
        passed to a macro (``min_t``, ``list_entry``, ``va_arg``, ``DEFINE_PER_CPU``...) becomes
        ``0`` when the macro is called in an expression or a statement."""
        src = self.src
        self.blanked_until = 0
        for m in _TYPE_ARG_RE.finditer(src):
            start, end = m.span(1)
            if start in self.in_directive or src[start:end].strip() == b"void":
                continue
            paren = m.start() if src[m.start()] == 0x28 else self.open_paren_before(m.start())
            if paren <= 0:
                continue
            j = paren - 1
            while j >= 0 and src[j] in b" \t":
                j -= 1
            k = j
            while k >= 0 and (chr(src[k]).isalnum() or src[k] == 0x5F):
                k -= 1
            self.charge(paren - k)
            name = src[k + 1 : j + 1]
            if not name or name[:1].isdigit() or name in _TYPE_TAKERS:
                continue  # a cast, a grouping, or a built-in that takes types
            prev = self.prev_significant(k + 1)
            if not (prev == b"" or prev[0] in _EXPRESSION_BEFORE or self.prev_word(k + 1) in (b"return", b"case")):
                continue  # a declaration: int foo(struct bar *, int);
            first = start
            while first < end and src[first] in b" \t\n":
                first += 1
            self.blank(first, end)
            self.buf[first] = 0x30  # "0"

    def else_guards(self) -> None:
        """``#ifdef X`` / ``else if (...) ...`` / ``#endif`` inside an if-else chain: tree-sitter
        cannot continue an ``if`` across a directive, so a group whose code starts with ``else``
        and has no ``#else``/``#elif`` loses its two directive lines (both arms were read anyway)."""
        src = self.src
        stack: list[tuple[int, int, bool]] = []  # (start, end, has an #else/#elif)
        for start, end in self.in_directive:
            m = _IF_RE.match(src, start)
            if m is None:
                continue
            word = m.group(1)
            if word in (b"if", b"ifdef", b"ifndef"):
                stack.append((start, end, False))
            elif word in (b"elif", b"else"):
                if stack:
                    stack[-1] = (stack[-1][0], stack[-1][1], True)
            elif stack:
                if_start, if_end, has_else = stack.pop()
                if not has_else and _ELSE_RE.match(src[if_end : if_end + 200].lstrip()):
                    self.blank(if_start, if_end)
                    self.blank(start, end)

    def function_macros(self) -> None:
        """``SYSCALL_DEFINE3(read, ...)`` -> ``int sys_read()`` and spaces (:data:`FUNCTION_MACROS`),
        when the new text fits on the macro's first line."""
        src = self.src
        # (The pattern is anchored at line starts, which ``re`` tries one by one: look only in files
        # that name one of the macros.)
        if not any(w in src for w in _FUNC_MACRO_WORDS):
            return
        self.blanked_until = 0
        for m in _FUNC_MACRO_RE.finditer(src):
            if m.start(1) in self.in_directive or m.start(1) < self.blanked_until:
                continue
            paren = src.index(b"(", m.end(1))
            end = self.closing_paren(paren)
            if end < 0:
                continue
            macro = m.group(1).decode()
            fmt = next(f for pat, f in FUNCTION_MACROS if re.fullmatch(pat, macro))
            text = f"int {fmt.format(m.group(2).decode())}()".encode()
            line_end = src.find(b"\n", m.start(1), end)
            room = (line_end if line_end >= 0 else end) - m.start(1)
            if len(text) > room:
                continue
            self.blank(m.start(1), end)
            self.buf[m.start(1) : m.start(1) + len(text)] = text


def neutralise_kernel_macros(src: bytes) -> bytes:
    """Rewrite kernel annotations and macros that confuse a C parser; same length, same lines.

    * annotations (``__init``, ``__user``, ``notrace``...) become spaces, annotations with
      arguments (``__printf(1, 2)``, ``__attribute__((x))``, ``__acquires(l)``) too, and
      ``__always_inline`` becomes ``inline``;
    * a brace-less loop macro in statement position (any name containing ``for_each``, e.g.
      ``list_for_each_entry(pos, head, member) {``) becomes ``while`` with the same arguments,
      a comma expression, so that the calls in its arguments stay visible;
    * a type passed as a macro argument in an expression (``container_of(p, struct foo, list)``,
      ``min_t(unsigned long, a, b)``) becomes ``0`` and spaces;
    * ``#ifdef``/``#endif`` around an ``else if`` branch of an if-else chain are blanked;
    * ``SYSCALL_DEFINE3(read, ...)`` and the other :data:`FUNCTION_MACROS` become
      ``int sys_read()`` padded with spaces.

    Preprocessor directives (``#define`` bodies included) are left alone. Each rewrite reads the
    original text and writes into the copy. Raises
    :class:`~ksymgraph.loaders.ctext.TextPassIncomplete` when the scans would read the file more
    than :data:`WORK_PER_BYTE` times over.
    """
    r = _Rewrite(src)
    r.annotations()
    r.loop_macros()
    r.type_args()
    r.else_guards()
    r.function_macros()
    return bytes(r.buf)
