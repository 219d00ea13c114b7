"""Sphinx + myst-nb configuration of the course site (`make book` -> build/book/html/).

The pages are the notebooks themselves (book/notebooks links to ../notebooks), executed through
jupyter-cache so a rebuild re-runs only the notebooks whose code changed. Everything the pages load is
copied into the site: the theme's assets ship in its wheel, and MathJax 3 (one file, TeX input with all
extensions and SVG output, so no web fonts) comes from the npm package `mathjax` that `make book`
installs into build/book/. No page loads anything from the network.
"""
import os
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
BUILD = ROOT / "build" / "book"
FULL = os.environ.get("RETRIEVALKIT_SMALL", "") in ("", "0")
MATHJAX = BUILD / "static" / "mathjax" / "tex-svg-full.js"
if not MATHJAX.exists():
    raise RuntimeError(f"{MATHJAX} is missing: build the site with `make book`, which installs it from npm")

project = "retrievalkit: deep image retrieval, a course"
author = "retrievalkit contributors"
extensions = ["myst_nb"]
exclude_patterns = ["**/.ipynb_checkpoints"]
source_suffix = {".md": "myst-nb", ".ipynb": "myst-nb"}

# $...$ and $$...$$ in the notebooks' markdown become Sphinx math, typeset by the local MathJax.
myst_enable_extensions = ["dollarmath", "amsmath"]
myst_heading_anchors = 3
mathjax_path = "mathjax/tex-svg-full.js"  # relative to _static/
html_static_path = [str(BUILD / "static")]

# Execution: SMALL mode unless RETRIEVALKIT_SMALL is unset/0 (BOOK_FULL=1 make book); one cache per mode
# so the two never mix. A notebook that raises fails the build.
nb_execution_mode = "cache"
nb_execution_cache_path = str(BUILD / (".jupyter_cache_full" if FULL else ".jupyter_cache_small"))
nb_execution_timeout = 1800 if FULL else 900
nb_execution_raise_on_error = True
nb_execution_show_tb = True
nb_merge_streams = True

html_theme = "sphinx_book_theme"
html_title = "retrievalkit course"
html_theme_options = {"show_navbar_depth": 1, "home_page_in_toc": True}
html_context = {"default_mode": "light"}  # an empty mode makes the theme log a console error
nb_ipywidgets_js = {}  # widget state would load its JavaScript from a CDN; the pages show static outputs
html_show_sourcelink = False
html_copy_source = False
