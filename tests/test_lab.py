"""The reader's local path: `make lab` (`jupyter lab book/` in the virtualenv) starts JupyterLab, which
lists the chapters and carries the ipywidgets extension, so the explorers run live there.

The server listens on 127.0.0.1 only, on a free port, and is stopped at the end."""

import json
import os
import secrets
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
JUPYTER = Path(sys.executable).with_name("jupyter")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def get_json(url: str):
    with urllib.request.urlopen(url, timeout=5) as response:
        return json.loads(response.read())


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    if not JUPYTER.exists():
        pytest.fail(f"{JUPYTER} is missing: requirements.txt pins jupyterlab")
    port, token = free_port(), secrets.token_hex(16)
    home = tmp_path_factory.mktemp("lab-home")  # no user settings or workspaces leak in
    args = (f"--no-browser --ip=127.0.0.1 --port={port} --IdentityProvider.token={token}")
    # -o: never rebuild the virtualenv from here (make test has just made it)
    cmd = ["make", "--no-print-directory", "-o", ".venv/.installed", "lab", f"LAB_ARGS={args}"]
    env = {**os.environ, "HOME": str(home), "JUPYTER_CONFIG_DIR": str(home / "config"),
           "JUPYTER_RUNTIME_DIR": str(home / "rt")}
    log = open(home / "lab.log", "w")
    server = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env)
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                get_json(f"{base}/api/status?token={token}")
                break
            except OSError:
                if server.poll() is not None or time.monotonic() > deadline:
                    log.flush()
                    pytest.fail("JupyterLab did not start:\n" + (home / "lab.log").read_text())
                time.sleep(0.5)
        yield base, token
    finally:
        server.terminate()
        try:
            server.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.kill()
        log.close()


def test_jupyter_lab_serves_the_chapters(lab):
    base, token = lab
    listing = get_json(f"{base}/api/contents/?token={token}")  # root_dir is book/
    names = {item["name"] for item in listing["content"]}
    chapters = {p.name for p in (ROOT / "book").glob("*.ipynb")}
    assert chapters and chapters <= names, f"chapters {chapters} not all in {names}"
    with urllib.request.urlopen(f"{base}/lab?token={token}", timeout=10) as page:
        assert page.status == 200 and b"JupyterLab" in page.read()


def test_jupyter_lab_has_the_widgets_extension(lab):
    base, token = lab
    extensions = get_json(f"{base}/lab/api/extensions?token={token}")
    # the extension manager lists npm names normalized: @scope/name -> scope-name
    found = {e["name"]: e for e in extensions}
    widgets = found.get("jupyter-widgets-jupyterlab-manager")
    assert widgets is not None, sorted(found)
    assert widgets.get("enabled", True) and widgets.get("installed", True), widgets
