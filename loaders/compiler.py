"""The symbols a kernel build makes a module import that no line of its C source names.

A module's ``.ko`` imports what its code calls and reads, and also what the compiler and the
kernel's build flags put there: ``__fentry__`` at the start of every traced function,
``__x86_return_thunk`` in place of every ``ret``, retpoline thunks in place of indirect calls,
``__stack_chk_fail`` behind stack canaries. Header inlines add a few more through inline
assembly or token pasting (``__preempt_count``, ``current_task``, the ``__SCT__`` trampolines of
static calls), which a parse of the C source cannot see either. :data:`COMPILER_INSERTED` lists
them, each with the ``.config`` options that cause it, the flags the kernel's Makefiles turn those
options into (cited from 6.1.192's Makefiles), and what in the source graph tells that a module
has what the compiler turns into it (:data:`TRIGGERS`).

Counts of Debian 6.1.0-57-amd64's (6.1.192) modules that import each symbol are given in the
``why`` texts: docs/issue14-oracle.md has the command that measures them
(``tests/bench/bench_oracle.py``).

:func:`inserted_symbols` selects the entries a ``.config`` turns on; nothing here reads a file
or a database.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

__all__ = ["CompilerInsert", "TRIGGERS", "COMPILER_INSERTED", "RETPOLINE_REGISTERS", "PREEMPT_COUNT_INLINES",
           "inline_triggers", "inserted_symbols"]

#: What in the source graph makes the compiler insert a symbol into a module:
#:
#: ``code``: the module has at least one function of its own (a C function defined in a file
#: built into it): every such function gets the insert (``-mfentry``, ``-mfunction-return``).
#: ``canary``: a function of the module gets a stack canary (``Function.canary``: a local array,
#: a local whose address is taken, alloca), or a header function its code reaches does (the
#: relationship goes from that function too: what is inlined brings its frame along).
#: ``indirect``: likewise for a call through a function pointer (``Function.indirect``: through a
#: struct member, a parameter, a local variable, a variable of the file, an expression).
#: ``inline:NAME``: a function of the module reaches the header inline ``NAME`` (the relationship
#: goes from that inline, so every module reaching it predicts the symbol).
#: ``none``: the compiler decides from sizes and types the graph lacks; listed, never predicted.
TRIGGERS = ("code", "canary", "indirect", "inline:NAME", "none")

#: The registers a retpoline thunk exists for (arch/x86/lib/retpoline.S, GEN(reg) for every
#: general register but %rsp).
RETPOLINE_REGISTERS = ("rax", "rbx", "rcx", "rdx", "rsi", "rdi", "rbp",
                       "r8", "r9", "r10", "r11", "r12", "r13", "r14", "r15")


class CompilerInsert(NamedTuple):
    """One symbol the build inserts, with the options that cause it."""

    symbol: str
    """The symbol's name, as the ``.ko``'s undefined symbols show it."""
    options: tuple[str, ...]
    """The ``.config`` options that must all be ``y`` for the build to insert it."""
    flags: str
    """The compiler flags (or header construct) the options turn into."""
    where: str
    """Where the kernel makes that happen (file:line in 6.1.192)."""
    trigger: str
    """What in the source graph makes it predicted: one of :data:`TRIGGERS`."""
    why: str
    """What the compiler emits and why, in words."""


def _thunk(reg: str) -> CompilerInsert:
    return CompilerInsert(
        f"__x86_indirect_thunk_{reg}", ("CONFIG_RETPOLINE",),
        "-mindirect-branch=thunk-extern -mindirect-branch-register",
        "arch/x86/Makefile:16 (RETPOLINE_CFLAGS), :195 (KBUILD_CFLAGS += $(RETPOLINE_CFLAGS))",
        "indirect" if reg == "rax" else "none",
        f"every indirect call or jump through %{reg} becomes `call __x86_indirect_thunk_{reg}`; which "
        "register holds the target is the register allocator's choice, which the graph cannot know: "
        "%rax, where gcc loads a function pointer it calls at once, is predicted for modules with a "
        "call through a function pointer (a struct member, a parameter or local, an expression) in "
        "a function of theirs or in a header function their code reaches; the other registers are "
        "listed, not predicted")


#: The documented list (x86_64; the options of other architectures are not modelled).
COMPILER_INSERTED: tuple[CompilerInsert, ...] = (
    CompilerInsert(
        "__fentry__", ("CONFIG_FUNCTION_TRACER", "CONFIG_HAVE_FENTRY"), "-pg -mfentry (-mrecord-mcount)",
        "Makefile:948-975 (CC_FLAGS_FTRACE += -mfentry under CONFIG_HAVE_FENTRY; KBUILD_CFLAGS += "
        "$(CC_FLAGS_FTRACE)); CONFIG_DYNAMIC_FTRACE patches the calls to NOPs at load",
        "code",
        "gcc calls __fentry__ first thing in every function not marked notrace; 4,000 of 6.1.0-57's 4,023 modules "
        "import it in 6.1 (the others have no traced function)"),
    CompilerInsert(
        "__x86_return_thunk", ("CONFIG_RETHUNK",), "-mfunction-return=thunk-extern",
        "arch/x86/Makefile:25-27 (RETHUNK_CFLAGS, added to RETPOLINE_CFLAGS)",
        "code",
        "every `ret` becomes `jmp __x86_return_thunk` (retbleed mitigation, 6.1 backport of 0ee9073000e8)"),
    *(_thunk(r) for r in RETPOLINE_REGISTERS),
    CompilerInsert(
        "__stack_chk_fail", ("CONFIG_STACKPROTECTOR", "CONFIG_STACKPROTECTOR_STRONG"), "-fstack-protector-strong",
        "Makefile:867-871 (stackp-flags-$(CONFIG_STACKPROTECTOR_STRONG) := -fstack-protector-strong; "
        "no x86 module's Makefile of 6.1 adds -fno-stack-protector); gcc/cfgexpand.cc "
        "expand_used_vars (SPCT_FLAG_STRONG), stack_protect_decl_phase, stack_protect_classify_type",
        "canary",
        "a function with a stack canary calls __stack_chk_fail when the canary is overwritten; with "
        "-fstack-protector-strong gcc guards a function with a local array (any element type, also "
        "inside a struct or union), a local whose address is taken, alloca, or a call returning "
        "through a return slot, unless it is no_stack_protector; what an inlined callee has counts "
        "for its caller. Predicted for a module with such a function of its own (Function.canary), "
        "or reaching a header function with one; plain -fstack-protector (char arrays of 8 bytes "
        "and more only) is not modelled"),
    CompilerInsert(
        "fortify_panic", ("CONFIG_FORTIFY_SOURCE",), "include/linux/fortify-string.h",
        "include/linux/fortify-string.h:12, :143, :155 (the fortified inlines of string.h)",
        "inline:NAME",
        "the fortified memcpy/strcpy/... inlines call fortify_panic when a size check fails at run "
        "time; the calls are in header inlines the source graph follows (no relationship needed when "
        "it reaches them; listed for completeness)"),
    CompilerInsert(
        "__SCT__might_resched", ("CONFIG_PREEMPT_DYNAMIC", "CONFIG_HAVE_STATIC_CALL"),
        "static_call_mod(might_resched) -> __PASTE(__SCT__, might_resched)",
        "include/linux/kernel.h:101-106; include/linux/static_call_types.h:15-18",
        "inline:might_resched",
        "might_sleep() calls the static call trampoline __SCT__might_resched, a name made by token "
        "pasting the parser cannot see"),
    CompilerInsert(
        "__SCT__cond_resched", ("CONFIG_PREEMPT_DYNAMIC", "CONFIG_HAVE_STATIC_CALL"),
        "static_call_mod(cond_resched) -> __PASTE(__SCT__, cond_resched)",
        "include/linux/sched.h:2087-2094; include/linux/static_call_types.h:15-18",
        "inline:_cond_resched",
        "cond_resched() calls the static call trampoline __SCT__cond_resched (token pasting)"),
    CompilerInsert(
        "__SCT__preempt_schedule", ("CONFIG_PREEMPT_DYNAMIC", "CONFIG_HAVE_STATIC_CALL"),
        'asm volatile ("call " STATIC_CALL_TRAMP_STR(preempt_schedule))',
        "arch/x86/include/asm/preempt.h:120-127",
        "inline:__preempt_schedule",
        "preempt_enable() calls the trampoline from inline assembly, a name made by stringification"),
    CompilerInsert(
        "__SCT__preempt_schedule_notrace", ("CONFIG_PREEMPT_DYNAMIC", "CONFIG_HAVE_STATIC_CALL"),
        'asm volatile ("call " STATIC_CALL_TRAMP_STR(preempt_schedule_notrace))',
        "arch/x86/include/asm/preempt.h:129-134",
        "inline:__preempt_schedule_notrace",
        "preempt_enable_notrace() calls the trampoline from inline assembly"),
    CompilerInsert(
        "__preempt_count", ("CONFIG_X86_64",), "raw_cpu_read_4(__preempt_count) (inline asm, %gs:)",
        "arch/x86/include/asm/preempt.h:10, :25-105",
        "inline:preempt_count",
        "the preempt-count inlines read and write the per-cpu __preempt_count through inline "
        "assembly; predicted from every inline of asm/preempt.h that touches it (see "
        "PREEMPT_COUNT_INLINES)"),
    CompilerInsert(
        "current_task", ("CONFIG_X86_64",), "this_cpu_read_stable(current_task) (inline asm, %gs:)",
        "arch/x86/include/asm/current.h:11-18 (get_current, and `#define current get_current()`)",
        "inline:get_current",
        "`current` is get_current(), which reads the per-cpu current_task through inline assembly"),
    CompilerInsert(
        "memcpy", (), "builtin", "gcc: struct assignment and __builtin_memcpy of unknown size",
        "none",
        "gcc emits calls to memcpy for large struct copies and expands small memcpy calls inline; "
        "which happens depends on sizes the graph does not record: listed, not predicted (a call in "
        "the source still predicts it)"),
    CompilerInsert(
        "memset", (), "builtin; -ftrivial-auto-var-init=zero with CONFIG_INIT_STACK_ALL_ZERO",
        "Makefile:932 (KBUILD_CFLAGS += -ftrivial-auto-var-init=zero)",
        "none",
        "gcc emits memset for large zero-initialised objects (every large local with "
        "INIT_STACK_ALL_ZERO) and expands small memset calls inline: decided by sizes, not predicted"),
    CompilerInsert(
        "memmove", (), "builtin", "gcc: __builtin_memmove", "none",
        "emitted or expanded inline by size, as memcpy; not predicted"),
    CompilerInsert(
        "strlen", (), "builtin", "gcc: __builtin_strlen", "none",
        "a strlen of a constant string is folded at compile time, others are calls; not predicted"),
    CompilerInsert(
        "__ubsan_handle_out_of_bounds", ("CONFIG_UBSAN",), "-fsanitize=bounds (scripts/Makefile.ubsan)",
        "scripts/Makefile.ubsan; lib/Kconfig.ubsan", "code",
        "UBSAN's checks call __ubsan_handle_* handlers (Debian 6.1 is built without UBSAN: none import it)"),
    CompilerInsert(
        "__asan_report_load8_noabort", ("CONFIG_KASAN",), "-fsanitize=kernel-address (scripts/Makefile.kasan)",
        "scripts/Makefile.kasan", "code",
        "KASAN instruments every memory access with __asan_load*/__asan_store*/__asan_report_* calls "
        "(Debian 6.1 is built without KASAN)"),
    CompilerInsert(
        "__sanitizer_cov_trace_pc", ("CONFIG_KCOV",), "-fsanitize-coverage=trace-pc (scripts/Makefile.kcov)",
        "scripts/Makefile.kcov", "code",
        "KCOV calls __sanitizer_cov_trace_pc at every basic block (Debian 6.1 is built without KCOV)"),
    CompilerInsert(
        "__tsan_func_entry", ("CONFIG_KCSAN",), "-fsanitize=thread (scripts/Makefile.kcsan)",
        "scripts/Makefile.kcsan", "code",
        "KCSAN instruments accesses with __tsan_* calls (Debian 6.1 is built without KCSAN)"),
)

#: The inlines of arch/x86/include/asm/preempt.h (6.1.192) that read or write ``__preempt_count``.
PREEMPT_COUNT_INLINES = ("preempt_count", "preempt_count_set", "set_preempt_need_resched",
                         "clear_preempt_need_resched", "test_preempt_need_resched", "__preempt_count_add",
                         "__preempt_count_sub", "__preempt_count_dec_and_test", "should_resched")


def inline_triggers(entry: CompilerInsert) -> tuple[str, ...]:
    """The header inlines an ``inline:`` entry goes from (empty for other triggers)."""
    if not entry.trigger.startswith("inline:"):
        return ()
    if entry.symbol == "__preempt_count":
        return PREEMPT_COUNT_INLINES
    if entry.symbol == "current_task":  # and the object-like macro, once the graph records its uses
        return ("get_current", "current")
    name = entry.trigger[len("inline:"):]
    return () if name == "NAME" else (name,)


def inserted_symbols(config: Mapping[str, str] | None) -> list[CompilerInsert]:
    """The entries of :data:`COMPILER_INSERTED` a kernel's ``.config`` turns on (each option ``y``),
    leaving out those never predicted (trigger ``none``). Without a ``.config`` (None), nothing:
    a build whose options are unknown gets no compiler-inserted symbols."""
    if config is None:
        return []
    return [e for e in COMPILER_INSERTED
            if e.trigger != "none" and all(config.get(o) == "y" for o in e.options)
            and (not e.trigger.startswith("inline:") or inline_triggers(e))]
