"""The built HTML in a real browser: Debian's Chromium, headless, driven by Playwright.

Every page of `_toc.yml` is opened from `_build/html` served on 127.0.0.1. The machine is
offline, and a reader may be too: requests that leave 127.0.0.1 are answered at once with
`net::ERR_NAME_NOT_RESOLVED`, exactly as without a network. Only the scripts named in
`ALLOWED_HOSTS` may try; the console may show only the messages in `ALLOWED_CONSOLE`. A page must
show its content without them: every figure is a local image that loads, and every formula is
typeset by the MathJax copy the book serves itself (`make mathjax`, `mathjax_path`).
A full-page screenshot of every page is saved under `_build/screenshots/`.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlparse

import nbformat
import pytest
import yaml

from .common import ROOT, SCREENSHOTS, chapters, toc_pages

PAGES = toc_pages()
CHAPTERS = chapters()

# Hosts a page may try to reach. None: the explorers are the book's own HTML and
# script (vitbook/frames.py), no widget manager is loaded (_config.yml), MathJax is
# served from _static, and the progress bars are text.
ALLOWED_HOSTS: set[str] = set()
ALLOWED_CONSOLE = [
    # a script from ALLOWED_HOSTS that could not be fetched (the page's `location` says which)
    re.compile(r"^Failed to load resource: net::ERR_NAME_NOT_RESOLVED$"),
    # pydata-sphinx-theme, on a fresh profile with no stored light/dark choice
    re.compile(r"^Got invalid theme mode: .*\. Resetting to auto\.$"),
]
IMAGE_MIMES = ("image/png", "image/jpeg", "image/svg+xml", "image/gif")
HIDDEN_TAGS = {"remove-cell", "remove-output", "remove_cell", "remove_output"}
TRACEBACK_MARKS = ("Traceback (most recent call last)",)


# Every block of code or output in the article; an element whose content is wider
# than its box shows a horizontal scrollbar and hides the end of its lines.
WIDE_SELECTOR = ", ".join(
    f"article.bd-article {s}"
    for s in (
        "pre",
        "div.highlight",
        "div.cell_output",
        "div.output",
        # markdown tables: the theme wraps each in a box that scrolls when too wide
        "div.pst-scrollable-table-container",
    )
)
WIDE_BLOCKS = """els => els
  .filter(e => e.clientWidth > 0 && e.scrollWidth > e.clientWidth + 1)
  .map(e => [e.scrollWidth, e.clientWidth, e.tagName.toLowerCase() + "." +
             e.className, (e.innerText.split("\\n")
               .reduce((a, b) => (b.length > a.length ? b : a), "")).slice(0, 120)])"""
# Solutions sit in dropdowns (sphinx-togglebutton, <details>): open them all first, so
# that their code is measured too.
SHOW_HIDDEN = """() => {
  document.querySelectorAll("details").forEach(d => { d.open = true; });
  document.querySelectorAll(".toggle-hidden").forEach(
    e => e.classList.remove("toggle-hidden"));
  document.querySelectorAll("button.toggle-button").forEach(b => {
    if (b.getAttribute("aria-expanded") === "false") b.click(); });
}"""


def expected_figures(chapter: str, staged) -> int:
    """Image outputs the executed notebook shows (cells removed from the page not counted)."""
    nb = nbformat.read(staged / f"{chapter}.ipynb", as_version=4)
    count = 0
    for cell in nb.cells:
        if cell.cell_type != "code" or HIDDEN_TAGS & set(cell.metadata.get("tags", [])):
            continue
        for out in cell.outputs:
            if out.output_type in ("display_data", "execute_result") and any(
                m in out.get("data", {}) for m in IMAGE_MIMES
            ):
                count += 1
    return count


# After MathJax's first typeset (when it runs): the formulas Sphinx marked (`.math`), those
# that hold MathJax's output, and TeX delimiters left in the article's text outside code.
MATH_STATE = r"""async () => {
  if (window.MathJax && MathJax.startup && MathJax.startup.promise) {
    await MathJax.startup.promise;
  }
  const article = document.querySelector('article.bd-article');
  if (!article) return {formulas: 0, typeset: 0, raw: []};
  const formulas = [...article.querySelectorAll('.math')];
  const typeset = formulas.filter(m => m.querySelector('mjx-container')).length;
  const raw = [];
  const walker = document.createTreeWalker(article, NodeFilter.SHOW_TEXT);
  for (let n = walker.nextNode(); n; n = walker.nextNode()) {
    if (n.parentElement.closest('pre, code, mjx-container, .cell_output')) continue;
    const m = n.textContent.match(/\\\(|\\\[|\$\$/);
    if (m) raw.push(n.textContent.trim().slice(0, 80));
  }
  return {formulas: formulas.length, typeset: typeset, raw: raw};
}"""


# Every explorer (vitbook/frames.py) as a reader uses it. For each control: the explorer
# is put in a stored state where that control matters (two stored frames differ in that
# control only, and differ), then the control is moved to the other frame's value, and
# then, if it has one, to a third value, by the events a real slider or drop-down fires.
# After each move: the frame shown, whether it changed, whether it is the stored frame
# for the controls' values with the moved one at its new value. A control that changes
# no stored frame is reported dead.
EXPLORE = """() => [...document.querySelectorAll('.vitbook-explorer')].map(root => {
  const data = JSON.parse(root.querySelector('script.vbx-data').textContent);
  const img = root.querySelector('img.vbx-frame');
  const controls = [...root.querySelectorAll('[data-axis]')];
  const keys = Object.keys(data.frames).map(k => k.split(',').map(Number));
  const out = {ready: root.hasAttribute('data-ready'), controls: controls.length,
    frames: keys.length, bytes: root.outerHTML.length, names: data.names,
    first: img.getAttribute('src') === data.frames[data.first.join(',')],
    dead: [], moves: []};
  const move = (control, axis, value, expect) => {
    const before = img.getAttribute('src');
    control.value = String(value);
    control.dispatchEvent(new Event('input', {bubbles: true}));
    const key = img.getAttribute('data-key');
    out.moves.push({axis: axis, value: value, key: key, expect: expect,
      changed: img.getAttribute('src') !== before,
      stored: img.getAttribute('src') === data.frames[key],
      at_value: Number(key.split(',')[axis]) === value,
      shown: Number(control.value) === value});
  };
  controls.forEach((control, axis) => {
    let pair = null;
    for (const a of keys) {
      for (const b of keys) {
        if (a[axis] !== b[axis] && a.every((v, i) => i === axis || v === b[i]) &&
            data.frames[a.join(',')] !== data.frames[b.join(',')]) { pair = [a, b]; break; }
      }
      if (pair) break;
    }
    if (!pair) { out.dead.push(axis); return; }
    root.vbxShow(pair[0]);
    move(control, axis, pair[1][axis], pair[1].join(','));
    const third = [...Array(data.labels[axis].length).keys()]
      .find(v => v !== pair[0][axis] && v !== pair[1][axis]);
    if (third !== undefined) move(control, axis, third, null);
  });
  return out;
})"""
# a page's explorers together stay under this many bytes (their frames are inline)
EXPLORER_PAGE_BYTES = 8_000_000


def page_url(base: str, docname: str) -> str:
    return urljoin(base, f"{docname}.html")


@dataclass
class Visit:
    """What a reader's browser met on one page."""

    url: str
    title: str = ""
    console: list = field(default_factory=list)  # (type, text, url)
    page_errors: list = field(default_factory=list)  # uncaught exceptions
    external: list = field(
        default_factory=list
    )  # requests that tried to leave 127.0.0.1
    local_failures: list = field(default_factory=list)
    images: list = field(
        default_factory=list
    )  # (src, naturalWidth, naturalHeight) in the article
    text: str = ""
    math: dict = field(default_factory=dict)  # formulas found, typeset, left as TeX
    links: list = field(default_factory=list)  # every href on the page, absolute
    next_href: str | None = None
    screenshot: str = ""
    # code blocks and outputs that need a horizontal scrollbar: (scrollWidth,
    # clientWidth, first wide line)
    wide_blocks: list = field(default_factory=list)
    # each explorer after its controls were moved (see EXPLORE)
    explorers: list = field(default_factory=list)
    widget_views: int = 0  # ipywidgets outputs left on the page (nothing could draw them)


def offline_context(browser, base: str, external: list | None = None):
    """A fresh browser context in which only `base` answers; every other address fails as it
    does without a network (and is noted in `external`)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})

    def route(r):
        if r.request.url.startswith(base):
            r.continue_()
        else:
            if external is not None:
                external.append(r.request.url)
            r.abort("namenotresolved")

    context.route("**/*", route)
    return context


def visit(browser, base: str, url: str, shot: str) -> Visit:
    v = Visit(url=url)
    context = offline_context(browser, base, v.external)
    page = context.new_page()
    page.on(
        "console",
        lambda m: v.console.append((m.type, m.text, m.location.get("url", ""))),
    )
    page.on("pageerror", lambda e: v.page_errors.append(str(e)))
    page.on(
        "response",
        lambda r: (
            r.url.startswith(base)
            and r.status >= 400
            and v.local_failures.append(f"{r.status} {r.url}")
        ),
    )
    page.on(
        "requestfailed",
        lambda r: r.url.startswith(base) and v.local_failures.append(f"failed {r.url}"),
    )
    try:
        page.goto(url, wait_until="load")
        page.wait_for_timeout(300)  # the theme's scripts run after load
        v.title = (
            page.locator("article h1").first.inner_text()
            if page.locator("article h1").count()
            else ""
        )
        v.math = page.evaluate(MATH_STATE)
        v.images = page.eval_on_selector_all(
            "article.bd-article img",
            "els => els.map(i => [i.getAttribute('src'), i.naturalWidth, i.naturalHeight])",
        )
        v.text = (
            page.locator("article.bd-article").inner_text()
            if page.locator("article.bd-article").count()
            else ""
        )
        v.links = page.eval_on_selector_all("a[href]", "els => els.map(a => a.href)")
        page.evaluate(SHOW_HIDDEN)
        v.wide_blocks = page.eval_on_selector_all(WIDE_SELECTOR, WIDE_BLOCKS)
        nxt = page.locator("a.right-next")
        v.next_href = nxt.first.evaluate("a => a.href") if nxt.count() else None
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        v.screenshot = str(SCREENSHOTS / f"{shot}.png")
        page.screenshot(path=v.screenshot, full_page=True)
        v.widget_views = page.locator(
            'script[type="application/vnd.jupyter.widget-view+json"], '
            ".jupyter-widgets"
        ).count()
        v.explorers = page.evaluate(EXPLORE)
    finally:
        context.close()
    return v


@pytest.fixture(scope="module")
def visits(browser, site):
    """Each page visited once, on first use."""
    cache: dict[str, Visit] = {}

    def get(docname: str) -> Visit:
        if docname not in cache:
            cache[docname] = visit(
                browser, site, page_url(site, docname), docname.replace("/", "__")
            )
        return cache[docname]

    return get


@pytest.mark.parametrize("docname", PAGES)
def test_page_loads_without_console_errors(visits, docname):
    v = visits(docname)
    assert not v.local_failures, (
        f"{docname}: the book's own files failed to load: {v.local_failures}"
    )
    assert not v.page_errors, f"{docname}: uncaught JavaScript errors: {v.page_errors}"
    strangers = sorted({urlparse(u).hostname for u in v.external} - ALLOWED_HOSTS)
    assert not strangers, (
        f"{docname}: requests to hosts outside the allow-list: {strangers}"
    )
    errors = [
        (t, text, where)
        for t, text, where in v.console
        if t == "error" and not any(p.match(text) for p in ALLOWED_CONSOLE)
    ]
    assert not errors, f"{docname}: console errors: {errors}"
    unexplained = [
        where
        for t, text, where in v.console
        if t == "error"
        and "ERR_NAME_NOT_RESOLVED" in text
        and urlparse(where).hostname not in ALLOWED_HOSTS
    ]
    assert not unexplained, (
        f"{docname}: resources that failed to resolve: {unexplained}"
    )


@pytest.mark.parametrize("docname", PAGES)
def test_formulas_are_typeset_offline(visits, docname):
    m = visits(docname).math
    assert m["typeset"] == m["formulas"], (
        f"{docname}: {m['formulas'] - m['typeset']} of {m['formulas']} formulas not typeset"
    )
    assert not m["raw"], f"{docname}: TeX source shown as text: {m['raw'][:3]}"


def test_the_book_has_typeset_formulas(visits):
    """The check above means something: chapter pages do carry formulas, and they render."""
    typeset = {d: visits(d).math["typeset"] for d in CHAPTERS}
    assert sum(typeset.values()) > 0, f"no typeset formula on any chapter page: {typeset}"


@pytest.mark.parametrize("docname", PAGES)
def test_page_shows_no_traceback(visits, docname):
    v = visits(docname)
    assert v.title, f"{docname}: no <h1> in the article"
    for mark in TRACEBACK_MARKS + ("Cell In[",):
        where = v.text.find(mark)
        if where >= 0:  # a short excerpt, not the whole page, in the failure
            pytest.fail(
                f"{docname}: the page shows a traceback:\n{v.text[max(0, where - 300) : where + 700]}"
            )


@pytest.mark.parametrize("docname", PAGES)
def test_no_code_block_or_output_needs_horizontal_scrolling(visits, docname):
    """At the 1280-pixel viewport, every code cell, output and table (markdown tables
    too) fits its column: nothing hides behind a scrollbar (notebook lines are kept
    within 88 characters, tests/test_notebooks.py; this checks what the browser really
    shows)."""
    v = visits(docname)
    wide = [
        f"{kind}: content {sw}px in a {cw}px box, e.g. {line!r}"
        for sw, cw, kind, line in v.wide_blocks
    ]
    assert not wide, f"{docname}: {len(wide)} blocks scroll sideways:\n" + "\n".join(
        wide[:10]
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_shows_every_figure_its_notebook_draws(visits, staged, chapter):
    v = visits(chapter)
    want = expected_figures(chapter, staged)
    local = [
        (src, w, h)
        for src, w, h in v.images
        if src and not src.startswith(("http:", "https:"))
    ]
    broken = [src for src, w, h in local if not (w and h)]
    assert not broken, f"{chapter}: images that did not load: {broken}"
    assert len(local) >= want, (
        f"{chapter}: {len(local)} figures on the page, the notebook drew {want}"
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_chapter_has_colab_and_download_buttons(visits, site, chapter):
    repo = yaml.safe_load((ROOT / "_config.yml").read_text())["repository"]
    owner_name = urlparse(repo["url"]).path.strip("/")
    colab = f"https://colab.research.google.com/github/{owner_name}/blob/{repo.get('branch', 'main')}/{chapter}.ipynb"
    v = visits(chapter)
    assert colab in v.links, (
        f"{chapter}: no Colab launch link {colab}; launch links: "
        + str([u for u in v.links if "colab" in u])
    )
    download = urljoin(site, f"_sources/{chapter}.ipynb")
    assert download in v.links, f"{chapter}: no .ipynb download link {download}"


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_downloaded_notebook_is_the_executed_chapter(browser, site, chapter):
    context = browser.new_context()
    try:
        response = context.request.get(urljoin(site, f"_sources/{chapter}.ipynb"))
        assert response.ok, f"{chapter}: download answered {response.status}"
        nb = json.loads(response.text())
    finally:
        context.close()
    assert any(c.get("outputs") for c in nb["cells"] if c["cell_type"] == "code"), (
        f"{chapter}: the downloadable notebook has no outputs"
    )


def test_next_links_walk_the_whole_book(browser, site):
    """From the front page, "next" reaches every page of `_toc.yml` in order, and stops at the end."""
    context = offline_context(browser, site)
    page = context.new_page()
    try:
        page.goto(site, wait_until="load")  # index.html redirects to the root page
        page.wait_for_url(
            lambda url: urlparse(url).path.lstrip("/") == f"{PAGES[0]}.html"
        )
        seen = []
        for _ in range(len(PAGES) + 1):
            page.wait_for_load_state("load")
            path = urlparse(page.url).path.lstrip("/")
            seen.append(path.removesuffix(".html"))
            nxt = page.locator("a.right-next")
            if not nxt.count():
                break
            nxt.first.click()
            page.wait_for_url(lambda url: urlparse(url).path.lstrip("/") != path)
    finally:
        context.close()
    assert seen == PAGES, (
        f"walking 'next' from the front page met {seen}, _toc.yml lists {PAGES}"
    )


def search_word(chapter: str, staged) -> str:
    """A word a reader would look for: the longest word of the chapter's title."""
    nb = nbformat.read(staged / f"{chapter}.ipynb", as_version=4)
    title = next(
        line
        for c in nb.cells
        if c.cell_type == "markdown"
        for line in c.source.splitlines()
        if line.startswith("# ")
    )
    return max(re.findall(r"[A-Za-z][A-Za-z-]{2,}", title), key=len)


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_search_page_finds_the_chapter(browser, site, staged, chapter):
    word = search_word(chapter, staged)
    context = offline_context(browser, site)
    page = context.new_page()
    try:
        page.goto(urljoin(site, f"search.html?q={word}"), wait_until="load")
        page.wait_for_selector("#search-results ul.search li", timeout=15_000)
        hits = page.eval_on_selector_all(
            "#search-results ul.search li a", "els => els.map(a => a.href)"
        )
        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        page.screenshot(
            path=str(SCREENSHOTS / f"search__{chapter.replace('/', '__')}.png"),
            full_page=True,
        )
    finally:
        context.close()
    target = urljoin(site, f"{chapter}.html")
    assert any(h.split("#")[0].split("?")[0] == target for h in hits), (
        f"searching {word!r} did not list {chapter}: {hits}"
    )


def explorers_in(chapter: str) -> int:
    """Explorers the chapter's committed notebook makes: code cells that call a
    ``vitbook.widgets`` factory."""
    # the committed notebook: chapter is its page's name, "book/01_vit"
    nb = nbformat.read(ROOT / f"{chapter}.ipynb", as_version=4)
    call = re.compile(r"widgets\.\w+_explorer\(")
    return sum(
        1 for cell in nb.cells if cell.cell_type == "code" and call.search(cell.source)
    )


@pytest.mark.parametrize("chapter", CHAPTERS)
def test_every_explorer_responds_offline(visits, chapter):
    """Without a kernel and without a network, each explorer's controls work: every
    control, moved to two other values, shows the stored frame for that value, and
    the figure changes."""
    v = visits(chapter)
    assert v.widget_views == 0, (
        f"{chapter}: {v.widget_views} ipywidgets outputs on the page, which nothing "
        "can draw without a kernel"
    )
    assert len(v.explorers) == explorers_in(chapter), (
        f"{chapter}: {len(v.explorers)} explorers on the page, the notebook makes "
        f"{explorers_in(chapter)}"
    )
    for i, e in enumerate(v.explorers, 1):
        where = f"{chapter}, explorer {i} ({', '.join(e['names'])})"
        assert e["ready"], f"{where}: its script did not run"
        assert e["first"], f"{where}: the first image is not the first stored frame"
        assert e["controls"] == len(e["names"]), f"{where}: controls missing"
        dead = [e["names"][a] for a in e["dead"]]
        assert not dead, f"{where}: no stored frame changes with {dead}"
        for m in e["moves"]:
            move = f"{where}: {e['names'][m['axis']]} to its value #{m['value']}"
            assert m["at_value"] and m["shown"], f"{move} showed frame {m['key']}"
            assert m["stored"], f"{move}: the image is not the stored frame {m['key']}"
            if m["expect"] is not None:  # from a state where the control matters
                assert m["key"] == m["expect"] and m["changed"], (
                    f"{move}: showed {m['key']} (changed: {m['changed']}), expected "
                    f"the stored frame {m['expect']}"
                )
    total = sum(e["bytes"] for e in v.explorers)
    assert total <= EXPLORER_PAGE_BYTES, (
        f"{chapter}: its explorers weigh {total / 1e6:.1f} MB, over "
        f"{EXPLORER_PAGE_BYTES / 1e6:.0f} MB"
    )


def test_the_book_has_explorers(visits):
    """The check above means something: the chapters do carry explorers."""
    count = {c: len(visits(c).explorers) for c in CHAPTERS}
    assert sum(count.values()) >= 7, f"explorers per chapter: {count}"
