"""The course site (`make book` -> build/book/html/) opened in a real browser, Debian's chromium driven by
Playwright: every notebook has a page that loads (HTTP 200 from a local server) without console errors,
every image on it loads, its figures are all there, its equations are typeset, and it asks nothing of the
network. The session fixture runs `make book` each time: notebooks unchanged since the last build come
from its jupyter-cache (seconds), changed ones are executed again, so the test never reads a stale site."""
from __future__ import annotations

import functools
import os
import re
import subprocess
import threading
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

# Its own suite, `make test-book` (which installs chromium and builds the site first): the build executes
# every notebook again, which would double `make test`'s notebook time.
pytestmark = pytest.mark.book
from playwright.sync_api import sync_playwright  # noqa: E402

REPO = Path(__file__).resolve().parents[1]
SITE = REPO / "build" / "book" / "html"
CHROMIUM = Path("/usr/bin/chromium")
NOTEBOOKS = sorted(p.stem for p in (REPO / "notebooks").glob("[0-9][0-9]_*.ipynb"))


@pytest.fixture(scope="session")
def site() -> Path:
    run = subprocess.run(["make", "--no-print-directory", "book"], cwd=REPO, capture_output=True, text=True)
    if run.returncode != 0:
        pytest.fail(f"`make book` failed ({run.returncode}):\n{(run.stdout + run.stderr)[-6000:]}")
    return SITE


@pytest.fixture(scope="session")
def base_url(site):
    handler = functools.partial(_QuietHandler, directory=str(site))
    server = ThreadingHTTPServer(("127.0.0.1", 0), handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    yield f"http://127.0.0.1:{server.server_port}/"
    server.shutdown()


class _QuietHandler(SimpleHTTPRequestHandler):
    def log_message(self, *args):
        pass


@pytest.fixture(scope="session")
def browser():
    if not CHROMIUM.exists():
        pytest.fail(f"{CHROMIUM} is missing: `make browser` installs Debian's chromium (make test runs it)")
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=str(CHROMIUM), headless=True)
        yield browser
        browser.close()


def _executed(name: str) -> dict:
    """The notebook as executed for the site, from the build's jupyter-cache (book/conf.py)."""
    from jupyter_cache import get_cache

    mode = "full" if os.environ.get("BOOK_FULL") else "small"
    cache = get_cache(str(REPO / "build" / "book" / f".jupyter_cache_{mode}"))
    _, nb = cache.merge_match_into_file(str(REPO / "book" / "notebooks" / f"{name}.ipynb"))
    return nb


def _image_outputs(nb: dict) -> int:
    return sum(
        1
        for cell in nb["cells"]
        if cell["cell_type"] == "code"
        for out in cell.get("outputs", [])
        if any(k.startswith("image/") for k in out.get("data", {}))
    )


def _has_math(nb: dict) -> bool:
    text = "\n".join("".join(c["source"]) for c in nb["cells"] if c["cell_type"] == "markdown")
    return re.search(r"\$\$.+?\$\$|\$[^$\s][^$\n]*\$", text, re.S) is not None


def _open(browser, url: str):
    """Load ``url``; return the page and the problems seen: console errors, page errors, failed requests,
    and any request that leaves the local server (aborted, so the page is seen as offline)."""
    problems: list[str] = []
    page = browser.new_page()
    page.on("console", lambda m: problems.append(f"console error: {m.text}") if m.type == "error" else None)
    page.on("pageerror", lambda e: problems.append(f"page error: {e}"))
    page.on("requestfailed", lambda r: problems.append(f"request failed: {r.url} ({r.failure})"))
    local = url.split("/", 3)[:3]

    def route(r):
        if r.request.url.split("/", 3)[:3] == local:
            r.continue_()
        else:
            problems.append(f"network request: {r.request.url}")
            r.abort()

    page.route("**/*", route)
    response = page.goto(url, wait_until="load")
    if response is None or response.status != 200:
        problems.append(f"HTTP {None if response is None else response.status}")
    return page, problems


def _typeset(page) -> dict:
    """Wait for MathJax to finish, then count math elements, typeset ones, TeX errors and raw $$."""
    if page.locator(".math").count() == 0:  # Sphinx loads MathJax only on pages with math
        return {"math": 0, "typeset": 0, "errors": 0, "raw": "$$" in page.inner_text("body")}
    page.wait_for_function("() => window.MathJax && MathJax.startup && MathJax.startup.promise", timeout=30000)
    return page.evaluate(
        """async () => {
            await MathJax.startup.promise;
            const maths = Array.from(document.querySelectorAll('.math'));
            return {
                math: maths.length,
                typeset: maths.filter(m => m.querySelector('mjx-container svg')).length,
                errors: document.querySelectorAll('mjx-merror, [data-mjx-error]').length,
                raw: (document.querySelector('article') || document.body).innerText.includes('$$'),
            };
        }"""
    )


def test_every_notebook_has_a_page():
    assert len(NOTEBOOKS) >= 14, NOTEBOOKS
    index = (REPO / "book" / "index.md").read_text()
    missing = [n for n in NOTEBOOKS if f"<notebooks/{n}>" not in index]
    assert not missing, f"book/index.md does not list {missing}"


def test_site_loads_nothing_from_the_network(site):
    """No page, style sheet or script names a remote script, style sheet, font or image."""
    remote = re.compile(
        r"""<(?:script|img|iframe)[^>]*\ssrc=["']?(?:https?:)?//"""
        r"""|<link[^>]*\shref=["']?(?:https?:)?//[^>]*>"""
        r"""|url\(\s*["']?(?:https?:)?//|@import\s+["']?(?:https?:)?//""",
        re.I,
    )
    found = []
    for path in sorted(site.rglob("*")):
        if path.suffix in (".html", ".css", ".js") and path.is_file():
            for m in remote.finditer(path.read_text(errors="replace")):
                if path.suffix == ".html" and m.group(0).lower().startswith("<link") and "stylesheet" not in m.group(0) \
                        and "preload" not in m.group(0) and "icon" not in m.group(0):
                    continue  # <link rel="canonical"/"next"> to a remote page is a link, not a load
                found.append(f"{path.relative_to(site)}: {m.group(0)[:120]}")
    assert not found, "remote resources in the site:\n" + "\n".join(found[:20])


def test_index_page(browser, base_url):
    page, problems = _open(browser, base_url + "index.html")
    try:
        hrefs = page.eval_on_selector_all("article a[href]", "as => as.map(a => a.getAttribute('href'))")
    finally:
        page.close()
    assert not problems, "index.html:\n" + "\n".join(problems)
    missing = [n for n in NOTEBOOKS if f"notebooks/{n}.html" not in hrefs]
    assert not missing, f"index.html links to no page for {missing}"


@pytest.mark.parametrize("name", NOTEBOOKS)
def test_notebook_page(browser, base_url, name):
    nb = _executed(name)
    page, problems = _open(browser, f"{base_url}notebooks/{name}.html")
    try:
        images = page.eval_on_selector_all(
            "article img", "is => is.map(i => ({src: i.getAttribute('src'), w: i.naturalWidth, out: !!i.closest('.cell_output')}))"
        )
        math = _typeset(page)
        tracebacks = page.locator("article .cell_output .traceback, article .output.traceback").count()
    finally:
        page.close()
    where = f"notebooks/{name}.html"
    problems += [f"image not loaded: {i['src']}" for i in images if i["w"] == 0]
    expected = _image_outputs(nb)
    shown = sum(i["out"] for i in images)
    if shown != expected:
        problems.append(f"{shown} figures in the page's outputs, {expected} image outputs in the executed notebook")
    if tracebacks:
        problems.append(f"{tracebacks} error tracebacks in the outputs")
    if _has_math(nb) and math["math"] == 0:
        problems.append("the notebook's markdown has $-math but the page has no math element")
    if math["typeset"] != math["math"]:
        problems.append(f"{math['math'] - math['typeset']} of {math['math']} equations not typeset by MathJax")
    if math["errors"]:
        problems.append(f"{math['errors']} MathJax TeX errors")
    if math["raw"]:
        problems.append("raw $$ left in the page text")
    assert not problems, f"{where}:\n" + "\n".join(problems)


def test_the_course_has_figures_and_equations(site):
    """The per-page checks compare with the executed notebooks; this one makes sure they had something to
    compare: the course as a whole shows figures and typesets equations."""
    executed = {n: _executed(n) for n in NOTEBOOKS}
    assert sum(_image_outputs(nb) for nb in executed.values()) >= len(NOTEBOOKS)
    assert sum(_has_math(nb) for nb in executed.values()) >= len(NOTEBOOKS) // 2
