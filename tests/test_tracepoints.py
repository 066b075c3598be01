"""Trace events as the preprocessor makes them (loaders/tracepoints.py): a file that defines
``CREATE_TRACE_POINTS`` before including a trace header gets define_trace.h's stages
(``trace_event_raw_event_<class>``, ``perf_trace_<class>`` under ``CONFIG_PERF_EVENTS``,
``__bpf_trace_<class>`` calling ``bpf_trace_run<N>`` for N arguments); every includer's
``trace_<event>()`` is tracepoint.h's inline, referring to ``__tracepoint_<event>``,
``__SCK__tp_func_<event>`` and ``__SCT__tp_func_<event>``.

The tree's include/linux/tracepoint.h, static_call_types.h and include/trace/ are 6.1's, cut down
to the macros these events use but in the kernel's shape (the same names, conditionals, stages and
``#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)`` re-reads), indexed under a ``.config`` and resolved
by :func:`ksymgraph.graph.source.source_tables`.
"""

from __future__ import annotations

import pyarrow as pa
import pytest

from conftest import index_small_tree
from ksymgraph.graph.source import source_tables
from ksymgraph.loaders.macros import FILE_SCOPE
from ksymgraph.loaders.tracepoints import MacroState, expand

# 6.1 include/linux/tracepoint.h (the parts the events below use, its conditionals kept).
TRACEPOINT_H = r"""
#ifndef _LINUX_TRACEPOINT_H
#define _LINUX_TRACEPOINT_H
#include <linux/static_call_types.h>
#include <linux/kernel.h>
#ifndef PARAMS
#define PARAMS(args...) args
#endif
#ifndef DECLARE_TRACE
#define TP_PROTO(args...)	args
#define TP_ARGS(args...)	args
#define TP_CONDITION(args...)	args
#if defined(CONFIG_TRACEPOINTS) && !defined(NOTRACE)
#define TRACEPOINTS_ENABLED
#endif
#ifdef TRACEPOINTS_ENABLED
#ifdef CONFIG_HAVE_STATIC_CALL
#define __DO_TRACE_CALL(name, args)					\
	do {								\
		struct tracepoint_func *it_func_ptr;			\
		void *__data;						\
		it_func_ptr =						\
			rcu_dereference_raw((&__tracepoint_##name)->funcs); \
		if (it_func_ptr) {					\
			__data = (it_func_ptr)->data;			\
			static_call(tp_func_##name)(__data, args);	\
		}							\
	} while (0)
#else
#define __DO_TRACE_CALL(name, args)	__traceiter_##name(NULL, args)
#endif /* CONFIG_HAVE_STATIC_CALL */
#define __DO_TRACE(name, args, cond, rcuidle)				\
	do {								\
		int __maybe_unused __idx = 0;				\
		if (!(cond))						\
			return;						\
		/*							\
		 * For rcuidle callers, use srcu since sched-rcu	\
		 * doesn't work from the idle path.			\
		 */							\
		if (rcuidle) {						\
			__idx = srcu_read_lock_notrace(&tracepoint_srcu);\
			ct_irq_enter_irqson();				\
		}							\
		__DO_TRACE_CALL(name, TP_ARGS(args));			\
	} while (0)
#define __DECLARE_TRACE(name, proto, args, cond, data_proto)		\
	extern int __traceiter_##name(data_proto);			\
	extern struct tracepoint __tracepoint_##name;			\
	static inline void trace_##name(proto)				\
	{								\
		if (static_key_false(&__tracepoint_##name.key))		\
			__DO_TRACE(name,				\
				TP_ARGS(args),				\
				TP_CONDITION(cond), 0);			\
		if (IS_ENABLED(CONFIG_LOCKDEP) && (cond)) {		\
			WARN_ON_ONCE(!rcu_is_watching());		\
		}							\
	}								\
	static inline int						\
	register_trace_##name(void (*probe)(data_proto), void *data)	\
	{								\
		return tracepoint_probe_register(&__tracepoint_##name,	\
						(void *)probe, data);	\
	}
#define DEFINE_TRACE_FN(_name, _reg, _unreg, proto, args)		\
	struct tracepoint __tracepoint_##_name	__used = {		\
		.static_call_key = &STATIC_CALL_KEY(tp_func_##_name),	\
		.iterator = &__traceiter_##_name,			\
		.regfunc = _reg,					\
		.unregfunc = _unreg };					\
	int __traceiter_##_name(void *__data, proto)			\
	{								\
		return 0;						\
	}
#define DEFINE_TRACE(name, proto, args)		\
	DEFINE_TRACE_FN(name, NULL, NULL, PARAMS(proto), PARAMS(args));
#else /* !TRACEPOINTS_ENABLED */
#define __DECLARE_TRACE(name, proto, args, cond, data_proto)		\
	static inline void trace_##name(proto)				\
	{ }
#define DEFINE_TRACE_FN(name, reg, unreg, proto, args)
#define DEFINE_TRACE(name, proto, args)
#endif /* TRACEPOINTS_ENABLED */
#define DECLARE_TRACE(name, proto, args)				\
	__DECLARE_TRACE(name, PARAMS(proto), PARAMS(args),		\
			cpu_online(raw_smp_processor_id()),		\
			PARAMS(void *__data, proto))
#endif /* DECLARE_TRACE */
#endif /* _LINUX_TRACEPOINT_H */

#ifndef TRACE_EVENT
#define DECLARE_EVENT_CLASS(name, proto, args, tstruct, assign, print)
#define DEFINE_EVENT(template, name, proto, args)		\
	DECLARE_TRACE(name, PARAMS(proto), PARAMS(args))
#define TRACE_EVENT(name, proto, args, struct, assign, print)	\
	DECLARE_TRACE(name, PARAMS(proto), PARAMS(args))
#endif
"""

# 6.1 include/linux/static_call_types.h, CONFIG_HAVE_STATIC_CALL_INLINE's static_call().
STATIC_CALL_TYPES_H = r"""
#define STATIC_CALL_KEY_PREFIX		__SCK__
#define STATIC_CALL_KEY(name)		__PASTE(STATIC_CALL_KEY_PREFIX, name)
#define STATIC_CALL_TRAMP_PREFIX	__SCT__
#define STATIC_CALL_TRAMP(name)		__PASTE(STATIC_CALL_TRAMP_PREFIX, name)
#define ___PASTE(a,b) a##b
#define __PASTE(a,b) ___PASTE(a,b)
#define __ADDRESSABLE(sym) static void * __used __UNIQUE_ID_addr = (void *)&sym;
#define __raw_static_call(name)	(&STATIC_CALL_TRAMP(name))
#define __STATIC_CALL_ADDRESSABLE(name) __ADDRESSABLE(STATIC_CALL_KEY(name))
#define __static_call(name)						\
({									\
	__STATIC_CALL_ADDRESSABLE(name);				\
	__raw_static_call(name);					\
})
#define static_call(name)	__static_call(name)
"""

# 6.1 include/linux/kernel.h's argument counting.
KERNEL_H = r"""
#define __COUNT_ARGS(_0, _1, _2, _3, _4, _5, _6, _7, _8, _9, _10, _11, _12, _n, X...) _n
#define COUNT_ARGS(X...) __COUNT_ARGS(, ##X, 12, 11, 10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0)
#define __CONCAT(a, b) a ## b
#define CONCATENATE(a, b) __CONCAT(a, b)
"""

# 6.1 include/trace/define_trace.h (what the stages need of it).
DEFINE_TRACE_H = r"""
#ifdef CREATE_TRACE_POINTS
#undef CREATE_TRACE_POINTS
#undef TRACE_EVENT
#define TRACE_EVENT(name, proto, args, tstruct, assign, print)	\
	DEFINE_TRACE(name, PARAMS(proto), PARAMS(args))
#undef DEFINE_EVENT
#define DEFINE_EVENT(template, name, proto, args) \
	DEFINE_TRACE(name, PARAMS(proto), PARAMS(args))
#undef DECLARE_TRACE
#define DECLARE_TRACE(name, proto, args)	\
	DEFINE_TRACE(name, PARAMS(proto), PARAMS(args))
#ifndef TRACE_INCLUDE_FILE
# define TRACE_INCLUDE_FILE TRACE_SYSTEM
#endif
# define __TRACE_INCLUDE(system) __stringify(TRACE_INCLUDE_PATH/system.h)
# define TRACE_INCLUDE(system) __TRACE_INCLUDE(system)
#define TRACE_HEADER_MULTI_READ
#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)
#undef DECLARE_TRACE
#define DECLARE_TRACE(name, proto, args)
#ifdef TRACEPOINTS_ENABLED
#include <trace/trace_events.h>
#include <trace/perf.h>
#include <trace/bpf_probe.h>
#endif
#undef TRACE_EVENT
#undef DECLARE_EVENT_CLASS
#undef DEFINE_EVENT
#undef TRACE_HEADER_MULTI_READ
#undef DECLARE_TRACE
#define CREATE_TRACE_POINTS
#endif /* CREATE_TRACE_POINTS */
"""

# 6.1 include/trace/trace_events.h: stages 3 (output), 6 (event callback) and 7 (class define).
TRACE_EVENTS_H = r"""
#undef TRACE_EVENT
#define TRACE_EVENT(name, proto, args, tstruct, assign, print) \
	DECLARE_EVENT_CLASS(name,			       \
			     PARAMS(proto),		       \
			     PARAMS(args),		       \
			     PARAMS(tstruct),		       \
			     PARAMS(assign),		       \
			     PARAMS(print));		       \
	DEFINE_EVENT(name, name, PARAMS(proto), PARAMS(args));

#include "stages/stage3_trace_output.h"

#undef DECLARE_EVENT_CLASS
#define DECLARE_EVENT_CLASS(call, proto, args, tstruct, assign, print)	\
static notrace enum print_line_t					\
trace_raw_output_##call(struct trace_iterator *iter, int flags,		\
			struct trace_event *trace_event)		\
{									\
	struct trace_seq *s = &iter->seq;				\
	struct trace_seq __maybe_unused *p = &iter->tmp_seq;		\
	int ret;							\
	ret = trace_raw_output_prep(iter, trace_event);			\
	if (ret != TRACE_TYPE_HANDLED)					\
		return ret;						\
	trace_event_printf(iter, print);				\
	return trace_handle_return(s);					\
}
#undef DEFINE_EVENT
#define DEFINE_EVENT(template, name, proto, args)

#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)

#include "stages/stage6_event_callback.h"

#undef DECLARE_EVENT_CLASS
#define DECLARE_EVENT_CLASS(call, proto, args, tstruct, assign, print)	\
static notrace void							\
trace_event_raw_event_##call(void *__data, proto)			\
{									\
	struct trace_event_file *trace_file = __data;			\
	struct trace_event_buffer fbuffer;				\
	struct trace_event_raw_##call *entry;				\
	if (trace_trigger_soft_disabled(trace_file))			\
		return;							\
	entry = trace_event_buffer_reserve(&fbuffer, trace_file,	\
				 sizeof(*entry));			\
	if (!entry)							\
		return;							\
	{ assign; }							\
	trace_event_buffer_commit(&fbuffer);				\
}

#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)

#ifdef CONFIG_PERF_EVENTS
#define _TRACE_PERF_INIT(call)						\
	.perf_probe		= perf_trace_##call,
#else
#define _TRACE_PERF_INIT(call)
#endif /* CONFIG_PERF_EVENTS */

#undef DECLARE_EVENT_CLASS
#define DECLARE_EVENT_CLASS(call, proto, args, tstruct, assign, print)	\
static struct trace_event_class __used __refdata event_class_##call = { \
	.raw_init		= trace_event_raw_init,			\
	.probe			= trace_event_raw_event_##call,		\
	.reg			= trace_event_reg,			\
	_TRACE_PERF_INIT(call)						\
};

#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)
"""

STAGE3_H = r"""
#undef __entry
#define __entry field
#undef TP_printk
#define TP_printk(fmt, args...) fmt "\n", args
#undef __print_flags
#define __print_flags(flag, delim, flag_array...)			\
	({								\
		static const struct trace_print_flags __flags[] =	\
			{ flag_array, { -1, NULL }};			\
		trace_print_flags_seq(p, delim, flag, __flags);	\
	})
"""

STAGE6_H = r"""
#undef __entry
#define __entry entry
#undef TP_fast_assign
#define TP_fast_assign(args...) args
"""

# 6.1 include/trace/perf.h
PERF_H = r"""
#ifdef CONFIG_PERF_EVENTS
#undef DECLARE_EVENT_CLASS
#define DECLARE_EVENT_CLASS(call, proto, args, tstruct, assign, print)	\
static notrace void							\
perf_trace_##call(void *__data, proto)					\
{									\
	struct trace_event_call *event_call = __data;			\
	struct pt_regs *__regs;						\
	int rctx;							\
	void *entry;							\
	entry = perf_trace_buf_alloc(16, &__regs, &rctx);		\
	if (!entry)							\
		return;							\
	perf_trace_run_bpf_submit(entry, 16, rctx,			\
				  event_call, 1, __regs,		\
				  NULL, NULL);				\
}
#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)
#endif /* CONFIG_PERF_EVENTS */
"""

# 6.1 include/trace/bpf_probe.h
BPF_PROBE_H = r"""
#ifdef CONFIG_BPF_EVENTS
#define __CAST_TO_U64(x) ((u64)(x))
#define __CAST1(a,...) __CAST_TO_U64(a)
#define __CAST2(a,...) __CAST_TO_U64(a), __CAST1(__VA_ARGS__)
#define __CAST3(a,...) __CAST_TO_U64(a), __CAST2(__VA_ARGS__)
#define CAST_TO_U64(...) CONCATENATE(__CAST, COUNT_ARGS(__VA_ARGS__))(__VA_ARGS__)
#define __BPF_DECLARE_TRACE(call, proto, args)				\
static notrace void							\
__bpf_trace_##call(void *__data, proto)					\
{									\
	struct bpf_prog *prog = __data;					\
	CONCATENATE(bpf_trace_run, COUNT_ARGS(args))(prog, CAST_TO_U64(args));	\
}
#undef DECLARE_EVENT_CLASS
#define DECLARE_EVENT_CLASS(call, proto, args, tstruct, assign, print)	\
	__BPF_DECLARE_TRACE(call, PARAMS(proto), PARAMS(args))
#undef DEFINE_EVENT
#define DEFINE_EVENT(template, call, proto, args)
#include TRACE_INCLUDE(TRACE_INCLUDE_FILE)
#endif /* CONFIG_BPF_EVENTS */
"""

# A driver's trace header: a class of three arguments with one event, a TRACE_EVENT of one.
FOO_TRACE_H = r"""
#undef TRACE_SYSTEM
#define TRACE_SYSTEM foo

#if !defined(_FOO_TRACE_H) || defined(TRACE_HEADER_MULTI_READ)
#define _FOO_TRACE_H

#include <linux/tracepoint.h>
#include "foo_common.h"

DECLARE_EVENT_CLASS(foo_class,
	TP_PROTO(int a, int b, const char *name),
	TP_ARGS(a, b, name),
	TP_STRUCT__entry(),
	TP_fast_assign(
		foo_copy_name(__entry, name);
	),
	TP_printk("%d %d", a, b)
);

DEFINE_EVENT(foo_class, foo_start,
	TP_PROTO(int a, int b, const char *name),
	TP_ARGS(a, b, name)
);

TRACE_EVENT(foo_one,
	TP_PROTO(unsigned long flags),
	TP_ARGS(flags),
	TP_STRUCT__entry(),
	TP_fast_assign(),
	TP_printk("%s", __print_flags(flags, "|", { 1, "ONE" }))
);

#endif /* _FOO_TRACE_H */

#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE foo_trace
#include <trace/define_trace.h>
"""

# vmlinux's event (include/trace/events/sched.h's shape), created by kernel/sched/core.c.
SCHED_H = r"""
#undef TRACE_SYSTEM
#define TRACE_SYSTEM sched
#if !defined(_TRACE_SCHED_H) || defined(TRACE_HEADER_MULTI_READ)
#define _TRACE_SCHED_H
#include <linux/tracepoint.h>
TRACE_EVENT(sched_switch,
	TP_PROTO(bool preempt, struct task_struct *prev),
	TP_ARGS(preempt, prev),
	TP_STRUCT__entry(),
	TP_fast_assign(),
	TP_printk("%d", preempt)
);
#endif /* _TRACE_SCHED_H */
#include <trace/define_trace.h>
"""

# brcmsmac's shape: a wrapper that makes the events empty stubs unless CONFIG_BAR_TRACING, and a
# trace header that includes define_trace.h only then.
BAR_EVENTS_H = r"""
#ifndef __BAR_EVENTS_H
#define __BAR_EVENTS_H
#include <linux/tracepoint.h>
#ifndef CONFIG_BAR_TRACING
#undef TRACE_EVENT
#define TRACE_EVENT(name, proto, ...) \
static inline void trace_ ## name(proto) {}
#endif
#include "bar_trace.h"
#endif
"""
BAR_TRACE_H = r"""
#if !defined(__TRACE_BAR_H) || defined(TRACE_HEADER_MULTI_READ)
#define __TRACE_BAR_H
#undef TRACE_SYSTEM
#define TRACE_SYSTEM bar
TRACE_EVENT(bar_x,
	TP_PROTO(int x),
	TP_ARGS(x),
	TP_STRUCT__entry(),
	TP_fast_assign(),
	TP_printk("%d", x)
);
#endif
#ifdef CONFIG_BAR_TRACING
#undef TRACE_INCLUDE_PATH
#define TRACE_INCLUDE_PATH .
#undef TRACE_INCLUDE_FILE
#define TRACE_INCLUDE_FILE bar_trace
#include <trace/define_trace.h>
#endif
"""

FILES = {
    "Kbuild": "obj-y += kernel/\nobj-$(CONFIG_FOO) += drivers/foo/\n",
    "Makefile": "VERSION = 6\nPATCHLEVEL = 1\nSUBLEVEL = 192\n",
    "kernel/Makefile": "obj-y += sched/\n",
    "kernel/sched/Makefile": "obj-y += core.o\n",
    "kernel/sched/core.c": "#define CREATE_TRACE_POINTS\n#include <trace/events/sched.h>\nvoid schedule(void) { trace_sched_switch(0, 0); }\n",
    "drivers/foo/Makefile": "obj-$(CONFIG_FOO) += foo.o\nfoo-y := foo_main.o foo_trace.o bar_events.o\n",
    # foo_common.h (which includes sched.h) is included before the #define: not created here;
    # foo_trace.h, included before too (l2tp_core.c's shape), is: define_trace.h is outside its guard
    "drivers/foo/foo_trace.c": '#include "foo_common.h"\n#include "foo_trace.h"\n#define CREATE_TRACE_POINTS\n#include "foo_trace.h"\n',
    "drivers/foo/foo_common.h": "#include <trace/events/sched.h>\n",
    "drivers/foo/foo_main.c": '#include <trace/events/sched.h>\n#include "foo_trace.h"\n#include "bar_events.h"\n'
                              'int foo_probe(void) { trace_foo_start(1, 2, "x"); trace_sched_switch(1, 0); trace_bar_x(1); return 0; }\n',
    "drivers/foo/bar_events.c": '#define CREATE_TRACE_POINTS\n#include "bar_events.h"\n',
    "drivers/foo/bar_events.h": BAR_EVENTS_H,
    "drivers/foo/bar_trace.h": BAR_TRACE_H,
    "drivers/foo/foo_trace.h": FOO_TRACE_H,
    "include/trace/events/sched.h": SCHED_H,
    "include/linux/tracepoint.h": TRACEPOINT_H,
    "include/linux/static_call_types.h": STATIC_CALL_TYPES_H,
    "include/linux/kernel.h": KERNEL_H,
    "include/trace/define_trace.h": DEFINE_TRACE_H,
    "include/trace/trace_events.h": TRACE_EVENTS_H,
    "include/trace/stages/stage3_trace_output.h": STAGE3_H,
    "include/trace/stages/stage6_event_callback.h": STAGE6_H,
    "include/trace/perf.h": PERF_H,
    "include/trace/bpf_probe.h": BPF_PROBE_H,
    "arch/x86/include/asm/bug.h": "#define HAVE_ARCH_BUG\n",
}

CONFIG = ("CONFIG_X86_64=y\nCONFIG_SMP=y\nCONFIG_FOO=m\nCONFIG_TRACEPOINTS=y\nCONFIG_HAVE_STATIC_CALL=y\n"
          "CONFIG_BPF_EVENTS=y\n# CONFIG_LOCKDEP is not set\n")

#: The names the binaries would have as symbols (a reference resolves only to a symbol the graph has).
SYMBOLS = {"trace_event_raw_init", "trace_event_reg", "trace_raw_output_prep", "trace_event_printf",
           "trace_handle_return", "trace_event_buffer_reserve", "trace_event_buffer_commit",
           "perf_trace_buf_alloc", "perf_trace_run_bpf_submit", "trace_print_flags_seq",
           "bpf_trace_run1", "bpf_trace_run2", "bpf_trace_run3", "bpf_trace_run0",
           "__tracepoint_sched_switch", "__SCK__tp_func_sched_switch", "__SCT__tp_func_sched_switch",
           "__tracepoint_foo_start", "__SCK__tp_func_foo_start", "__SCT__tp_func_foo_start",
           "tracepoint_srcu", "ct_irq_enter_irqson", "rcu_is_watching", "__traceiter_sched_switch",
           "foo_copy_name", "__tracepoint_bar_x", "__SCK__tp_func_bar_x", "bpf_trace_run1"}


def _edges(base, config_text: str):
    t = index_small_tree(base, FILES, config_text)[2]
    k = "k"
    st = source_tables(k, [t], {"foo": "k|foo", "vmlinux": "k|vmlinux"}, {f"k|{s}" for s in SYMBOLS})
    out = set()
    for rtype in ("CALLS", "REFERENCES"):
        for to in ("Function", "Symbol"):
            rows = st.rels.get((rtype, "Function", to))
            if rows is None:
                continue
            rows = rows if isinstance(rows, pa.Table) else rows.table()
            for frm, dst in zip(rows["from"].to_pylist(), rows["to"].to_pylist()):
                _k, ffile, fname = frm.split("|")
                parts = dst.split("|")
                out.add((ffile, fname, parts[1] if len(parts) == 3 else "", parts[-1]))
    functions = st.nodes["Function"]
    names = set(zip(functions["file"].to_pylist(), functions["name"].to_pylist()))
    return out, names


@pytest.fixture(scope="module")
def perf(tmp_path_factory):
    return _edges(tmp_path_factory.mktemp("tp_perf"), CONFIG + "CONFIG_PERF_EVENTS=y\n")


@pytest.fixture(scope="module")
def no_perf(tmp_path_factory):
    return _edges(tmp_path_factory.mktemp("tp_noperf"), CONFIG + "# CONFIG_PERF_EVENTS is not set\n")


def targets(edges, file, name):
    return {c for f, n, _cf, c in edges if (f, n) == (file, name)}


FOO = "drivers/foo/foo_trace.c"


def test_the_defining_file_gets_each_stage_of_define_trace(perf):
    edges, _names = perf
    # stage 3 (trace_events.h's trace_raw_output_<class>), __print_flags in TP_printk
    assert {"trace_raw_output_prep", "trace_event_printf", "trace_handle_return"} <= targets(edges, FOO, "trace_raw_output_foo_class")
    assert "trace_print_flags_seq" in targets(edges, FOO, "trace_raw_output_foo_one")
    # stage 6: the probe, with the event's TP_fast_assign inside
    assert {"trace_event_buffer_reserve", "trace_event_buffer_commit", "foo_copy_name"} <= targets(edges, FOO, "trace_event_raw_event_foo_class")
    # stage 7: event_class_<class>'s initialiser, from the file's pseudo-function
    assert {"trace_event_raw_init", "trace_event_reg"} <= targets(edges, FOO, FILE_SCOPE)
    # perf.h under CONFIG_PERF_EVENTS
    assert {"perf_trace_buf_alloc", "perf_trace_run_bpf_submit"} <= targets(edges, FOO, "perf_trace_foo_class")


def test_bpf_trace_run_has_the_events_arity(perf):
    edges, _names = perf
    # bpf_probe.h: CONCATENATE(bpf_trace_run, COUNT_ARGS(args)) — COUNT_ARGS's `, ##X` keeps the comma
    assert targets(edges, FOO, "__bpf_trace_foo_class") & {f"bpf_trace_run{n}" for n in range(4)} == {"bpf_trace_run3"}
    assert targets(edges, FOO, "__bpf_trace_foo_one") & {f"bpf_trace_run{n}" for n in range(4)} == {"bpf_trace_run1"}


def test_without_perf_events_no_perf_functions(no_perf):
    edges, names = no_perf
    assert not {n for f, n in names if n.startswith("perf_trace_")}
    assert not {c for *_x, c in edges if c.startswith("perf_trace_")}
    # the other stages are there still
    assert "trace_event_buffer_reserve" in targets(edges, FOO, "trace_event_raw_event_foo_class")
    assert "bpf_trace_run3" in targets(edges, FOO, "__bpf_trace_foo_class")


def test_a_caller_of_trace_event_reaches_the_tracepoint_and_its_static_call(perf):
    edges, _names = perf
    main = "drivers/foo/foo_main.c"
    # the call resolves to tracepoint.h's inline, made in the trace header
    assert ("include/trace/events/sched.h", "trace_sched_switch") in {(cf, c) for f, n, cf, c in edges if (f, n) == (main, "foo_probe")}
    assert ("drivers/foo/foo_trace.h", "trace_foo_start") in {(cf, c) for f, n, cf, c in edges if (f, n) == (main, "foo_probe")}
    inline = targets(edges, "include/trace/events/sched.h", "trace_sched_switch")
    assert {"__tracepoint_sched_switch", "__SCK__tp_func_sched_switch", "__SCT__tp_func_sched_switch"} <= inline
    # __DO_TRACE's `if (rcuidle)` with rcuidle 0, and IS_ENABLED(CONFIG_LOCKDEP) unset: dead code
    assert not inline & {"tracepoint_srcu", "ct_irq_enter_irqson", "rcu_is_watching"}
    assert {"__tracepoint_foo_start", "__SCK__tp_func_foo_start"} <= targets(edges, "drivers/foo/foo_trace.h", "trace_foo_start")


def test_the_trace_header_is_no_definer_for_its_includers(perf):
    edges, names = perf
    # only the CREATE_TRACE_POINTS files get the stages: foo_main.c includes the same headers
    assert not {n for f, n in names if f == "drivers/foo/foo_main.c" and n.startswith(("perf_trace_", "trace_event_raw_event_"))}
    assert ("kernel/sched/core.c", "trace_event_raw_event_sched_switch") in names


def test_expand_is_the_preprocessors():
    # arguments expanded before substitution, ``#``, ``##``, rescanning, GNU ``, ## args``
    state = MacroState({})
    for d in ("__COUNT_ARGS(_0, _1, _2, _3, _n, X...) _n", "COUNT_ARGS(X...) __COUNT_ARGS(, ##X, 3, 2, 1, 0)",
              "__CONCAT(a, b) a ## b", "CONCATENATE(a, b) __CONCAT(a, b)", "PARAMS(args...) args",
              "F(args) CONCATENATE(run, COUNT_ARGS(args))(args)", "OBJ F"):
        state.define(d)
    assert expand("F(PARAMS(x, y))", state) == ["run2", "(", "x", ",", "y", ")"]
    assert expand("COUNT_ARGS()", state) == ["0"]
    assert expand("OBJ(z)", state) == ["run1", "(", "z", ")"]


def test_a_header_included_before_the_define_is_not_created_again(perf):
    _edges, names = perf
    # foo_trace.h includes foo_common.h (and so sched.h) after the #define, but foo_trace.c had
    # included it before: its include guard holds, sched.h's events are kernel/sched/core.c's
    assert not {n for f, n in names if f == FOO and "sched_switch" in n}
    assert ("kernel/sched/core.c", "__bpf_trace_sched_switch") in names


def test_a_wrappers_stubs_and_a_define_trace_under_a_dead_if(perf):
    edges, names = perf
    # bar_events.h makes TRACE_EVENT an empty inline without CONFIG_BAR_TRACING: bar_trace.h's
    # event is that, for its includers, and bar_events.c creates nothing
    assert ("drivers/foo/bar_trace.h", "trace_bar_x") in names
    assert not targets(edges, "drivers/foo/bar_trace.h", "trace_bar_x")
    assert not {n for f, n in names if f == "drivers/foo/bar_events.c" and n != FILE_SCOPE}
    assert not targets(edges, "drivers/foo/bar_events.c", FILE_SCOPE)
