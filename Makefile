# Two commands on a fresh machine: `make demo` and `make test`. Both create .venv themselves.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
LAB_STATE ?= .lab/state.json
LAB_PORT ?= 8470
RECONCILE := $(BIN)/reconcile
LAB_VAR := --var lab=http://127.0.0.1:$(LAB_PORT)

.PHONY: setup lint test demo bench schema clean

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[dev]'
	touch $(STAMP)

setup: $(STAMP)

lint: setup
	$(BIN)/ruff check reconciler tests benchmarks
	$(BIN)/mypy

test: setup lint
	$(BIN)/pytest

# Plan, apply, plan again (no changes) against the built-in lab, started here and stopped after.
demo: setup
	@mkdir -p $(dir $(LAB_STATE))
	$(RECONCILE) lab init --force --state $(LAB_STATE)
	@$(RECONCILE) lab serve --state $(LAB_STATE) --port $(LAB_PORT) & pid=$$!; \
	trap "kill $$pid 2>/dev/null" EXIT; \
	for i in $$(seq 50); do $(BIN)/python -c "import httpx,sys; httpx.get('http://127.0.0.1:$(LAB_PORT)/healthz')" 2>/dev/null && break; sleep 0.1; done; \
	set -e; \
	echo; echo "== reconcile plan manifests/on-premises.yaml"; \
	$(RECONCILE) plan $(LAB_VAR) manifests/on-premises.yaml; \
	echo; echo "== reconcile apply --auto-approve manifests/on-premises.yaml"; \
	$(RECONCILE) apply --auto-approve $(LAB_VAR) manifests/on-premises.yaml; \
	echo; echo "== reconcile verify manifests/on-premises.yaml (Test-CsExStorageConnectivity, both directions)"; \
	$(RECONCILE) verify $(LAB_VAR) manifests/on-premises.yaml; \
	echo; echo "== reconcile plan manifests/on-premises.yaml (again: expect no changes)"; \
	$(RECONCILE) plan --detailed-exitcode $(LAB_VAR) manifests/on-premises.yaml; \
	echo; echo "== SharePoint's side (Skype <-> Exchange <-> SharePoint <-> Skype, Exchange's app-only grant): plan, apply, verify, plan again"; \
	$(RECONCILE) plan $(LAB_VAR) manifests/on-premises-sharepoint.yaml; \
	$(RECONCILE) apply --auto-approve $(LAB_VAR) manifests/on-premises-sharepoint.yaml; \
	$(RECONCILE) verify $(LAB_VAR) manifests/on-premises-sharepoint.yaml; \
	$(RECONCILE) plan --detailed-exitcode $(LAB_VAR) manifests/on-premises-sharepoint.yaml; \
	export RECONCILE_GRAPH_CLIENT_SECRET=lab-only-client-secret-not-for-production; \
	echo; echo "== seed 004, cross-premises (Skype + Office 365 over Graph): plan, apply, plan again"; \
	$(RECONCILE) plan $(LAB_VAR) manifests/cross-premises.yaml; \
	$(RECONCILE) apply --auto-approve $(LAB_VAR) manifests/cross-premises.yaml; \
	$(RECONCILE) plan --detailed-exitcode $(LAB_VAR) manifests/cross-premises.yaml; \
	echo; echo "== Exchange hybrid the 2026 way (dedicated app, HMA on Exchange and Skype): plan, apply, plan again"; \
	$(RECONCILE) plan $(LAB_VAR) manifests/exchange-hybrid.yaml; \
	$(RECONCILE) apply --auto-approve $(LAB_VAR) manifests/exchange-hybrid.yaml; \
	$(RECONCILE) plan --detailed-exitcode $(LAB_VAR) manifests/exchange-hybrid.yaml

bench: setup
	$(BIN)/python benchmarks/run.py --sizes 1x10,20x50,200x50,1000x50

schema: setup
	$(RECONCILE) schema --out schemas/manifest.schema.json

clean:
	rm -rf $(VENV) .lab .reconciler *.egg-info
