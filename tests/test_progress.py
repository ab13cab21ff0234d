"""`fit`'s progress bar in a notebook is an ordinary output, not a widget: the HTML book
shows its last state as text, with no widget manager to load.

A real kernel (the one the book's build uses, through nbclient) runs a short `fit`; the
executed notebook must hold one progress output whose final state says the run ended,
and no ipywidgets output at all."""

from __future__ import annotations

import nbformat
import pytest

nbclient = pytest.importorskip("nbclient")

FIT = """
import torch
from vitbook import ViT, train
from vitbook.data import ImageTensors

g = torch.Generator().manual_seed(0)
labels = torch.randint(0, 2, (64,), generator=g)
images = (torch.rand(64, 1, 8, 8, generator=g) * 255).to(torch.uint8)
data = ImageTensors(images, labels, ("a", "b"), (0.5,), (0.25,))
model = ViT(image_size=8, patch_size=4, num_classes=2, dim=16, depth=1, heads=2,
            channels=1)
history = train.fit(model, data.loader(16), epochs=3, device="cpu", desc="toy")
"""


def test_fit_in_a_kernel_ends_as_a_text_progress_output():
    nb = nbformat.v4.new_notebook(cells=[nbformat.v4.new_code_cell(FIT)])
    nbclient.NotebookClient(nb, timeout=120, kernel_name="python3").execute()
    outputs = nb.cells[0].outputs
    mimes = [m for out in outputs for m in out.get("data", {})]
    assert "application/vnd.jupyter.widget-view+json" not in mimes, (
        f"fit drew a widget: {mimes}"
    )
    bars = [
        out
        for out in outputs
        if out.output_type == "display_data" and "<progress" in out.data.get(
            "text/html", ""
        )
    ]
    assert len(bars) == 1, f"expected one progress output, got {outputs}"
    text = bars[0].data["text/plain"]
    # 64 images in batches of 16, three epochs: 12 steps, all done
    assert "toy" in text and "12/12" in text and "100%" in text, text
    assert '<progress value="12" max="12">' in bars[0].data["text/html"]
