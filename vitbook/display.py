"""``show(obj)``: the package's own source, highlighted, inside a notebook, and
``glue(name, value)``: a number a run produced, for the prose to quote.

The book never copies code into cells; it shows the code that runs, so prose and code
cannot drift apart. Nor does it type a measured number into its prose: a chapter glues
the value and its markdown quotes it with myst-nb's role, ``{glue:text}`name```.
"""

from __future__ import annotations

import inspect
from pathlib import Path


def _in_notebook() -> bool:
    """True inside a Jupyter kernel (a notebook, nbmake, Colab), not in a terminal."""
    try:
        from IPython import get_ipython
    except ImportError:
        return False
    shell = get_ipython()
    return shell is not None and hasattr(shell, "kernel")


class Source:
    """Source code with a header naming where it lives; renders as highlighted HTML in
    Jupyter, once: :func:`show` displays it when called, so that every ``show`` of a
    cell appears, not only the last, and the cell's value does not repeat it."""

    def __init__(self, code: str, where: str):
        self.code, self.where = code, where
        self.displayed = False

    def _ipython_display_(self) -> None:
        if self.displayed:
            return
        from IPython.display import display

        self.displayed = True
        display({"text/plain": str(self), "text/html": self._repr_html_()}, raw=True)

    def __str__(self) -> str:
        return f"# {self.where}\n{self.code}"

    def __repr__(self) -> str:
        return str(self)

    def _repr_html_(self) -> str:
        from pygments import highlight
        from pygments.formatters import HtmlFormatter
        from pygments.lexers import PythonLexer

        formatter = HtmlFormatter(noclasses=True, style="friendly", nowrap=False)
        body = highlight(self.code, PythonLexer(), formatter)
        return (
            '<div class="vitbook-source"><div '
            'style="font-family:monospace;font-size:85%;color:#555;'
            f'margin-bottom:2px">{self.where}</div>{body}</div>'
        )


def show(obj, lines: tuple[int, int] | None = None) -> Source:
    """The source of a vitbook class, function or method, e.g.
    ``show(vitbook.layers.Attention)``, displayed at once inside a notebook (two calls
    in one cell show both).

    ``lines=(first, last)`` keeps only those lines (1-based, relative to the object's
    source).
    """
    # a @contextmanager's source is the generator it wraps, not contextlib's
    obj = inspect.unwrap(obj)
    try:
        code, start = inspect.getsourcelines(obj)
        path = Path(inspect.getsourcefile(obj))
    except (TypeError, OSError) as error:
        raise TypeError(
            "show() needs a module, class, method or function defined in Python, got "
            f"{obj!r}"
        ) from error
    if lines is not None:
        first, last = lines
        if not 1 <= first <= last <= len(code):
            raise ValueError(
                f"lines={lines} is outside the {len(code)} lines of "
                f"{getattr(obj, '__qualname__', obj)}"
            )
        code, start = code[first - 1 : last], start + first - 1
    try:
        shown = path.resolve().relative_to(Path(__file__).resolve().parent.parent)
    except ValueError:
        shown = path.name
    where = f"{shown.as_posix() if hasattr(shown, 'as_posix') else shown}, line {start}"
    source = Source("".join(code).rstrip() + "\n", where)
    if _in_notebook():
        source._ipython_display_()
    return source


GLUE_PREFIX = "application/papermill.record/"


def glue_text(name: str, value, fmt: str | None = None) -> str:
    """The text :func:`glue` records for ``value``: a string as it is, a number
    formatted by ``fmt`` (or its ``repr``)."""
    if not isinstance(name, str) or not name.replace("_", "").isalnum():
        raise ValueError(f"glue name {name!r} must be letters, digits and underscores")
    if isinstance(value, str):
        return value
    if fmt is not None:
        return fmt.format(value)
    if isinstance(value, (int, float)) or hasattr(value, "item"):
        return repr(value.item() if hasattr(value, "item") else value)
    kind = type(value).__name__
    raise TypeError(f"glue({name!r}, ...) takes a number or a string, got {kind}")


def glue(name: str, value, fmt: str | None = None) -> None:
    """Record ``value`` under ``name`` for the prose: ``{glue:text}`name``` in a
    markdown cell of the same notebook prints it. This is myst-nb's glue without
    importing myst-nb, so a chapter also runs where myst-nb is not installed (Colab).
    ``fmt`` formats a number once here: ``glue("acc", 0.8851, "{:.1%}")`` glues
    ``88.5%``; a string is quoted as it is (:func:`glue_text`). Outside a notebook
    nothing is displayed. Returns nothing, so a cell ending in a glue prints no more."""
    text = glue_text(name, value, fmt)
    if _in_notebook():
        from IPython.display import display

        # the bundle myst-nb's glue(name, value, display=False) writes: the text as a
        # Python literal, since the {glue:text} role reads it back with literal_eval
        # (a bare "172,298" would come back as the tuple (172, 298), "+7.5" as 7.5)
        bundle = {GLUE_PREFIX + "text/plain": repr(text)}
        where = {"scrapbook": {"name": name, "mime_prefix": GLUE_PREFIX}}
        display(bundle, raw=True, metadata=where)
