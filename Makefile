# Two commands do everything on a fresh machine:
#   make book   -> virtualenv, dependencies, data, every notebook executed, HTML in _build/html
#   make test   -> virtualenv, dependencies, data, unit/parity tests, every notebook through nbmake
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
SUDO   := $(shell [ "$$(id -u)" = 0 ] || echo sudo -n)

.PHONY: venv data book test unit notebooks bench strip clean

venv: $(STAMP)

$(STAMP): requirements.txt pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip
	$(BIN)/pip install -r requirements.txt
	$(BIN)/pip install -q --no-deps -e .
	touch $@

# Fashion-MNIST: Debian's package where apt is available, else torchvision's download.
# `python -m vitbook.data` reports where it found the data, or says how to get it.
data: $(STAMP)
	@$(BIN)/python -c "import vitbook.data as d; d.fashion_mnist('test', download=False)" 2>/dev/null || \
	  { command -v apt-get >/dev/null && \
	    ( $(SUDO) apt-get update -qq && $(SUDO) apt-get install -y -qq dataset-fashion-mnist ) || true; }
	$(BIN)/python -m vitbook.data

book: data
	$(BIN)/jupyter-book build . --builder html
	@echo "the book is in _build/html/index.html"

unit: data
	$(BIN)/python -m pytest tests

notebooks: data
	$(BIN)/python -m pytest --nbmake book

test: data
	$(BIN)/python -m pytest tests book --nbmake --durations=0

bench: venv
	$(BIN)/python -m vitbook.bench vit

# Notebooks are committed without outputs; the build and nbmake execute them.
strip: venv
	$(BIN)/nbstripout book/*.ipynb

clean:
	rm -rf _build .pytest_cache
