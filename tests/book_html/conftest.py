"""The book as a reader gets it: the executed notebooks, the strict HTML build, the browser.

`make test` runs one pytest session over `tests/` and the notebooks of the staged copy
`build/executed/book` (see `stage.py`): nbmake executes each notebook there once, in place;
the tests in this folder then build the HTML from those executed notebooks without executing
anything again, and check it in Debian's Chromium. The hooks below put this folder's tests
after the notebooks, and print the time each notebook took.
"""

from __future__ import annotations

import functools
import http.server
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from .common import CHROMIUM, CHROMIUM_ARGS, HTML, ROOT, STAGED

HERE = Path(__file__).resolve().parent


# --- ordering and timing --------------------------------------------------------------------


def _in_this_folder(item) -> bool:
    return HERE in Path(str(item.fspath)).resolve().parents


def pytest_collection_modifyitems(session, config, items):
    """Unit tests first, then the notebooks (nbmake), then the build and browser tests here."""

    def rank(item):
        if getattr(item, "nbmake", False):
            return 1
        return 2 if _in_this_folder(item) else 0

    items.sort(key=rank)  # stable: each group keeps its own order


def pytest_terminal_summary(terminalreporter):
    """The time each notebook took, read from the session's reports (nbmake items live outside
    this folder, so a path-scoped hook here would not see them)."""
    tr = terminalreporter
    times = {}
    for outcome, reports in tr.stats.items():
        for report in reports:
            if getattr(report, "when", None) == "call" and str(
                getattr(report, "nodeid", "")
            ).endswith(".ipynb"):
                times[report.nodeid] = (report.duration, outcome)
    if not times:
        return
    tr.section("time per notebook (each executed once)")
    for nodeid, (seconds, outcome) in times.items():
        tr.write_line(f"{seconds:8.1f} s  {outcome:7s}  {nodeid}")
    tr.write_line(f"{sum(s for s, _ in times.values()):8.1f} s  in all")


# --- fixtures ---------------------------------------------------------------------------------


@pytest.fixture(scope="session")
def staged() -> Path:
    if not (STAGED / "_config.yml").exists():
        pytest.skip(
            "no staged book: `make test` stages and executes it (tests/book_html/stage.py, then nbmake)"
        )
    return STAGED


@pytest.fixture(scope="session")
def built_book(staged) -> subprocess.CompletedProcess:
    """The strict build of the executed copy: `-W -n --keep-going`, execution off, into `_build/html`."""
    jb = Path(sys.executable).with_name("jupyter-book")
    cmd = [
        str(jb),
        "build",
        str(staged),
        "--path-output",
        str(ROOT),
        "--builder",
        "html",
        "-W",
        "-n",
        "--keep-going",
        "--all",
    ]
    result = subprocess.run(cmd, capture_output=True, text=True, cwd=ROOT)
    (ROOT / "_build").mkdir(exist_ok=True)
    (ROOT / "_build" / "strict-build.log").write_text(result.stdout + result.stderr)
    return result


@pytest.fixture(scope="session")
def site(built_book):
    """`_build/html` served on 127.0.0.1 (a free port) for the length of the session."""
    if not (HTML / "index.html").exists():
        pytest.fail(
            f"the build wrote no {HTML / 'index.html'}; see _build/strict-build.log"
        )

    class Quiet(http.server.SimpleHTTPRequestHandler):
        def log_message(self, *args):
            pass

    class Server(http.server.ThreadingHTTPServer):
        def handle_error(self, request, client_address):
            if not isinstance(
                sys.exc_info()[1], ConnectionError
            ):  # the browser hung up: fine
                super().handle_error(request, client_address)

    server = Server(("127.0.0.1", 0), functools.partial(Quiet, directory=str(HTML)))
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()
    server.server_close()


@pytest.fixture(scope="session")
def browser():
    """Debian's Chromium, headless, driven by Playwright; never a browser Playwright downloads.
    Playwright starts it with a fresh, empty profile directory of its own."""
    if not Path(CHROMIUM).exists():
        pytest.fail(
            f"{CHROMIUM} is missing: `apt-get install chromium` (make test does it)"
        )
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        browser = p.chromium.launch(
            executable_path=CHROMIUM, headless=True, args=CHROMIUM_ARGS
        )
        yield browser
        browser.close()
