"""The kernel's load rules (queries/loadrules.py) on hand-made kernels, one rule at a time, and the
fixpoint against a plain reference implementation, over permutations of the modules.

The hand-made kernels are projections: the same records the stores give, so each rule is tested on
exactly the inputs that decide it. tests/test_cli_rules.py runs the same rules end to end on
gcc-built modules; tests/test_realdata_rules.py on Debian's kernels against depmod.
"""

from __future__ import annotations

import random

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from ksymgraph.graph.projection import ExportEdge, ImportEdge, KernelProjection, ModuleNode
from ksymgraph.loaders.records import BuildOptions
from ksymgraph.queries.loadrules import RULES, LoadRules, module_namespace_admits
from ksymgraph.queries.whatif import failing_modules, parse_changes, what_if

VERMAGIC = "6.1.0-50-amd64 SMP preempt mod_unload modversions "
MODVERSIONS = BuildOptions(VERMAGIC, True, True, False, "config-6.1.0-50-amd64")


def module(name, *, license="GPL", intree=True, ns=(), vermagic=VERMAGIC, modversions=True, layout=None):
    return ModuleNode(name, f"/lib/modules/k/{name.replace('_', '-')}.ko", license,
                      license in ("GPL", "GPL v2", "Dual BSD/GPL"), intree, frozenset(ns), vermagic, modversions,
                      layout)


def kernel(mods, exports, imports, build=MODVERSIONS, version="6.1.176-1"):
    """``exports``: {symbol: [(module, gpl, namespace, crc)]}; ``imports``: {module: [(symbol, crc)]}"""
    proj = KernelProjection("k", version, build)
    proj.modules["vmlinux"] = ModuleNode("vmlinux", "", "GPL", True, True, frozenset())
    for m in mods:
        proj.modules[m.name] = m
    for sym, edges in exports.items():
        proj.exports[sym] = [ExportEdge(*e) for e in edges]
    for mod, imps in imports.items():
        proj.imports[mod] = [ImportEdge(s, False, c) for s, c in imps]
    return proj


def reasons(proj):
    return {m: {(r.rule, r.symbol, r.via_module) for r in rs} for m, rs in failing_modules(proj).items()}


def messages(proj, mod):
    return [r.message for r in failing_modules(proj)[mod]]


# modversions ------------------------------------------------------------------------------------

def test_crc_mismatch_is_refused_with_the_kernels_words():
    proj = kernel([module("zram")], {"kfree": [("vmlinux", False, "", 0x1234)], "vfree": [("vmlinux", False, "", 7)]},
                  {"zram": [("kfree", 0x9999), ("vfree", 7)]})
    assert reasons(proj) == {"zram": {("modversions", "kfree", None)}}
    assert messages(proj, "zram") == ["zram: disagrees about version of symbol kfree"]


def test_symbol_missing_from_versions_only_warns():
    # check_version(): "no symbol version for X", then the module loads.
    proj = kernel([module("zram")], {"kfree": [("vmlinux", False, "", 0x1234)]}, {"zram": [("kfree", None)]})
    assert reasons(proj) == {}


def test_no_versions_at_all_needs_force_load():
    mods = [module("oot", intree=False, modversions=False, vermagic="6.1.0-50-amd64 SMP preempt mod_unload modversions ")]
    exports = {"kfree": [("vmlinux", False, "", 0x1234)]}
    forced = kernel(mods, exports, {"oot": [("kfree", None)]})
    assert reasons(forced) == {}  # CONFIG_MODULE_FORCE_LOAD=y: loads tainted (Debian's setting)
    strict = kernel(mods, exports, {"oot": [("kfree", None)]}, MODVERSIONS._replace(force_load=False))
    assert reasons(strict) == {"oot": {("modversions", "kfree", None)}}
    assert messages(strict, "oot") == ["oot: Unknown symbol kfree (err -22)"]


def test_kernel_without_modversions_checks_no_crc():
    # Debian's 7.2: built without CONFIG_MODVERSIONS, every CRC unknown.
    build = BuildOptions("7.2.13+deb14-amd64 SMP preempt mod_unload ", False, True, False, "config")
    proj = kernel([module("m", vermagic="7.2.13+deb14-amd64 SMP preempt mod_unload ", modversions=False)],
                  {"kfree": [("vmlinux", False, "", None)]}, {"m": [("kfree", 0x9999)]}, build)
    assert reasons(proj) == {}


def test_module_layout_is_checked_first():
    exports = {"module_layout": [("vmlinux", False, "", 0xabc)], "kfree": [("vmlinux", False, "", 1)]}
    proj = kernel([module("m", layout=0xdef), module("ok", layout=0xabc)], exports,
                  {"m": [("kfree", 1)], "ok": [("kfree", 1)]})
    assert reasons(proj) == {"m": {("modversions", "module_layout", None)}}
    assert messages(proj, "m") == ["m: disagrees about version of symbol module_layout"]


# vermagic ---------------------------------------------------------------------------------------

def test_vermagic_release_skipped_when_both_have_crcs():
    # -47's module on the -50 kernel: the release differs, the rest is the same: it passes.
    proj = kernel([module("zram", vermagic="6.1.0-47-amd64 SMP preempt mod_unload modversions ")], {}, {})
    assert reasons(proj) == {}


def test_vermagic_of_another_preempt_model_is_refused():
    rt = "6.1.0-50-rt-amd64 SMP preempt_rt mod_unload modversions "
    proj = kernel([module("zram", vermagic=rt)], {}, {})
    assert reasons(proj) == {"zram": {("vermagic", "", None)}}
    assert messages(proj, "zram") == [f"zram: version magic '{rt}' should be '{VERMAGIC}'"]


def test_vermagic_compared_whole_without_modversions():
    build = BuildOptions("7.2.13+deb14-amd64 SMP preempt mod_unload ", False, True, False, "config")
    proj = kernel([module("a", vermagic="7.2.12+deb14-amd64 SMP preempt mod_unload ", modversions=False),
                   module("b", vermagic="7.2.13+deb14-amd64 SMP preempt mod_unload ", modversions=False)], {}, {},
                  build)
    assert reasons(proj) == {"a": {("vermagic", "", None)}}


def test_module_built_without_modversions_on_a_modversions_kernel():
    # same_magic() compares the whole string when the module has no CRCs: "modversions" is missing.
    proj = kernel([module("oot", intree=False, modversions=False, vermagic="6.1.0-50-amd64 SMP preempt mod_unload ")],
                  {}, {})
    assert reasons(proj) == {"oot": {("vermagic", "", None)}}


def test_missing_vermagic_needs_force_load():
    assert reasons(kernel([module("m", vermagic="")], {}, {})) == {}
    strict = kernel([module("m", vermagic="")], {}, {}, MODVERSIONS._replace(force_load=False))
    assert reasons(strict) == {"m": {("vermagic", "", None)}}


def test_unknown_kernel_vermagic_checks_nothing():
    proj = kernel([module("m", vermagic="whatever")], {}, {}, BuildOptions.unknown())
    assert reasons(proj) == {}


# module: namespaces -----------------------------------------------------------------------------

@pytest.mark.parametrize("namespace, module, admitted", [
    ("module:kvm,kvm-amd,kvm-intel", "kvm", True),
    ("module:kvm,kvm-amd,kvm-intel", "kvm_amd", True),  # - and _ are equal
    ("module:kvm,kvm-amd,kvm-intel", "kvm_intel", True),
    ("module:kvm,kvm-amd,kvm-intel", "kvm2", False),
    ("module:kvm,kvm-amd,kvm-intel", "kv", False),
    ("module:kvm-*", "kvm_amd", True),  # trailing glob
    ("module:kvm-*", "kvm", False),
    ("module:cxl_*,btrfs", "cxl_pmem", True),
    ("module:cxl_*,btrfs", "btrfs", True),
    ("KVM", "kvm", False),  # an ordinary namespace names no module
])
def test_module_namespace_patterns(namespace, module, admitted):
    assert module_namespace_admits(namespace, module) is admitted


def test_module_namespace_needs_no_import_and_admits_in_tree_modules_only():
    ns = "module:kvm,kvm-amd,kvm-intel"
    exports = {"write_ibpb": [("vmlinux", True, ns, None)]}
    proj = kernel([module("kvm_amd"), module("kvm_intel", intree=False), module("other")], exports,
                  {"kvm_amd": [("write_ibpb", None)], "kvm_intel": [("write_ibpb", None)],
                   "other": [("write_ibpb", None)]})
    assert reasons(proj) == {"kvm_intel": {("namespace", "write_ibpb", None)},
                             "other": {("namespace", "write_ibpb", None)}}
    assert messages(proj, "other") == [f"module other uses symbol write_ibpb from namespace {ns}, but does not import it."]


def test_importing_a_module_namespace_is_refused():
    proj = kernel([module("m", ns=("module:kvm",))], {}, {})
    assert messages(proj, "m") == ["m: module tries to import module namespace: module:kvm"]


def test_missing_namespace_import_allowed_by_config():
    exports = {"usb_x": [("vmlinux", False, "USB", None)]}
    strict = kernel([module("m")], exports, {"m": [("usb_x", None)]})
    assert reasons(strict) == {"m": {("namespace", "usb_x", None)}}
    lax = kernel([module("m")], exports, {"m": [("usb_x", None)]}, MODVERSIONS._replace(missing_ns_allowed=True))
    assert reasons(lax) == {}


# GPL --------------------------------------------------------------------------------------------

def test_gpl_module_may_not_mix_gpl_symbols_with_a_proprietary_exporter():
    # inherit_taint(): "module using GPL-only symbols uses symbols X from proprietary module Y."
    exports = {"kfree": [("vmlinux", True, "", None)], "blob_fn": [("blob", False, "", None)]}
    proj = kernel([module("blob", license="Proprietary", intree=False), module("shim")], exports,
                  {"shim": [("kfree", None), ("blob_fn", None)], "blob": []})
    assert messages(proj, "shim") == ["shim: module using GPL-only symbols uses symbols blob_fn from proprietary "
                                      "module blob."]


# every reason, whatever the order ----------------------------------------------------------------

def test_every_reason_of_every_broken_module_is_collected():
    # The case: unexport usb_register_driver (usbserial fails) and move
    # usb_serial_register_drivers into a namespace: every importer has both reasons.
    exports = {"usb_register_driver": [("vmlinux", True, "", None)],
               "usb_serial_register_drivers": [("usbserial", True, "", None)]}
    users = [f"drv{i:02d}" for i in range(51)]
    imports = {"usbserial": [("usb_register_driver", None)], **{u: [("usb_serial_register_drivers", None)] for u in users}}
    proj = kernel([module("usbserial"), *map(module, users)], exports, imports)
    r = what_if(proj, parse_changes(unexport=["usb_register_driver"],
                                    namespace=["usb_serial_register_drivers=USB_SERIAL"]))
    by = {b.module: {(x.rule, x.symbol, x.via_module) for x in b.reasons} for b in r.broken}
    assert len(by) == 52
    for u in users:
        assert by[u] == {("namespace", "usb_serial_register_drivers", None),
                         ("dependency", "usb_serial_register_drivers", "usbserial")}
    assert r.summary["by_rule"] == {"unknown-symbol": 1, "namespace": 51, "dependency": 51}


def _reference_failing(proj, exports):
    """The least fixpoint the slow way: re-check every module until nothing changes."""
    rules = LoadRules(proj, exports)
    failed: set[str] = set()
    while True:
        now = {m for m in proj.modules if rules.reasons(m, failed)}
        if now <= failed:
            return {m: {tuple(r) for r in rules.reasons(m, failed)} for m in failed}
        failed |= now


kernels = st.builds(
    lambda seed, n: seed_kernel(seed, n), st.integers(0, 10_000), st.integers(2, 14))


def seed_kernel(seed: int, n: int):
    rnd = random.Random(seed)
    names = [f"m{i}" for i in range(n)]
    namespaces = ["", "", "", "NS1", "module:m1,m2*"]
    mods = [module(nm, license=rnd.choice(["GPL", "GPL", "Proprietary"]), intree=rnd.random() < 0.8,
                   ns=tuple(rnd.sample(["NS1", "module:m1"], rnd.randint(0, 1))),
                   vermagic=rnd.choice([VERMAGIC, VERMAGIC, "6.1.0-50-amd64 SMP preempt_rt mod_unload modversions "]))
            for nm in names]
    symbols = [f"s{i}" for i in range(2 * n)]
    exports = {}
    for s in symbols:
        owners = rnd.sample(["vmlinux", *names], rnd.choice([0, 1, 1, 1, 2]))
        exports[s] = [(o, rnd.random() < 0.3, rnd.choice(namespaces), rnd.choice([1, 1, 2])) for o in owners]
    imports = {nm: [(s, rnd.choice([1, 1, None, 2])) for s in rnd.sample(symbols, rnd.randint(0, 4))] for nm in names}
    return mods, exports, imports


def _permuted(spec, rnd):
    mods, exports, imports = spec
    mods = rnd.sample(mods, len(mods))
    exports = {s: rnd.sample(e, len(e)) for s, e in rnd.sample(list(exports.items()), len(exports))}
    imports = {m: rnd.sample(i, len(i)) for m, i in rnd.sample(list(imports.items()), len(imports))}
    return kernel(mods, exports, imports)


@settings(max_examples=300, deadline=None)
@given(kernels, st.integers(0, 1000), st.integers(0, 3))
def test_fixpoint_matches_reference_and_ignores_module_order(spec, perm_seed, unexport):
    a = kernel(*spec)
    b = _permuted(spec, random.Random(perm_seed))
    assert {m: {tuple(r) for r in rs} for m, rs in failing_modules(a).items()} == _reference_failing(a, a.exports)
    assert failing_modules(a) == failing_modules(b)
    changes = parse_changes(unexport=[f"s{unexport}"], gpl_only=["s1"], namespace=["s2=NS2"])
    ra, rb = what_if(a, changes), what_if(b, changes)
    assert ra.broken == rb.broken and ra.summary == rb.summary and ra.already_broken == rb.already_broken
    for br in ra.broken:
        assert all(r.rule in RULES for r in br.reasons)


def test_build_options_from_config_and_inferred(tmp_path):
    """graph/kernel_build.py: the options from a .config, inferred without one, and its notes."""
    from ksymgraph.graph.kernel_build import build_options, vermagic_from_config
    from ksymgraph.loaders.records import Export, Imports, ModuleData, ModuleInfo
    from ksymgraph.loaders.symvers import SymversEntry

    def entry(sym, crc):
        return SymversEntry(Export("vmlinux", sym, False, "", crc), "vmlinux")

    mod = ModuleData(ModuleInfo("m", "/m.ko", "GPL", VERMAGIC, "", True, (), (), True, None), [],
                     Imports([], [], []))
    config = tmp_path / "config-6.1.0-50-amd64"
    config.write_text("CONFIG_SMP=y\nCONFIG_PREEMPT_BUILD=y\nCONFIG_MODULE_UNLOAD=y\nCONFIG_MODVERSIONS=y\n"
                      "CONFIG_MODULE_FORCE_LOAD=y\n# CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS is not set\n")
    assert vermagic_from_config("6.1.0-50-amd64", {"CONFIG_SMP": "y", "CONFIG_PREEMPT_BUILD": "y",
                                                   "CONFIG_MODULE_UNLOAD": "y", "CONFIG_MODVERSIONS": "y"}) == VERMAGIC
    b, notes = build_options(config, [mod], [entry("kfree", 0x1234), entry("x", 0)], "6.1.0-50-amd64", "amd64")
    assert b == BuildOptions(VERMAGIC, True, True, False, "config-6.1.0-50-amd64")
    assert notes == ["1 of 2 vmlinux exports in Module.symvers have CRC 0x00000000 (not versioned by genksyms); "
                     "their imports are checked against 0 as the kernel does"]
    # no .config: modversions from the CRCs, the rest the kernel's default, said so
    b, notes = build_options(None, [mod], [entry("kfree", 0)], "k", "amd64")
    assert b == BuildOptions(VERMAGIC, False, None, None, "inferred from 1 modules (no .config)")
    assert notes[0].startswith("no .config for kernel k: CONFIG_MODULE_FORCE_LOAD, "
                               "CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS taken as the kernel's default (n)")
    # an unreadable .config: said, and the options inferred instead
    b, notes = build_options(tmp_path / "missing-config", [mod], [], "k", "amd64")
    assert "cannot read the kernel's .config" in notes[0] and b.source.startswith("inferred")
