"""Loading a series of Debian kernels (issue 13, point 3): every kernel a suite carries that the
store lacks, a line per kernel, a summary; one that fails is reported and the others still load.

Real data: the two ``6.12.?3+deb12-amd64`` kernels of bookworm-backports (6.12.43 and 6.12.73),
fetched with apt-get into the cache. The failure of one kernel is made by raising the loader's own
error for it (what a download that fails or a package without modules raises); the other kernel
and the store are real.
"""

from __future__ import annotations

import pytest

from ksymgraph.errors import KsymgraphError
from ksymgraph.graph import load as load_mod
from ksymgraph.graph.connect import open_store
from ksymgraph.loaders.records import LoaderError

pytestmark = pytest.mark.realdata

SERIES = "debian:6.12.?3+deb12-amd64@bookworm-backports"


def test_a_series_loads_what_the_store_lacks_and_survives_a_failed_kernel(tmp_path, monkeypatch):
    from ksymgraph.loaders.kernel import series_releases

    releases = series_releases(SERIES)
    assert [r for r, _ in releases] == ["6.12.43+deb12-amd64", "6.12.73+deb12-amd64"]
    assert {s for _, s in releases} == {"bookworm-backports"}
    first, second = releases[0][0], releases[1][0]

    real_load = load_mod.load_kernel

    def failing_first(store, sources, **kw):
        if sources == [f"debian:{first}@bookworm-backports"]:
            raise LoaderError(sources[0], "the download failed (made to fail by the test)")
        return real_load(store, sources, **kw)

    lines: list[str] = []
    db = tmp_path / "graph.lbdb"
    monkeypatch.setattr(load_mod, "load_kernel", failing_first)
    with open_store(db) as store:
        s = load_mod.load_series(store, SERIES, announce=lines.append)
        assert store.kernels() == [second]
    assert [k.kernel for k in s.loaded] == [second] and s.present == []
    assert [k for k, _ in s.failed] == [first] and "download failed" in s.failed[0][1]
    assert lines[0] == f"[1/2] {first} (bookworm-backports) ..."
    assert lines[1].startswith(f"[1/2] {first}: failed: ")
    assert lines[3].startswith(f"[2/2] {second}: ") and " modules, " in lines[3]

    # Again, without the failure: the missing kernel loads, the present one is left alone, and
    # every export the load counted is in the store.
    monkeypatch.setattr(load_mod, "load_kernel", real_load)
    with open_store(db) as store:
        s = load_mod.load_series(store, SERIES)
        assert sorted(store.kernels()) == sorted([first, second])
        stored = {r[0] for r in store.query(
            "MATCH (m:Module)-[:EXPORTS]->(s:Symbol) WHERE m.kernel = $k RETURN s.name", {"k": first}).rows}
    assert [k.kernel for k in s.loaded] == [first] and s.present == [second] and s.failed == []
    assert len(stored) == s.loaded[0].report.exports


def test_a_series_that_matches_nothing_says_where_to_look():
    from ksymgraph.loaders.kernel import series_releases

    with pytest.raises(KsymgraphError, match=r"no kernel in bookworm-backports matches '9\.\*'.*kernels --available"):
        series_releases("debian:9.*@bookworm-backports")
