"""An explorer as a page that needs no kernel: its figure drawn once for every stored
combination of the controls' values, and a few lines of inline JavaScript that show
the frame the controls select.

The HTML book has no Python behind it, so the live sliders of :mod:`vitbook.widgets`
cannot redraw there. What the page gets instead is one self-contained HTML block: the
frames as WebP images at the width of the book's column, the controls as plain
``<input type="range">`` and ``<select>`` elements, and a script with no dependency
(no CDN, no widget manager), so it works offline and from ``file://``. The first frame
is the figure the chapter discusses; a reader without JavaScript sees it and nothing
else.
"""

from __future__ import annotations

import base64
import html
import io
import itertools
import json
import uuid
from dataclasses import dataclass

# the theme's text column, in CSS pixels: a frame is drawn at this width
COLUMN_PX = 688
# lossy WebP at this quality keeps 9-pixel text legible at a tenth of PNG's bytes
WEBP_QUALITY = 85


@dataclass
class Axis:
    """One control as the page offers it: its label and the values stored for it, in
    the control's own order, out of the ``offered`` values a live reader can pick."""

    name: str
    description: str
    labels: list[str]
    values: list
    offered: int


def choices(control) -> list[tuple[str, object]]:
    """Every ``(label, value)`` an ipywidgets control can take, in its order."""
    if hasattr(control, "_options_values"):
        # SelectionSlider, Dropdown: the labels a reader sees, the values draw gets
        return list(zip(control._options_labels, control._options_values))
    step = getattr(control, "step", None)
    if type(control).__name__ == "IntSlider":
        return [(str(v), v) for v in range(control.min, control.max + 1, step)]
    if type(control).__name__ == "FloatSlider":
        count = round((control.max - control.min) / step) + 1
        values = [round(control.min + i * step, 10) for i in range(count)]
        return [(f"{v:g}", v) for v in values]
    raise TypeError(
        f"control {control.description!r} is a {type(control).__name__}; the page "
        "stores frames for IntSlider, FloatSlider and selection widgets only"
    )


def grid(**values) -> list[dict]:
    """Every combination of the given values: ``grid(row=[1, 5], col=[2, 6])`` is four
    frames."""
    names = list(values)
    return [dict(zip(names, combo)) for combo in itertools.product(*values.values())]


def axes_for(controls: dict, stored: list[dict]) -> list[Axis]:
    """For each control, the values some stored frame uses, in the control's order;
    a stored value the control cannot take is an error."""
    axes = []
    for name, control in controls.items():
        options = choices(control)
        used = {frame[name] for frame in stored}
        known = {value for _, value in options}
        strangers = sorted(used - known, key=str)
        if strangers:
            raise ValueError(
                f"stored values {strangers} for control {name!r} are not among its "
                f"values {[v for _, v in options]}"
            )
        kept = [(label, value) for label, value in options if value in used]
        axes.append(
            Axis(
                name,
                control.description or name,
                [label for label, _ in kept],
                [value for _, value in kept],
                len(options),
            )
        )
    return axes


def encode(figure) -> str:
    """The figure as a ``data:`` URL of a WebP image at the column's width, cropped
    as a notebook shows figures (``bbox_inches="tight"``, so titles above the axes
    are kept)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from PIL import Image

    # a closed figure has no canvas to draw on: give it one; then the width the
    # tight crop will have, at any dpi
    renderer = FigureCanvasAgg(figure).get_renderer()
    inches = figure.get_tightbbox(renderer).width + 2 * 0.1
    png = io.BytesIO()
    figure.savefig(
        png, format="png", dpi=COLUMN_PX / inches, bbox_inches="tight", pad_inches=0.1
    )
    buffer = io.BytesIO()
    Image.open(png).convert("RGB").save(buffer, format="webp", quality=WEBP_QUALITY)
    return "data:image/webp;base64," + base64.b64encode(buffer.getvalue()).decode()


# Idempotent: every explorer on a page carries it, the first run wires them all. A
# control moved to a value shows the stored frame with that value that is nearest to
# what is shown now (in steps along each control), and the other controls follow it.
SCRIPT = """
(function () {
  document.querySelectorAll(".vitbook-explorer:not([data-ready])").forEach(
    function (root) {
      root.setAttribute("data-ready", "");
      var data = JSON.parse(root.querySelector("script.vbx-data").textContent);
      var controls = root.querySelectorAll("[data-axis]");
      var image = root.querySelector("img.vbx-frame");
      var keys = Object.keys(data.frames).map(function (k) {
        return k.split(",").map(Number);
      });
      var now = data.first.slice();
      // also what the browser tests call to put the explorer in a given state
      root.vbxShow = show;
      function show(key) {
        now = key;
        image.src = data.frames[key.join(",")];
        image.setAttribute("data-key", key.join(","));
        controls.forEach(function (control, i) {
          control.value = String(key[i]);
          var out = root.querySelector('output[data-axis-label="' + i + '"]');
          if (out) { out.textContent = data.labels[i][key[i]]; }
        });
      }
      controls.forEach(function (control, axis) {
        function moved() {
          var want = Number(control.value), best = null, cost = Infinity;
          keys.forEach(function (key) {
            if (key[axis] !== want) { return; }
            var d = 0;
            key.forEach(function (v, i) { d += Math.abs(v - now[i]); });
            if (d < cost) { cost = d; best = key; }
          });
          if (best) { show(best); }
        }
        control.addEventListener("input", moved);
        control.addEventListener("change", moved);
      });
    });
})();
"""


def page(axes: list[Axis], frames: dict[tuple, str], first: tuple, note: str) -> str:
    """The explorer's self-contained HTML block: the controls, the first frame as an
    ``<img>``, every frame as data, the script."""
    uid = uuid.uuid4().hex[:12]
    rows = []
    for i, axis in enumerate(axes):
        label = html.escape(axis.description)
        if (
            all(isinstance(v, (int, float)) for v in axis.values)
            and len(axis.values) > 1
        ):
            control = (
                f'<input type="range" data-axis="{i}" min="0" '
                f'max="{len(axis.values) - 1}" step="1" value="{first[i]}" '
                f'aria-label="{label}">'
                f'<output data-axis-label="{i}" style="margin-left: 0.4em;">'
                f"{html.escape(axis.labels[first[i]])}</output>"
            )
        else:
            options = "".join(
                f'<option value="{j}"{" selected" if j == first[i] else ""}>'
                f"{html.escape(text)}</option>"
                for j, text in enumerate(axis.labels)
            )
            control = f'<select data-axis="{i}" aria-label="{label}">{options}</select>'
        rows.append(
            '<label class="vbx-control" style="display: inline-block; '
            f'margin: 0 1.5em 0.3em 0; white-space: nowrap;">{label} {control}</label>'
        )
    data = {
        "first": list(first),
        "labels": [axis.labels for axis in axes],
        "names": [axis.name for axis in axes],
        "frames": {",".join(map(str, key)): url for key, url in frames.items()},
    }
    # "</" cannot end the script element early; JSON reads "<\/" as "</"
    payload = json.dumps(data).replace("</", "<\\/")
    key = ",".join(map(str, first))
    return (
        f'<div class="vitbook-explorer" id="vbx-{uid}">'
        f'<div class="vbx-controls">{"".join(rows)}</div>'
        f'<img class="vbx-frame" data-key="{key}" src="{frames[first]}" '
        f'alt="{html.escape(note)}" style="max-width: 100%;">'
        f'<p class="vbx-note" style="font-size: 0.85em;">{html.escape(note)}</p>'
        f'<script type="application/json" class="vbx-data">{payload}</script>'
        f"<script>{SCRIPT}</script></div>"
    )
