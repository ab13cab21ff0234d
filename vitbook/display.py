"""``show(obj)``: the package's own source, highlighted, inside a notebook.

The book never copies code into cells; it shows the code that runs, so prose and code
cannot drift apart.
"""

from __future__ import annotations

import inspect
from pathlib import Path


class Source:
    """Source code with a header naming where it lives; renders as highlighted HTML in
    Jupyter."""

    def __init__(self, code: str, where: str):
        self.code, self.where = code, where

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
    ``show(vitbook.layers.Attention)``.

    ``lines=(first, last)`` keeps only those lines (1-based, relative to the object's
    source).
    """
    obj = inspect.unwrap(
        obj
    )  # a @contextmanager's source is the generator it wraps, not contextlib's
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
    return Source("".join(code).rstrip() + "\n", where)
