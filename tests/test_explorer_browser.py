"""The what-if explorer served by ``ksymgraph explore``, driven in Debian's chromium with Playwright.

``02-whatif-explorer.ipynb``, with its parameters pointing at the hermetic fixture kernel, is served
by ``ksymgraph explore --notebook`` (Voila on 127.0.0.1, with a token and the bounds of
ksymgraph.explorer_server); chromium (``/usr/bin/chromium``, never a downloaded one) opens the URL
it prints, with the token, with every request that is not to 127.0.0.1 aborted and recorded. The
test types a symbol (and sees it completed), picks the change, clicks Run, reads the table rows,
sorts the table by a header, counts the nodes of the ipycytoscape drawing through Cytoscape.js' own
instance, saves a report, and takes a screenshot into the test's tmp directory (its path is
printed; no image is committed). It checks that the page stays within the server's bounds on
widget messages, that leaving the page stops its kernel, and that nothing tried to leave
127.0.0.1: the widgets' JavaScript all comes from the installed packages.
"""

from __future__ import annotations

import os
import re
import socket
import subprocess
import sys
import time
from pathlib import Path
from urllib.parse import urlparse

import nbformat
import pytest

from ksymgraph.explorer_server import ServerLimits

from test_explorer_security import kernel_pids
from test_notebooks import NOTEBOOKS, with_parameters
from test_notebooks import fixture_db  # noqa: F401  (a fixture this module uses)

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
                 "--disable-background-networking", "--disable-component-update", "--disable-sync"]


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _wait_url(proc: subprocess.Popen, log: Path, timeout: float = 90) -> str:
    """The URL ``ksymgraph explore`` prints once it listens."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        found = re.search(r"at (http://127\.0\.0\.1:\d+/\?token=\S+)", log.read_text())
        if found:
            return found.group(1)
        if proc.poll() is not None:
            pytest.fail(f"ksymgraph explore exited with {proc.returncode}:\n{log.read_text()[-3000:]}")
        time.sleep(0.2)
    pytest.fail(f"ksymgraph explore printed no URL within {timeout} s:\n{log.read_text()[-3000:]}")


@pytest.fixture
def voila_app(fixture_db, tmp_path):
    """(URL with the token, save directory, server log, server process) of the explorer notebook
    served by ``ksymgraph explore`` on the fixture kernel."""
    if not Path(CHROMIUM).is_file():
        pytest.fail(f"{CHROMIUM} is missing: apt-get install chromium (.ci/run installs it)")
    pytest.importorskip("voila", reason="pip install voila")
    save_dir = tmp_path / "reports"
    save_dir.mkdir()
    nb = with_parameters(NOTEBOOKS / "02-whatif-explorer.ipynb", {
        "db": str(fixture_db), "kernel": "6.1.0-fixture", "save_dir": str(save_dir)})
    path = tmp_path / "explorer.ipynb"
    nbformat.write(nb, path)
    log = tmp_path / "explore.log"
    with open(log, "w") as out:
        proc = subprocess.Popen(
            [sys.executable, "-m", "ksymgraph", "explore", "--notebook", str(path), f"--port={_free_port()}",
             "--cull-after=600"],  # only the page's own goodbye can stop its kernel within the test
            cwd=tmp_path, stdout=out, stderr=subprocess.STDOUT,
            env={**os.environ, "KSYMGRAPH_EXPLORE_TOKEN": "browser-test-" + os.urandom(8).hex()})
    try:
        yield _wait_url(proc, log), save_dir, log, proc
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


# Cytoscape.js keeps its instance on the container element (``_cyreg.cy``): read the drawing's
# nodes and edges, the canvas size, and whether every node is rendered inside the canvas.
_CY_NODES = """() => {
  const out = [];
  for (const el of document.querySelectorAll('.__________cytoscape_container')) {
    const cy = el._cyreg && el._cyreg.cy;
    if (!cy) continue;
    const w = cy.width(), h = cy.height();
    const inside = cy.nodes().every(n => { const p = n.renderedPosition(); return p.x >= 0 && p.x <= w && p.y >= 0 && p.y <= h; });
    out.push({ids: cy.nodes().map(n => n.id()).sort(), edges: cy.edges().map(e => e.id()).sort(), width: w, height: h, inside: inside});
  }
  return out;
}"""


def test_explorer_in_chromium(voila_app, tmp_path):
    from playwright.sync_api import sync_playwright

    url, save_dir, log, server = voila_app
    assert re.fullmatch(r"http://127\.0\.0\.1:\d+/\?token=browser-test-[0-9a-f]{16}", url)
    outside: list[str] = []
    sent: list[int] = []  # sizes of the widget messages the page sends its kernel
    sockets: list[str] = []  # the kernel websockets the page opens

    def only_localhost(route):
        host = urlparse(route.request.url).hostname
        if host == "127.0.0.1":
            route.continue_()
        else:
            outside.append(route.request.url)
            route.abort()

    with sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS, headless=True)
        try:
            page = browser.new_page(viewport={"width": 1280, "height": 1000})
            page.route("**/*", only_localhost)
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))

            def watch(ws):
                if "/channels" in ws.url:
                    sockets.append(ws.url)
                    ws.on("framesent", lambda payload: sent.append(len(payload)))

            page.on("websocket", watch)
            page.goto(url, timeout=120_000)
            symbol = page.locator("input.widget-input[list]")  # ipywidgets renders a Combobox as <input list=...>
            symbol.wait_for(timeout=120_000)

            # Completion: typing "a_p" offers a_plain (options come from the kernel as you type).
            symbol.click()
            symbol.press_sequentially("a_p", delay=50)
            page.wait_for_function(
                "() => Array.from(document.querySelectorAll('datalist option')).some(o => o.value === 'a_plain')",
                timeout=30_000)
            options = page.eval_on_selector_all("datalist option", "os => os.map(o => o.value)")
            assert "a_plain" in options and all("a_p" in o for o in options)

            symbol.fill("a_plain")
            page.get_by_role("button", name="GPL-only").click()
            page.get_by_role("button", name="unexport").click()
            page.get_by_role("button", name="Run").click()
            page.wait_for_selector(".ksymgraph-summary", timeout=60_000)
            summary = page.inner_text(".ksymgraph-summary")
            assert "3 modules fail to load: 2 directly, 1 through a failing dependency" in summary

            rows = page.eval_on_selector_all(
                "table.ksymgraph-table tbody tr", "trs => trs.map(tr => Array.from(tr.cells).map(c => c.textContent))")
            by_module = {r[0]: (r[1], r[2], r[3]) for r in rows}
            assert by_module == {
                "prop_d": ("unknown-symbol", "a_plain", "direct"),
                "user_b": ("unknown-symbol", "a_plain", "direct"),
                "user_c": ("dependency", "b_fn", "via user_b"),
            }
            assert [r[0] for r in rows] == ["prop_d", "user_b", "user_c"]  # direct first, then by name

            # Sortable: clicking "module" sorts ascending, clicking again descending.
            header = page.locator("table.ksymgraph-table th", has_text="module")
            header.click()
            header.click()
            col = page.eval_on_selector_all("table.ksymgraph-table tbody tr", "trs => trs.map(tr => tr.cells[0].textContent)")
            assert col == ["user_c", "user_b", "prop_d"]
            page.locator("table.ksymgraph-table th", has_text="break").click()
            col = page.eval_on_selector_all("table.ksymgraph-table tbody tr", "trs => trs.map(tr => tr.cells[3].textContent)")
            assert col == sorted(col) and col[-1] == "via user_b"

            # The drawing: ipycytoscape's Cytoscape.js instance holds the three broken modules.
            page.wait_for_function(f"() => ({_CY_NODES})().some(c => c.ids.length === 3)", timeout=30_000)
            drawn = page.evaluate(_CY_NODES)
            assert len(drawn) == 1 and drawn[0]["ids"] == ["prop_d", "user_b", "user_c"]
            assert drawn[0]["edges"] == ["user_c->user_b"]
            # ... and they are drawn: a canvas with a size, every node inside it.
            assert drawn[0]["width"] > 100 and drawn[0]["height"] > 100 and drawn[0]["inside"] is True

            # The bar chart by subsystem is an image; saving writes the report into the notebook's save_dir.
            page.wait_for_function("() => { const i = document.querySelector('img.widget-image');"
                                   " return i && i.complete && i.naturalWidth > 100; }", timeout=20_000)
            page.get_by_role("button", name="save .md").click()
            page.wait_for_function("() => document.body.innerText.includes('saved ')", timeout=10_000)
            said = page.locator("code", has_text=".md").inner_text()
            saved = list(save_dir.glob("*.md"))
            assert [str(p) for p in saved] == [said]
            assert "user_c" in saved[0].read_text()
            shot = tmp_path / "explorer.png"
            page.screenshot(path=str(shot), full_page=True)
            print(f"\nscreenshot: {shot}")
            assert not errors, errors

            # The page works within the server's bounds on widget messages: one websocket, fewer
            # messages than a burst, none near the size bound; the server closed nothing.
            limits = ServerLimits()
            assert len(sockets) == 1, sockets
            assert 0 < len(sent) < limits.message_burst and max(sent) < limits.max_message_bytes / 4
            assert "closing the websocket" not in log.read_text()
            print(f"the page sent {len(sent)} widget messages, {sum(sent)} bytes, at most {max(sent)}")

            # Leaving the page stops its kernel: the page sends a beacon as it unloads
            # (voila/api/shutdown, with its _xsrf cookie). Playwright holds a beacon of an unloading
            # page at a route until the browser closes, so the route makes way for a watcher.
            assert len(kernel_pids(server.pid)) == 1
            page.unroute("**/*")
            page.on("request", lambda r: None if urlparse(r.url).hostname in ("127.0.0.1", None)
                    else outside.append(r.url))
            page.goto("about:blank")
            left = time.monotonic()
            while kernel_pids(server.pid) and time.monotonic() < left + 20:
                page.wait_for_timeout(200)
            assert kernel_pids(server.pid) == [], log.read_text()[-2000:]
            assert "Kernel shutdown" in log.read_text() and "Culling 'idle' kernel" not in log.read_text()
            print(f"the kernel stopped {time.monotonic() - left:.1f} s after the page went")
        finally:
            browser.close()
    assert outside == [], f"requests that tried to leave 127.0.0.1: {outside}"
