"""Paths and page lists shared by the book tests and their conftest."""

from __future__ import annotations

import os
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
STAGED = ROOT / "build" / "executed"  # the executed copy of the book (stage.py)
HTML = ROOT / "_build" / "html"  # where the strict build writes
SCREENSHOTS = ROOT / "_build" / "screenshots"
CHROMIUM = os.environ.get("VITBOOK_CHROMIUM", "/usr/bin/chromium")
# Offline-safe flags: no background networking, no component updates, no sync.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
]


def toc_pages(root: Path = ROOT) -> list[str]:
    """Docnames in reading order (root first), as `_toc.yml` lists them."""
    toc = yaml.safe_load((root / "_toc.yml").read_text())
    pages = [toc["root"]]

    def walk(entries):
        for entry in entries or []:
            if "file" in entry:
                pages.append(entry["file"])
            walk(entry.get("sections"))

    for part in toc.get("parts", [{"chapters": toc.get("chapters")}]):
        walk(part.get("chapters"))
    return pages


def chapters(root: Path = ROOT) -> list[str]:
    """The docnames of `_toc.yml` that are notebooks (in the repository or its staged copy)."""
    return [
        p
        for p in toc_pages(root)
        if (root / f"{p}.ipynb").exists() or (STAGED / f"{p}.ipynb").exists()
    ]
