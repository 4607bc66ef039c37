# Two commands: `make paper` (the main job) and `make test`.
# PROFILE=smoke|cpu|paper (default cpu). DATA_DIR=/path/to/TCIA-download CLINICAL=/path/to/clinical.{csv,xlsx}
PROFILE ?= cpu
DATA_DIR ?=
CLINICAL ?=
SEED ?= 0
# pytest workers (pytest-xdist): the unit tests in 2 processes take 0.58x the time of one on
# the 2-core machine; torch in every worker uses all cores, so more workers than cores
# oversubscribe them. TEST_WORKERS=0 runs them in this process.
TEST_WORKERS ?= 2
PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
NOTEBOOKS := $(sort $(wildcard notebooks/[0-9][0-9]_*.ipynb))
DATA_ARGS := --profile $(PROFILE) $(if $(DATA_DIR),--data "$(DATA_DIR)") $(if $(CLINICAL),--clinical "$(CLINICAL)")

.PHONY: setup data notebooks paper render test unit nbval manuscript-check lint bench clean help
help:
	@echo "make paper [PROFILE=smoke|cpu|paper] [DATA_DIR=... CLINICAL=...]   data -> notebooks -> manuscript"
	@echo "make test                                                          unit tests + nbval (smoke profile)"

# The environment: created when missing or when pyproject.toml changes. torch is pinned in the
# same pip command as monai/torchio/captum so that pip keeps the CPU build found on disk.
# pip compiles the installed modules up front (its default, not --no-compile): where
# PYTHONDONTWRITEBYTECODE is set (as on the development machine) nothing compiled later is kept,
# and every notebook kernel and pool worker would compile torch and its stack again on import.
$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --upgrade --quiet pip
	$(BIN)/python -m pip install --quiet "torch==2.13.*" -e ".[dev]"
	# Quarto: optional, in its own command (its build downloads a binary, which fails offline).
	-$(BIN)/python -m pip install --quiet quarto-cli >/dev/null 2>&1 || echo "quarto-cli not installed: the offline pandoc/Typst renderer will be used"
	$(BIN)/python -m ipykernel install --sys-prefix --name python3 >/dev/null
	touch $(STAMP)

setup: $(STAMP)

data: setup
	$(BIN)/crlm data $(DATA_ARGS) --seed $(SEED)

notebooks: data
	$(BIN)/crlm notebooks $(DATA_ARGS) --seed $(SEED)

paper: notebooks
	$(BIN)/crlm render --profile $(PROFILE) $(if $(DATA_DIR),--real)

render: setup
	$(BIN)/crlm render --profile $(PROFILE) $(if $(DATA_DIR),--real)

unit: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests

nbval: setup
	$(BIN)/python -m crlm_lib.notebooks clear --profile smoke
	$(BIN)/python -m pytest -q --nbval-lax -p no:cacheprovider $(NOTEBOOKS)
	$(BIN)/python -m crlm_lib.notebooks check --profile smoke $(NOTEBOOKS)

# The manuscript test: papermill re-executes the smoke notebooks (training runs are cached by
# nbval's pass), the article is rendered, and every embed and the absence of PHI are checked.
manuscript-check: setup
	$(BIN)/crlm notebooks --profile smoke
	$(BIN)/crlm render --profile smoke --check

test: setup
	$(BIN)/python -m pytest -q -n $(TEST_WORKERS) tests
	$(MAKE) --no-print-directory nbval
	$(MAKE) --no-print-directory manuscript-check

lint: setup
	$(BIN)/ruff check crlm_lib tests benchmarks
	$(BIN)/ruff format --check crlm_lib tests benchmarks

bench: setup
	$(BIN)/python benchmarks/preprocess.py --profile $(PROFILE)
	$(BIN)/python benchmarks/train_step.py

clean:
	rm -rf data/processed runs results _manuscript notebooks/executed build
