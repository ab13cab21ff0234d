"""A small Sphinx extension for the book's HTML (loaded through `_config.yml`, `sphinx.local_extensions`).

Inline scripts that extensions add during `builder-inited` (sphinx-thebe's configuration,
sphinx-togglebutton's selector) reach Sphinx 7's HTML builder twice, once as `filename=None`
and once as `filename=''`, so its own de-duplication misses them. The page then declares
`const THEBE_JS_URL` twice and the browser logs a SyntaxError on every page. This drops the
second copy of any script whose address and attributes equal an earlier one.
"""


def _dedupe_scripts(app, pagename, templatename, context, doctree):
    seen, unique = set(), []
    for script in context.get("script_files", []):
        key = (getattr(script, "filename", script) or "",
               tuple(sorted((k, str(v)) for k, v in getattr(script, "attributes", {}).items())))
        if key not in seen:
            seen.add(key)
            unique.append(script)
    context["script_files"] = unique


def setup(app):
    app.connect("html-page-context", _dedupe_scripts)
    return {"parallel_read_safe": True, "parallel_write_safe": True}
