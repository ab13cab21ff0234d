"""A small Sphinx extension for the book's HTML (loaded through `_config.yml`, `sphinx.local_extensions`).

Inline scripts that extensions add during `builder-inited` (sphinx-thebe's configuration,
sphinx-togglebutton's selector) reach Sphinx 7's HTML builder twice, once as `filename=None`
and once as `filename=''`, so its own de-duplication misses them. The page then declares
`const THEBE_JS_URL` twice and the browser logs a SyntaxError on every page. This drops the
second copy of any script whose address and attributes equal an earlier one.

It also writes to the build log what each explorer (`vitbook/frames.py`) adds to its
page: its frames and its bytes.
"""

import re

from sphinx.util import logging

logger = logging.getLogger(__name__)
EXPLORER = re.compile(r'<div class="vitbook-explorer".*?</script></div>', re.DOTALL)


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", script) or "",
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def _report_explorers(app, pagename, templatename, context, doctree):
    for i, block in enumerate(EXPLORER.findall(context.get("body", "")), 1):
        frames = block.count(': "data:image/')
        logger.info(f"explorer {i} on {pagename}: {frames} frames, "
                    f"{len(block) / 1e6:.2f} MB")


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    app.connect("html-page-context", _report_explorers)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
