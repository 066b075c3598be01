"""Reports: what-if, usage, check and query results as Markdown, JSON, HTML, tables or CSV.

Every renderer takes a result object from :mod:`ksymgraph.queries` and returns text; the CLI
prints it and the notebooks save it. A report starts with a short summary, then the tables.
"""

from __future__ import annotations

import csv
import html
import io
import json
from typing import TYPE_CHECKING, Any

from ..graph.store import Rows
from .check import CheckResult
from .diff import DIFF_KINDS, KernelDiff, UpgradeImpact
from .history import History, ModuleHistory
from .rebuild import RebuildPrediction
from .records import ModuleVerdict, Reason
from .usage import UsageReport
from .whatif import WhatIfResult

if TYPE_CHECKING:  # the load pipeline is not imported to render a what-if
    from ..graph.load import LoadSummary

__all__ = ["render_load", "render_history", "render_module_history", "render_whatif", "render_usage", "render_check", "render_diff", "render_upgrade", "render_rebuild", "render_rows",
           "markdown_table", "to_html"]


def _cell(v: Any) -> str:
    if v is None:
        return ""
    if isinstance(v, (list, tuple)):
        return ", ".join(map(str, v))
    return str(v).replace("|", "\\|").replace("\n", " ")


def markdown_table(headers: list[str], rows: list[list[Any]]) -> str:
    """A GitHub-flavoured Markdown table."""
    out = ["| " + " | ".join(headers) + " |", "|" + "|".join("---" for _ in headers) + "|"]
    out += ["| " + " | ".join(_cell(v) for v in r) + " |" for r in rows]
    return "\n".join(out)


def to_html(title: str, markdownish: list[tuple[str, Any]]) -> str:
    """A self-contained HTML page from (kind, content) parts: ``h1``/``h2``/``p`` text or ``table`` (headers, rows)."""
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>",
        f"<title>{html.escape(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse}"
        "td,th{border:1px solid #ccc;padding:2px 6px;text-align:left;vertical-align:top}"
        "th{background:#eee}code{background:#f4f4f4}</style></head><body>",
    ]
    for kind, content in markdownish:
        if kind == "table":
            headers, rows = content
            parts.append("<table><thead><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in headers) + "</tr></thead><tbody>")
            for r in rows:
                parts.append("<tr>" + "".join(f"<td>{html.escape(_cell(v))}</td>" for v in r) + "</tr>")
            parts.append("</tbody></table>")
        else:
            parts.append(f"<{kind}>{html.escape(str(content))}</{kind}>")
    parts.append("</body></html>")
    return "\n".join(parts)


def _render(fmt: str, title: str, parts: list[tuple[str, Any]], data: dict) -> str:
    if fmt == "json":
        return json.dumps(data, indent=2, sort_keys=False)
    if fmt == "html":
        return to_html(title, parts)
    out = []
    for kind, content in parts:
        if kind == "h1":
            out.append(f"# {content}\n")
        elif kind == "h2":
            out.append(f"\n## {content}\n")
        elif kind == "table":
            out.append(markdown_table(*content) + "\n")
        else:
            out.append(f"{content}\n")
    return "\n".join(out)


def _change_text(c) -> str:
    if c.kind == "namespace":
        return f"move {c.target} into namespace {c.namespace}"
    if c.kind == "remove-module":
        return f"remove module {c.target}"
    return f"{'unexport' if c.kind == 'unexport' else 'make GPL-only'} {c.target}"


def _count(n: int, noun: str) -> str:
    return f"{n} {noun}{'' if n == 1 else 's'}"


def _yes_no(flag: bool | None) -> str:
    return "unknown" if flag is None else ("yes" if flag else "no")


def render_load(s: LoadSummary, where: str, show_skipped: int = 20) -> tuple[str, str]:
    """The summary of a load: what was written (for stdout), and the notes and skipped inputs (for
    stderr), at most ``show_skipped`` of those listed."""
    r = s.report
    out = [f"loaded kernel {s.kernel} into {where} in {s.seconds:.1f} s: {r.modules} modules (vmlinux included), "
           f"{r.exports} exports, {r.imports} imports, {r.depends} module dependencies, {r.symbols} symbols"]
    err = []
    if r.source:
        c = r.source
        out.append(f"source: {c.get('Function', 0)} functions, {c.get('CALLS->Function', 0) + c.get('CALLS->Symbol', 0)} "
                   f"calls, {c.get('REFERENCES->Function', 0) + c.get('REFERENCES->Symbol', 0)} references, "
                   f"{c.get('EXPORTED_AS', 0)} export sites, {c.get('LOOKS_UP', 0)} run-time lookups, "
                   f"{c.get('attributed_files', c.get('BUILT_INTO', 0))} files attributed to modules ({c.get('unattributed_files', 0)} not)")
        mapped = c.get("modules_with_source", 0)
        total = mapped + len(r.unmapped)
        out.append(f"source covers {mapped} of {total} modules ({mapped / max(total, 1):.1%})"
                   + (f"; without source: {', '.join(r.unmapped[:10])}{' ...' if len(r.unmapped) > 10 else ''}"
                      if r.unmapped else ""))
        if s.parse is not None:
            out.append(f"parsed {s.parse.files} files: parse errors touch {s.parse.function_error_share():.2%} of "
                       f"{s.parse.functions} function definitions")
            if s.parse.conditions_decided or s.parse.conditions_kept:
                out.append(f"preprocessor: {s.parse.conditions_decided} conditions decided for this build "
                           f"({s.parse.lines_blanked} lines not compiled left out), {s.parse.conditions_kept} "
                           "kept undecided (every branch read)")
    if s.build is not None:
        b = s.build
        out.append(f"load rules: vermagic {b.vermagic.strip()!r}, modversions {_yes_no(b.modversions)}, "
                   f"force-load {_yes_no(b.force_load)}, from {b.source}")
    err += [f"note: {note}" for note in s.notes]
    if r.symvers_mismatches:
        out.append(f"{len(r.symvers_mismatches)} exports differ between module files and Module.symvers, e.g. "
                   f"{r.symvers_mismatches[0]}")
    if s.skipped:
        err.append(f"skipped {len(s.skipped)} inputs:")
        err += [f"  {item.path}: {item.reason}" for item in s.skipped[:show_skipped]]
        if len(s.skipped) > show_skipped:
            err.append(f"  ... and {len(s.skipped) - show_skipped} more (--show-skipped N)")
    else:
        out.append("skipped nothing")
    return "\n".join(out), "\n".join(err)


def render_whatif(result: WhatIfResult, fmt: str = "md") -> str:
    """A what-if report: summary, then broken modules with their reasons."""
    s = result.summary
    changes = "; ".join(_change_text(c) for c in result.changes) or "no change"
    parts: list[tuple[str, Any]] = [("h1", f"What if: {changes} (kernel {result.kernel})")]
    if s["broken"]:
        rules = ", ".join(f"{n} {r}" for r, n in s["by_rule"].items())
        parts.append(("p", f"{s['broken']} modules fail to load: {s['direct']} directly, {s['inherited']} through "
                           f"a failing dependency; {s['in_tree']} in-tree, {s['out_of_tree']} out-of-tree. "
                           f"Modules per rule: {rules}."))
    else:
        parts.append(("p", "No module fails to load because of this change."))
    for w in result.warnings:
        parts.append(("p", f"Warning: {w}"))
    if result.broken:
        parts.append(("h2", "Broken modules"))
        rows = []
        for b in result.broken:
            tree = "in-tree" if b.in_tree else "out-of-tree"
            via: dict[str, list[str]] = {}
            for r in b.reasons:
                if r.rule == "dependency":
                    via.setdefault(r.via_module, []).append(r.symbol)
                else:
                    rows.append([b.module, tree, "direct", r.rule, r.symbol, r.message])
            for mod, syms in via.items():  # one row per failing dependency, its symbols together
                rows.append([b.module, tree, f"via {mod}", "dependency", ", ".join(syms),
                             f"needs {len(syms)} symbol{'s' if len(syms) > 1 else ''} from {mod}, which fails to load"])
        parts.append(("table", (["module", "tree", "break", "rule", "symbol", "message"], rows)))
    if result.call_sites:
        parts.append(("h2", "Call sites to change"))
        parts.append(("table", (["module", "symbol", "function", "where", "through"],
                                [[mod, c.symbol, c.function, c.where, c.through]
                                 for mod, sites in sorted(result.call_sites.items()) for c in sites])))
    if any(result.replacements.values()):
        parts.append(("h2", "Still-exported functions that call a removed export (possible replacements)"))
        parts.append(("table", (["removed", "exported caller", "type", "defined in", "hops"],
                                [[sym, r.export, "GPL" if r.gpl else "plain", r.file, r.hops]
                                 for sym, reps in sorted(result.replacements.items()) for r in reps[:20]])))
    if result.lookups:
        parts.append(("h2", "Run-time lookups hit"))
        parts.append(("table", (["module", "symbol", "how", "where", "why"],
                                [[h.lookup.module, h.lookup.symbol, h.lookup.how, f"{h.lookup.file}:{h.lookup.line}",
                                  h.why] for h in result.lookups])))
    if result.already_broken:
        parts.append(("p", f"Already failing before the change (not counted): {', '.join(result.already_broken)}"))
    return _render(fmt, f"ksymgraph what-if: {changes}", parts, result.to_json())


def render_usage(report: UsageReport, fmt: str = "md", limit: int | None = None) -> str:
    """The export usage report; ``limit`` caps the table rows in md/html (JSON is always whole)."""
    unused = report.unused
    parts: list[tuple[str, Any]] = [
        ("h1", f"Export usage (kernel {report.kernel})"),
        ("p", f"{len(report.exports)} exports, {len(unused)} used by no module; {len(report.modules)} modules import symbols."),
        ("h2", "Exports"),
        ("table", (["symbol", "owner", "type", "namespace", "in-tree users", "out-of-tree users"],
                   [[e.symbol, e.owner, e.type, e.namespace, len(e.in_tree_users), len(e.out_of_tree_users)]
                    for e in report.exports[:limit]])),
        ("h2", "Unused exports"),
        ("table", (["symbol", "owner", "type", "namespace"],
                   [[e.symbol, e.owner, e.type, e.namespace] for e in unused[:limit]])),
        ("h2", "Module dependencies"),
        ("table", (["module", "depends on", "symbols"],
                   [[m.module, dep, syms] for m in report.modules[:limit] for dep, syms in m.depends.items()])),
    ]
    return _render(fmt, f"ksymgraph usage: {report.kernel}", parts, report.to_json())


def _verdicts_table(modules: list[ModuleVerdict]) -> tuple[str, Any]:
    """One row per reason a module would not load, then one per module that loads."""
    return ("table", (["module", "loads", "rule", "symbol", "message"],
                      [[m.module, "yes" if m.loads else "no", r.rule, r.symbol, r.message]
                       for m in modules for r in m.reasons] +
                      [[m.module, "yes", "", "", ""] for m in modules if m.loads]))


def render_check(result: CheckResult, fmt: str = "md") -> str:
    """The verdict on out-of-tree modules."""
    bad = [m for m in result.modules if not m.loads]
    parts: list[tuple[str, Any]] = [
        ("h1", f"Check against kernel {result.kernel}"),
        ("p", f"{_count(len(result.modules), 'module')} checked: {len(result.modules) - len(bad)} would load, "
              f"{len(bad)} would not."),
        _verdicts_table(result.modules),
    ]
    abi = [m.module for m in bad if any(r.rule in ("modversions", "vermagic") for r in m.reasons)]
    if abi:
        parts.insert(2, ("p", f"{_count(len(abi), 'module')} ({', '.join(abi[:5])}{' ...' if len(abi) > 5 else ''}) "
                              f"built for another kernel: the vermagic or the symbol CRCs differ from "
                              f"{result.kernel}'s. Rebuild against its headers (linux-headers-{result.kernel})."))
    missing = [(m.module, sym, users) for m in result.modules for sym, users in m.missing.items()]
    if missing:
        parts.append(("h2", "Symbols it needs that the kernel does not export"))
        if not result.source_loaded:
            parts.append(("p", "Load the kernel's source (ksymgraph load --source) to list their in-tree modular users."))
        parts.append(("table", (["module", "symbol", "in-tree modular users"],
                                [[mod, sym, [f"{u.module}: {u.function} ({u.where})" for u in users]
                                  or "none found"] for mod, sym, users in missing])))
    return _render(fmt, f"ksymgraph check: {result.kernel}", parts, result.to_json())


def render_rows(rows: Rows, fmt: str = "table") -> str:
    """Query results as an aligned text table, CSV or JSON."""
    if fmt == "json":
        return json.dumps(rows.dicts(), indent=2, default=str)
    if fmt == "csv":
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(rows.columns)
        w.writerows([[_cell(v) for v in r] for r in rows.rows])
        return buf.getvalue().rstrip("\n")
    cells = [rows.columns] + [[_cell(v) for v in r] for r in rows.rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(rows.columns))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines) + f"\n({len(rows.rows)} rows)"


_DIFF_TITLES = {
    "removed": "Exports removed", "added": "Exports added", "gpl_only": "Turned GPL-only",
    "not_gpl_only": "No longer GPL-only", "namespace": "Namespace changed", "owner": "Owner changed",
    "crc": "CRC changed (rebuild needed)",
}


def _state(st) -> str:
    if st is None:
        return "-"
    return f"{st.module} {'GPL' if st.gpl else 'plain'}{' ns=' + st.namespace if st.namespace else ''}"


def _diff_parts(d: KernelDiff, limit: int | None) -> list[tuple[str, Any]]:
    s = d.summary
    parts: list[tuple[str, Any]] = [
        ("h1", f"Exports from {d.a} to {d.b}"),
        ("p", f"{s['removed']} removed, {s['added']} added, {s['gpl_only']} turned GPL-only, "
              f"{s['not_gpl_only']} no longer GPL-only, {s['namespace']} changed namespace, {s['owner']} changed owner, "
              f"{s['crc']} changed CRC."),
    ]
    for kind in DIFF_KINDS:
        entries = d.changes[kind]
        if not entries:
            continue
        shown = entries[:limit]
        parts.append(("h2", f"{_DIFF_TITLES[kind]} ({len(entries)})"))
        parts.append(("table", (["symbol", d.a, d.b], [[e.symbol, _state(e.a), _state(e.b)] for e in shown])))
        if len(shown) < len(entries):
            parts.append(("p", f"... and {len(entries) - len(shown)} more (--limit)"))
    return parts


def _pretty(parts: list[tuple[str, Any]]) -> str:
    out = []
    for kind, content in parts:
        if kind == "h1":
            out.append(str(content))
            out.append("=" * len(str(content)))
        elif kind == "h2":
            out.append("")
            out.append(str(content))
            out.append("-" * len(str(content)))
        elif kind == "table":
            headers, rows = content
            cells = [headers] + [[_cell(v) for v in r] for r in rows]
            widths = [max(len(r[i]) for r in cells) for i in range(len(headers))]
            out.extend("  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in cells)
        else:
            out.append(str(content))
    return "\n".join(out)


def render_diff(d: KernelDiff, fmt: str = "pretty", limit: int | None = 50) -> str:
    """An export diff: a summary, then one table per kind of change (``limit`` rows each, not in JSON)."""
    parts = _diff_parts(d, limit)
    if fmt == "pretty":
        return _pretty(parts)
    return _render(fmt, f"ksymgraph diff {d.a} {d.b}", parts, d.to_json())


def render_upgrade(u: UpgradeImpact, fmt: str = "pretty", rebuilt: RebuildPrediction | None = None) -> str:
    """Upgrade impact on a set of modules: the verdict per module first, then the export diff summary;
    with ``rebuilt``, what the modules would import once rebuilt against B's headers (JSON: ``rebuilt``),
    whose verdict is then the verdict of each module with source."""
    verdicts = u.modules
    predicted = {m.module: m for m in rebuilt.modules if m.source} if rebuilt is not None else {}
    if predicted:
        verdicts = [v._replace(loads=bool(predicted[v.module].loads),
                               reasons=[Reason(b.rule, b.symbol, b.via_module, b.message)
                                        for b in predicted[v.module].breaks])
                    if v.module in predicted else v for v in u.modules]
    bad = [m for m in verdicts if not m.loads]
    parts: list[tuple[str, Any]] = [
        ("h1", f"Upgrade {u.diff.a} -> {u.diff.b}: {len(bad)} of {len(u.modules)} modules would not load"),
        ("p", f"{sum(m.loads and bool(m.rebuild) for m in verdicts)} load once rebuilt against {u.diff.b}'s headers "
              "(their vanished imports are renames behind a kept API)."),
    ]
    if predicted:
        parts.append(("p", f"For the {len(predicted)} with their source loaded the verdict is the rebuild's "
                           f"prediction through {u.diff.b}'s headers (below)."))
    parts.append(_verdicts_table(verdicts))
    binary = [(m.module, r) for m in u.modules for r in m.as_built]
    if binary:
        parts.append(("h2", f"Rebuild needed: {u.diff.b} refuses the binaries built against {u.diff.a}"))
        parts.append(("table", (["module", "rule", "symbol", "message"],
                                [[mod, r.rule, r.symbol, r.message] for mod, r in binary])))
    sites = [(m.module, c) for m in u.modules for c in m.call_sites]
    if sites:
        parts.append(("h2", "Call sites to change"))
        parts.append(("table", (["module", "symbol", "function", "where", "through"],
                                [[mod, c.symbol, c.function, c.where, c.through] for mod, c in sites])))
    rebuild = [(m.module, r) for m in u.modules for r in m.rebuild]
    if rebuild:
        parts.append(("h2", "Rebuild needed, API kept"))
        parts.append(("table", (["module", "vanished export", "API", "now via", "how we know"],
                                [[mod, r.symbol, r.api, r.now_via, r.how] for mod, r in rebuild])))
    gone = [(m.module, lu) for m in u.modules for lu in m.lookups_missing]
    if gone:
        parts.append(("h2", f"Symbols looked up by name that {u.diff.b} lacks"))
        parts.append(("table", (["module", "symbol", "how", "where"],
                                [[mod, lu.symbol, lu.how, f"{lu.file}:{lu.line}"] for mod, lu in gone])))
    if rebuilt is not None:
        parts.extend(_rebuild_parts(rebuilt))
    s = u.diff.summary
    parts.append(("p", f"Export diff: {s['removed']} removed, {s['gpl_only']} turned GPL-only, "
                       f"{s['namespace']} changed namespace, {s['added']} added."))
    if fmt == "pretty":
        return _pretty(parts)
    data = u.to_json()
    if rebuilt is not None:
        data["rebuilt"] = rebuilt.to_json()
    return _render(fmt, f"ksymgraph upgrade {u.diff.a} -> {u.diff.b}", parts, data)


def _rebuild_parts(p: RebuildPrediction) -> list[tuple[str, Any]]:
    """The rebuild prediction: one row per break (with the chain that reaches its symbol), then
    the imports the rebuild adds and drops."""
    s = p.summary
    parts: list[tuple[str, Any]] = [("h2", f"Rebuilt against {p.b}'s headers (predicted)")]
    nosrc = [m.module for m in p.modules if not m.source]
    if nosrc:
        parts.append(("p", f"No function of their own in {p.a}'s source for {', '.join(nosrc)}: nothing predicted. "
                           f"Load the module's built tree with the kernel (ksymgraph load ... --source DIR); a "
                           f"file that only includes its code from a header is not followed."))
    with_src = [m for m in p.modules if m.source]
    if not with_src:
        return parts
    rules = ", ".join(f"{n} {rule}" for rule, n in sorted(s["by_rule"].items()))
    parts.append(("p", f"{s['fail']} of {s['with_source']} modules with source would not load once rebuilt"
                       + (f" ({rules})" if rules else "") + f": their own code's calls followed through "
                       f"{p.b}'s header inlines and macros to the symbols it exports."))
    if not p.headers:
        parts.append(("p", f"{p.b} has no headers in the store: only direct calls are followed. Load them: "
                           f"ksymgraph load debian:{p.b} --source debian-headers"))
    parts.append(("table", (["module", "loads", "rule", "symbol", "message", "through"],
                            [[m.module, "no", b.rule, b.symbol, b.message, b.through]
                             for m in with_src for b in m.breaks] +
                            [[m.module, "yes", "", "", "", ""] for m in with_src if m.loads])))
    changed = [(m.module, "+", i.symbol, i.through) for m in with_src for i in m.imports if i.symbol in m.new]
    changed += [(m.module, "-", sym, "") for m in with_src for sym in m.dropped]
    if changed:
        parts.append(("h2", "Imports the rebuild adds (+) and drops (-)"))
        parts.append(("table", (["module", "", "import", "through"], [list(r) for r in sorted(changed)])))
    return parts


def render_rebuild(p: RebuildPrediction, fmt: str = "pretty") -> str:
    """The rebuild prediction on its own."""
    parts = [("h1", f"Rebuild {p.a} -> {p.b}")] + _rebuild_parts(p)
    if fmt == "pretty":
        return _pretty(parts)
    return _render(fmt, f"ksymgraph rebuild {p.a} -> {p.b}", parts, p.to_json())


_TRANSITION_TITLES = {"appeared": "appeared", "vanished": "vanished", "gpl_only": "turned GPL-only",
                      "not_gpl_only": "no longer GPL-only", "namespace": "namespace changed", "owner": "owner changed",
                      "crc": "CRC changed"}


def render_history(h: History, fmt: str = "md") -> str:
    """Export history: the kernels in order, one table per symbol (a row per kernel), then the
    transitions."""
    names = [k.kernel for k in h.kernels]
    parts: list[tuple[str, Any]] = [("h1", f"Export history over {len(names)} kernels: {', '.join(h.states)}")]
    if len(names) == 1:
        parts.append(("p", f"The store holds one kernel ({names[0]}): load more (`ksymgraph load debian:RELEASE`) "
                           "to see what changed between them."))
    flagged = [k.kernel for k in h.kernels if k.placed_by_name]
    if flagged:
        parts.append(("p", f"Version unknown, placed last by name: {', '.join(flagged)}."))
    for sym, close in h.never_exported.items():
        parts.append(("p", f"{sym}: no kernel of the series exports it"
                           + (f"; did you mean {', '.join(close)}?" if close else ".")))
    for sym, states in h.states.items():
        if sym in h.never_exported:
            continue
        parts.append(("h2", sym))
        parts.append(("table", (["kernel", "exported", "owner", "type", "namespace", "CRC", "in-tree importers"],
                                [[s.kernel, "yes" if s.export else "no", s.export.module if s.export else "",
                                  ("EXPORT_SYMBOL_GPL" if s.export.gpl else "EXPORT_SYMBOL") if s.export else "",
                                  s.export.namespace if s.export else "",
                                  f"{s.export.crc:#010x}" if s.export and s.export.crc is not None else "",
                                  s.importers] for s in states])))
    if h.transitions:
        parts.append(("h2", "Transitions"))
        parts.append(("table", (["symbol", "what", "last before", "first after", "detail"],
                                [[t.symbol, _TRANSITION_TITLES[t.kind], t.before, t.after, t.detail]
                                 for t in h.transitions])))
    elif len(names) > 1:
        parts.append(("p", "No transitions: every kernel of the series exports them alike."))
    return _render(fmt, "ksymgraph history", parts, h.to_json())


def render_module_history(h: ModuleHistory, fmt: str = "md") -> str:
    """A module along the series: where each import first stops it loading, and by which rule."""
    names = [k.kernel for k in h.kernels]
    breaking = [s for s in h.steps if s.first_refused]
    loads = [k for k in names if h.loads[k]]
    parts: list[tuple[str, Any]] = [
        ("h1", f"Module {h.module} over {len(names)} kernels"),
        ("p", f"Rebuilt against each, it loads on {len(loads)} of {len(names)}"
              + (f" (last: {loads[-1]})" if loads else "") + f"; {len(breaking)} of its imports stop it somewhere."),
    ]
    if h.binary_refused_from:
        parts.append(("p", f"As built, it is refused from {h.binary_refused_from} on: "
                           + "; ".join(r.message for r in h.binary_reasons[:3])
                           + (" ..." if len(h.binary_reasons) > 3 else "")))
    if breaking:
        parts.append(("table", (["symbol", "first refused", "last loading", "rule", "message"],
                                [[s.symbol or "(module)", s.first_refused, s.last_loading or "", s.rule, s.message]
                                 for s in breaking])))
    return _render(fmt, f"ksymgraph history --module {h.module}", parts, h.to_json())
