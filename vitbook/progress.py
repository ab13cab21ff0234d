"""Progress bars that end as text on the page.

In a terminal a bar is tqdm's own. In a notebook tqdm would draw an ipywidgets bar,
which the HTML book cannot show without loading a widget manager from a CDN (and shows
as nothing offline). Here a notebook gets one ordinary output instead, plain text and
an HTML ``<progress>`` element, updated in place through its ``display_id``: JupyterLab,
Colab and the book's executor all keep its last state, so the page shows how the run
ended.
"""

from __future__ import annotations

import html
import io

from tqdm.std import tqdm

from .display import _in_notebook as in_kernel


class PageBar(tqdm):
    """tqdm's counting and formatting, drawn as a display output a notebook updates
    in place (at most every ``mininterval`` seconds; tqdm's ``close`` draws the final
    state)."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("mininterval", 0.5)
        kwargs["file"] = io.StringIO()  # nothing goes to a terminal
        self._handle = None
        super().__init__(*args, **kwargs)
        if not self.disable:
            from IPython.display import display

            self._handle = display(self.bundle(), raw=True, display_id=True)

    def bundle(self) -> dict:
        """The bar as plain text and as HTML."""
        meter = self.format_dict
        text = self.format_meter(**{**meter, "ncols": None})
        total = meter["total"] or max(meter["n"], 1)
        value = min(meter["n"], total)
        return {
            "text/plain": text,
            "text/html": (
                '<div class="vitbook-progress">'
                f'<progress value="{value}" max="{total}"></progress> '
                f"<span>{html.escape(text)}</span></div>"
            ),
        }

    def display(self, msg=None, pos=None):
        if self._handle is not None:
            self._handle.update(self.bundle(), raw=True)
        return True


def progress(**kwargs) -> tqdm:
    """A progress bar: a :class:`PageBar` in a notebook, tqdm's text bar elsewhere.
    Takes tqdm's keywords."""
    return (PageBar if in_kernel() else tqdm)(**kwargs)


__all__ = ["PageBar", "in_kernel", "progress"]
