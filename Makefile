# Two commands do everything on a fresh machine:
#   make book   -> virtualenv, dependencies, data, every notebook executed (cached), HTML in _build/html
#   make test   -> virtualenv, dependencies, data, Chromium, then ONE pytest session: unit/parity
#                  tests, every notebook executed once by nbmake (in a staged copy under
#                  build/executed, never in book/), the strict HTML build of that copy with
#                  execution off, and the browser tests of _build/html (screenshots in
#                  _build/screenshots)
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: venv data browser mathjax book lab test unit notebooks bench strip clean gpu-check \
	colab-check oldest-check

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Fashion-MNIST: Debian's package where apt is available, else torchvision's download.
# `vitbook.data.main()` reports that it found the data, or says how to get it.
data: $(STAMP)
	@$(BIN)/python -c "import vitbook.data as d; d.fashion_mnist('test', download=False)" 2>/dev/null || \
	  { command -v apt-get >/dev/null && \
	    ( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist ) || true; }
	$(BIN)/python -c "import vitbook.data; vitbook.data.main()"

# Debian's Chromium for the browser tests (Playwright drives it; it never downloads a browser).
browser:
	@[ -x "$${VITBOOK_CHROMIUM:-/usr/bin/chromium}" ] || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq chromium; }

# MathJax served by the book itself, so formulas render offline too: the npm package,
# fetched once from the package registry into book/_static/mathjax (not committed);
# _config.yml points Sphinx's mathjax_path at it.
MATHJAX_VERSION := 3.2.2
MATHJAX := book/_static/mathjax
mathjax: $(MATHJAX)/tex-mml-chtml.js
$(MATHJAX)/tex-mml-chtml.js:
	@command -v npm >/dev/null || \
	  { $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq npm; }
	rm -rf build/mathjax && mkdir -p build/mathjax
	cd build/mathjax && npm pack --silent mathjax@$(MATHJAX_VERSION) >/dev/null
	tar xzf build/mathjax/mathjax-$(MATHJAX_VERSION).tgz -C build/mathjax
	rm -rf $(MATHJAX) && mkdir -p $(dir $(MATHJAX)) && cp -r build/mathjax/package/es5 $(MATHJAX)
	rm -rf build/mathjax

# The reader's build: executes each notebook through jupyter-cache (an unchanged notebook is not
# run again) and leaves book/ untouched.
book: data mathjax
	$(BIN)/jupyter-book build . --builder html
	@echo "the book is in _build/html/index.html"

# The chapters in JupyterLab with a live kernel (the widgets work there).
# LAB_ARGS adds options, e.g. `make lab LAB_ARGS="--no-browser --port=8899"`.
ROOT_FLAG := $(shell [ "$$(id -u)" = 0 ] && echo --allow-root)
lab: data
	$(BIN)/jupyter lab book/ $(ROOT_FLAG) $(LAB_ARGS)

unit: data
	$(BIN)/python -m pytest tests --ignore=tests/book_html

# Fresh virtualenvs under build/envs/ (tests/test_install_paths.py; logs in
# build/envs/*.log), run when VITBOOK_ENV_TESTS=1, which `make test` sets and `make unit`
# does not. colab-check: chapter 1's first cell pip-installs vitbook from a git+file://
# url of this commit into an env with only ipykernel and nbclient, then chapter 1 runs
# (10-14 min on the 2-core CPU with other jobs running). oldest-check:
# requirements-oldest.txt (pyproject's lower bounds), then the unit tests there (10 min).
ENV_TESTS := tests/test_install_paths.py
colab-check: data
	VITBOOK_ENV_TESTS=1 $(BIN)/python -m pytest $(ENV_TESTS) -k colab
oldest-check: data
	VITBOOK_ENV_TESTS=1 $(BIN)/python -m pytest $(ENV_TESTS) -k oldest

# The self-supervised chapters leave their tables here for chapter 11 (one per clone, so
# nothing measured elsewhere or earlier is shown): vitbook.train.results_dir
export VITBOOK_RESULTS := $(CURDIR)/build/results

notebooks: data
	rm -rf $(VITBOOK_RESULTS)
	$(BIN)/python -m pytest --nbmake book

# What CI runs. tests/book_html/stage.py copies book/ and _toc.yml to build/executed with
# `execute_notebooks: "off"` in its _config.yml; nbmake executes those copies in place
# (--overwrite), so each notebook runs once and the notebooks in book/ stay without outputs.
# tests/book_html then builds that copy strictly (-W -n --keep-going) into _build/html and
# opens every page in Chromium. pytest's closing line is the last line printed.
STAGED := build/executed
# seconds per notebook cell, as execute.timeout in _config.yml
CELL_TIMEOUT ?= 600
test: data browser mathjax
	rm -rf $(VITBOOK_RESULTS)
	$(BIN)/python tests/book_html/stage.py
	VITBOOK_ENV_TESTS=1 $(BIN)/python -m pytest tests $(STAGED)/book --nbmake --overwrite --nbmake-timeout=$(CELL_TIMEOUT) --durations=15

# Every benchmark in one table of vitbook/reference ratios; `make bench BENCH_ARGS=--quick`
# for the one-minute version, `make bench BENCH=vit` for one benchmark with its details.
BENCH ?= all
BENCH_ARGS ?=
bench: venv
	$(BIN)/python -m vitbook.bench $(BENCH) $(BENCH_ARGS)

# On a machine with a CUDA GPU: every chapter at the full scale, one report in
# build/gpu-check.md (wall time, peak GPU memory, what each chapter printed). Without a
# GPU it says so and fails. `make gpu-check GPU_CHAPTERS="01_vit 07_dino"` for some.
GPU_CHAPTERS ?=
gpu-check: data
	$(BIN)/python tests/gpu_check.py $(if $(GPU_CHAPTERS),--chapters $(GPU_CHAPTERS))

# Notebooks are committed without outputs; the build and nbmake execute them.
strip: venv
	$(BIN)/nbstripout book/*.ipynb

clean:
	rm -rf _build build/executed .pytest_cache
