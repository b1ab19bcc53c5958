# SoftMap: `make run` starts the app on the bundled demo, offline; `make test` runs every check.
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
EXTRAS := app,online,dev,bench,server,ray

.PHONY: run test install lint typecheck pytest bench clean

run: $(STAMP)
	SOFTMAP_OFFLINE=$${SOFTMAP_OFFLINE:-1} $(BIN)/streamlit run app/main.py

test: $(STAMP) lint typecheck pytest

install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[$(EXTRAS)]"
	# UMAP's numba JIT, compiled once per install into the venv (1-2 min), loaded by every process
	$(BIN)/python -m backend.analysis.projection --warm-up
	touch $(STAMP)

lint: $(STAMP)
	$(BIN)/ruff check backend app pages tests bench scripts
	$(BIN)/ruff format --check backend app pages tests bench scripts
	$(BIN)/hadolint --failure-threshold info Dockerfile

typecheck: $(STAMP)
	$(BIN)/mypy backend

# pytest exits 5 when it collected nothing: that must fail loudly, never pass as green.
pytest: $(STAMP)
	@$(BIN)/python -m pytest; rc=$$?; \
	if [ $$rc -eq 5 ]; then echo "make test: pytest collected no tests" >&2; exit 1; fi; \
	exit $$rc

bench: $(STAMP)
	$(BIN)/python bench/bench_embed.py

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
