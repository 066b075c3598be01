"""How a kernel was built, as far as its load rules care: from its ``.config``, else from its modules.

The kernel decides whether a module loads with a few options of its own build
(``kernel/module/main.c``, ``kernel/module/version.c``):

* ``CONFIG_MODVERSIONS``: every export carries a CRC, and each import's CRC in the module's
  ``__versions`` must equal it;
* ``CONFIG_MODULE_FORCE_LOAD``: a module with no ``vermagic``, or no ``__versions`` at all (what
  ``modprobe --force`` leaves), loads with a taint instead of being refused;
* ``CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS``: a missing ``MODULE_IMPORT_NS`` is a warning;
* ``VERMAGIC_STRING`` (include/linux/vermagic.h), which every module's ``vermagic`` is compared
  with.

Debian ships the ``.config`` (``/boot/config-RELEASE`` in the image, ``usr/lib/modules/RELEASE/config``
from 7.x, ``.config`` in the headers). Without one, :func:`build_options` infers what the data
shows: the vermagic every in-tree module carries (it is ``VERMAGIC_STRING`` itself), modversions
from Module.symvers (all CRCs 0 means none, as Debian's 7.2 shows) or from the modules'
``__versions``. Options it cannot infer stay None, and the rules take the kernel's default (n);
the notes say so, for the load summary.
"""

from __future__ import annotations

from collections import Counter
from pathlib import Path
from typing import Iterable

from ..loaders.kbuild import read_config
from ..loaders.records import BuildOptions, LoaderError, ModuleData
from ..loaders.symvers import SymversEntry

__all__ = ["build_options", "vermagic_from_config", "vermagic_flags"]


def vermagic_flags(vermagic: str) -> str:
    """The part of a vermagic after the release (``SMP preempt mod_unload modversions ``): what
    ``same_magic()`` compares when the module carries CRCs."""
    return vermagic[len(vermagic.split(" ", 1)[0]):]


def vermagic_from_config(release: str, config: dict[str, str]) -> str:
    """``VERMAGIC_STRING`` as include/linux/vermagic.h makes it from a ``.config`` (x86_64, where
    ``MODULE_ARCH_VERMAGIC`` is empty): release, then ``SMP``, the preempt model, ``mod_unload``,
    ``modversions``, each followed by a blank."""
    def on(option: str) -> bool:
        return config.get(option) == "y"

    parts = [release]
    if on("CONFIG_SMP"):
        parts.append("SMP")
    # 6.1: PREEMPT_BUILD -> "preempt", else PREEMPT_RT -> "preempt_rt"; before 5.16 CONFIG_PREEMPT.
    if on("CONFIG_PREEMPT_BUILD") or (on("CONFIG_PREEMPT") and not on("CONFIG_PREEMPT_RT")):
        parts.append("preempt")
    elif on("CONFIG_PREEMPT_RT"):
        parts.append("preempt_rt")
    if on("CONFIG_MODULE_UNLOAD"):
        parts.append("mod_unload")
    if on("CONFIG_MODVERSIONS"):
        parts.append("modversions")
    return " ".join(parts) + " "


def _intree_vermagic(modules: list[ModuleData]) -> tuple[str, int, int]:
    """The vermagic most in-tree modules carry, how many carry it, and how many carry another."""
    counts = Counter(m.info.vermagic for m in modules if m.info.intree and m.info.vermagic)
    if not counts:
        return "", 0, 0
    (magic, n), = counts.most_common(1)
    return magic, n, sum(counts.values()) - n


def build_options(config_path: str | Path | None, modules: Iterable[ModuleData],
                  symvers: Iterable[SymversEntry], release: str, arch: str = "") -> tuple[BuildOptions, list[str]]:
    """The build options of one kernel, and notes on what could not be read or inferred and why.

    ``config_path`` is its ``.config`` (None when no source provided one); ``modules`` and
    ``symvers`` what was read of it.
    """
    modules = list(modules)
    notes: list[str] = []
    config: dict[str, str] | None = None
    if config_path is not None:
        try:
            config = read_config(config_path)
        except LoaderError as e:
            notes.append(f"{config_path}: cannot read the kernel's .config ({e.reason}); "
                         "its build options are inferred from its modules instead")
    magic, agree, other = _intree_vermagic(modules)
    if other:
        notes.append(f"in-tree modules disagree on vermagic: {agree} carry {magic!r}, {other} another")
    crcs = [e.export.crc for e in symvers if e.export.module == "vmlinux"]
    if config is not None:
        modversions = config.get("CONFIG_MODVERSIONS") == "y"
        force = config.get("CONFIG_MODULE_FORCE_LOAD") == "y"
        missing_ns = config.get("CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS") == "y"
        if not magic and arch in ("amd64", "x86_64", ""):
            magic = vermagic_from_config(release, config)
        elif magic and arch in ("amd64", "x86_64") and vermagic_flags(magic) != vermagic_flags(
                vermagic_from_config(release, config)):
            notes.append(f"the in-tree modules' vermagic {magic!r} does not match what {Path(config_path).name} "
                         f"gives ({vermagic_from_config(release, config)!r}); the modules' is used")
        if modversions and crcs and not any(crcs):
            notes.append(f"{Path(config_path).name} has CONFIG_MODVERSIONS=y but every CRC in Module.symvers is 0")
        else:
            notes += _mixed_crcs(modversions, crcs)
        return BuildOptions(magic, modversions, force, missing_ns, Path(config_path).name), notes

    # No .config: what the data shows.
    if crcs:
        modversions = any(crcs)
        how = "Module.symvers CRCs"
    elif any(m.info.intree for m in modules):
        modversions = any(m.info.modversions for m in modules if m.info.intree)
        how = "the in-tree modules' __versions"
    else:
        modversions = None
        how = ""
    notes += _mixed_crcs(modversions, crcs)
    missing = ["CONFIG_MODULE_FORCE_LOAD", "CONFIG_MODULE_ALLOW_MISSING_NAMESPACE_IMPORTS"]
    if modversions is None:
        missing.insert(0, "CONFIG_MODVERSIONS")
    notes.append(f"no .config for kernel {release}: {', '.join(missing)} taken as the kernel's default (n)"
                 + (f"; modversions {'on' if modversions else 'off'}, from {how}" if how else "")
                 + ("" if magic else "; no vermagic known, so vermagic is not checked"))
    source = f"inferred from {len(modules)} modules (no .config)"
    return BuildOptions(magic, modversions, None, None, source), notes


def _mixed_crcs(modversions: bool | None, crcs: list[int | None]) -> list[str]:
    """A note when some, not all, of vmlinux's CRCs are 0 on a kernel with modversions: genksyms
    could not version those exports (modpost: "version generation failed"), and the kernel compares
    the 0 as it stands (a module built against it recorded 0 too)."""
    zero = sum(1 for c in crcs if not c)
    if not modversions or not zero or zero == len(crcs):
        return []
    return [f"{zero} of {len(crcs)} vmlinux exports in Module.symvers have CRC 0x00000000 (not versioned by "
            "genksyms); their imports are checked against 0 as the kernel does"]
