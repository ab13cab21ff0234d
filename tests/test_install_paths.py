"""vitbook outside this repository's .venv, each in a fresh virtual environment under
build/envs/ (minutes each, so only with VITBOOK_ENV_TESTS=1: `make test` sets it,
`make colab-check` and `make oldest-check` run one test each, `make unit` skips both).

- Colab: the environment holds only ipykernel and nbclient (what Colab adds to run a
  notebook); chapter 1's own first cell installs vitbook with pip from a git+file://
  url of this repository's committed HEAD (in place of the GitHub url), so only what
  the wheel holds and pyproject.toml declares is there. Then chapter 1 runs at the
  small scale, every vitbook module imports, and every tracked file under vitbook/ is
  in the install.
- The oldest versions: requirements-oldest.txt (the lower bounds of pyproject.toml, and
  the test tools), then the unit tests, as `make unit` runs them, in that environment.

Each writes what it installed, the versions and how long every step took to
build/envs/<name>.log; a failure says what failed and where the log is. The virtualenvs
(gigabytes: torch and its CUDA libraries) stay in build/envs/ until the next run."""

import json
import os
import re
import shutil
import subprocess
import sys
import time
import tomllib
from pathlib import Path

import pytest
from packaging.version import Version

ROOT = Path(__file__).resolve().parents[1]
ENVS = ROOT / "build" / "envs"
OLDEST = ROOT / "requirements-oldest.txt"
CHAPTER = "book/01_vit.ipynb"
GITHUB = "https://github.com/vitbook/vitbook"

needs_env_tests = pytest.mark.skipif(
    os.environ.get("VITBOOK_ENV_TESTS") != "1",
    reason="builds a fresh virtual environment (minutes): VITBOOK_ENV_TESTS=1, "
    "set by make test, make colab-check and make oldest-check",
)


class Log:
    """Every command with its output and seconds, in build/envs/<name>.log."""

    def __init__(self, name: str):
        ENVS.mkdir(parents=True, exist_ok=True)
        self.path = ENVS / f"{name}.log"
        self.path.write_text(f"{name}: {time.strftime('%Y-%m-%d %H:%M:%S')}\n")
        self.steps: list[str] = []

    def write(self, text: str) -> None:
        with self.path.open("a") as f:
            f.write(text.rstrip("\n") + "\n")

    def run(self, step: str, cmd: list, timeout: float = 1200, **kwargs) -> str:
        """Runs cmd; fails the test with the end of its output when it fails."""
        self.write(f"\n$ {' '.join(map(str, cmd))}")
        start = time.monotonic()
        try:
            done = subprocess.run(
                [str(c) for c in cmd], capture_output=True, text=True,
                timeout=timeout, **kwargs,
            )  # fmt: skip
            out, code = done.stdout + done.stderr, done.returncode
        except subprocess.TimeoutExpired as e:
            out, code = f"{e.stdout or ''}{e.stderr or ''}\ntimed out", "timeout"
        seconds = time.monotonic() - start
        self.steps.append(f"{step}: {seconds:.0f} s")
        # pip's notes about the machine's empty index folders are noise here, and so are
        # the colours of IPython's tracebacks
        out = re.sub(r"\x1b\[[0-9;]*m", "", out)
        kept = [ln for ln in out.splitlines() if "is neither a file nor" not in ln]
        self.write("\n".join(kept) + f"\n[{step}: exit {code}, {seconds:.0f} s]")
        if code != 0:
            tail = "\n".join(kept[-40:])
            pytest.fail(
                f"{step} failed (exit {code}) after {seconds:.0f} s; "
                f"the whole log: {self.path}\n{tail}",
                pytrace=False,
            )
        return done.stdout

    def summary(self) -> str:
        return "; ".join(self.steps)


def clean_env(**extra) -> dict:
    """The commands' environment: nothing of this checkout or its .venv leaks in."""
    env = {k: v for k, v in os.environ.items()
           if k not in ("PYTHONPATH", "VIRTUAL_ENV", "VITBOOK_ENV_TESTS")}  # fmt: skip
    venv_bin = str(Path(sys.prefix) / "bin")
    path = [p for p in env.get("PATH", "").split(os.pathsep) if p != venv_bin]
    env["PATH"] = os.pathsep.join(path)
    env.update(extra)
    return env


def fresh_venv(log: Log, path: Path) -> Path:
    """A new virtual environment at path (the old one removed) with today's pip."""
    shutil.rmtree(path, ignore_errors=True)
    log.run("venv", [sys.executable, "-m", "venv", path])
    python = path / "bin" / "python"
    log.run("pip upgrade", [python, "-m", "pip", "install", "-q", "--upgrade", "pip"],
            env=clean_env())  # fmt: skip
    return python


def freeze(log: Log, python: Path) -> str:
    cmd = [python, "-m", "pip", "freeze", "--all"]
    return log.run("pip freeze (what is installed)", cmd, env=clean_env())


def git(*args: str) -> str:
    return subprocess.run(["git", "-C", str(ROOT), *args], capture_output=True,
                          text=True, check=True).stdout  # fmt: skip


# ------------------------------------------------------------------------------------
# Colab's install path


def colab_notebook(repo_url: str) -> dict:
    """Chapter 1 as committed, its first cell pointed at repo_url instead of GitHub."""
    nb = json.loads(git("show", f"HEAD:{CHAPTER}"))
    first = next(c for c in nb["cells"] if c["cell_type"] == "code")
    source = "".join(first["source"])
    line = f'REPO = "{GITHUB}"'
    assert source.count(line) == 1 and "pip" in source, (
        f"the first code cell of {CHAPTER} no longer sets {line} and installs with "
        "pip; this test swaps that url for a local one:\n" + source
    )
    first["source"] = source.replace(line, f'REPO = "{repo_url}"')
    return nb


# Run by the fresh environment's Python: the kernel and the client both come from there.
EXECUTE = """
import sys, time, nbformat
from datetime import datetime
from pathlib import Path
from nbclient import NotebookClient
src, out, kernel = sys.argv[1:4]
nb = nbformat.read(src, as_version=4)
start = time.monotonic()
folder = {"metadata": {"path": str(Path(src).parent)}}
try:
    NotebookClient(nb, timeout=900, kernel_name=kernel, resources=folder).execute()
finally:
    nbformat.write(nb, out)
    print(f"executed in {time.monotonic() - start:.0f} s")
    for i, cell in enumerate(c for c in nb.cells if c.cell_type == "code"):
        t = cell.metadata.get("execution", {})
        if "iopub.execute_input" in t and "shell.execute_reply" in t:
            s, e = (datetime.fromisoformat(t[k].replace("Z", "+00:00"))
                    for k in ("iopub.execute_input", "shell.execute_reply"))
            print(f"code cell {i + 1}: {(e - s).total_seconds():.0f} s")
"""

# Every module of the installed package imports with the declared dependencies alone
# (vitbook.reference may need the [reference] extra; __main__ modules would run).
IMPORT_ALL = """
import importlib, pkgutil, vitbook
names = [m.name for m in pkgutil.walk_packages(vitbook.__path__, "vitbook.")
         if m.name != "vitbook.reference" and not m.name.endswith("__main__")]
for name in names:
    importlib.import_module(name)
print(vitbook.__file__)
print(len(names), "modules imported")
"""

# The installed files of the distribution, relative to site-packages.
INSTALLED_FILES = """
from importlib.metadata import files
print("\\n".join(str(f) for f in files("vitbook")))
"""


@needs_env_tests
def test_colab_install_path_runs_chapter_1():
    log = Log("colab-check")
    head = git("rev-parse", "HEAD").strip()
    dirty = git("status", "--porcelain", "--untracked-files=no").strip()
    note = " (uncommitted changes are NOT part of it)" if dirty else ""
    log.write(f"commit {head}{note}")
    base = ENVS / "colab"
    python = fresh_venv(log, base / "venv")
    env = clean_env(VITBOOK_SCALE="small", VITBOOK_RESULTS=str(base / "results"),
                    MPLBACKEND="Agg")  # fmt: skip
    log.run(
        "install ipykernel, nbclient",
        [python, "-m", "pip", "install", "-q", "ipykernel", "nbclient"],
        env=env,
    )
    kernel = "vitbook-colab-check"
    log.run("kernel spec", [python, "-m", "ipykernel", "install", "--prefix",
                            base / "venv", "--name", kernel], env=env)  # fmt: skip
    probe = "import importlib.util as u; print(*map(u.find_spec, ['vitbook', 'torch']))"
    before = log.run("before the first cell", [python, "-c", probe], env=env, cwd=base)
    assert before.split() == ["None", "None"], f"the fresh environment has {before}"

    run = base / "run"  # the notebook's folder, in no checkout (/content on Colab)
    shutil.rmtree(run, ignore_errors=True)
    run.mkdir(parents=True)
    (run / "01_vit.ipynb").write_text(json.dumps(colab_notebook(f"file://{ROOT}")))
    (base / "execute.py").write_text(EXECUTE)
    log.run("chapter 1 (its first cell pip-installs vitbook)",
            [python, base / "execute.py", run / "01_vit.ipynb",
             run / "01_vit.executed.ipynb", kernel],
            env=env, cwd=run, timeout=1800)  # fmt: skip
    frozen = freeze(log, python)
    line = next((ln for ln in frozen.splitlines() if ln.startswith("vitbook")), "")
    assert line == f"vitbook @ git+file://{ROOT}@{head}", (
        f"vitbook was not installed by the first cell from this commit: {line!r}; "
        f"log: {log.path}"
    )
    (base / "import_all.py").write_text(IMPORT_ALL)
    imported = log.run("import every vitbook module", [python, base / "import_all.py"],
                       env=env, cwd=run)  # fmt: skip
    assert "/site-packages/vitbook/" in imported, imported

    installed = set(log.run("installed files", [python, "-c", INSTALLED_FILES],
                            env=env, cwd=run).split())  # fmt: skip
    tracked = set(git("ls-tree", "-r", "--name-only", "HEAD", "vitbook/").split())
    missing = sorted(tracked - installed)
    assert not missing, (
        f"tracked under vitbook/ but not installed from the wheel: {missing}; "
        f"log: {log.path}"
    )
    log.write("\n" + log.summary())


# ------------------------------------------------------------------------------------
# The oldest versions pyproject.toml allows


def _name(requirement: str) -> str:
    return re.split(r"[ <>=!~;\[@,]", requirement.strip(), maxsplit=1)[0].lower()


def declared_lower_bounds() -> dict[str, str]:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    bounds = {}
    for req in project["dependencies"]:
        found = re.fullmatch(r"([A-Za-z0-9_.-]+)\s*>=\s*([0-9][0-9A-Za-z.]*)", req)
        assert found, f"pyproject.toml: {req!r} is not NAME>=VERSION"
        bounds[found[1].lower()] = found[2]
    return bounds


def oldest_pins() -> dict[str, str]:
    pins = {}
    for raw in OLDEST.read_text().splitlines():
        line = raw.split("#")[0].strip()
        found = re.match(r"([A-Za-z0-9_.-]+)\s*==\s*([0-9][0-9A-Za-z.]*)", line)
        if found:
            pins[found[1].lower()] = found[2]
    return pins


def test_requirements_oldest_pins_every_dependency_at_its_lower_bound():
    """Cheap, always on: what oldest-check installs is what pyproject.toml declares."""
    bounds, pins = declared_lower_bounds(), oldest_pins()
    wrong = {name: (low, pins.get(name)) for name, low in bounds.items()
             if Version(pins.get(name, "0")) != Version(low)}  # fmt: skip
    assert not wrong, (
        "requirements-oldest.txt must pin each dependency of pyproject.toml at its "
        f"lower bound (name: (bound, pin)): {wrong}"
    )


@needs_env_tests
def test_unit_tests_pass_with_the_oldest_versions():
    log = Log("oldest-check")
    python = fresh_venv(log, ENVS / "oldest" / "venv")
    env = clean_env()
    log.run(
        "install requirements-oldest.txt",
        [python, "-m", "pip", "install", "-q", "-r", OLDEST],
        env=env,
    )
    frozen = freeze(log, python)
    pairs = [ln.split("==") for ln in frozen.splitlines() if "==" in ln]
    versions = {_name(name): version for name, version in pairs}
    pins = oldest_pins()
    off = {n: (v, versions.get(n)) for n, v in pins.items() if versions.get(n) != v}
    assert not off, f"installed versions differ from the pins (pin, installed): {off}"
    # `make unit`'s tests, this checkout on the path; subprocesses get it from the tests
    log.run("unit tests",
            [python, "-m", "pytest", "-q", "-p", "no:cacheprovider", "tests",
             "--ignore=tests/book_html"],
            env=clean_env(PYTHONPATH=str(ROOT)), cwd=ROOT, timeout=2400)  # fmt: skip
    log.write("\n" + log.summary())
