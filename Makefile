# Two entry points: `make up` runs Accord, `make test` runs every check and test.
# Both install what they need first (uv from PyPI, the locked workspace, the Node test client,
# a Chromium for the browser engine).

UV := $(shell command -v uv 2>/dev/null || echo python3 -m uv)
PYTHON_FILES := libs/accord-kit services cli tests scripts bench conftest.py
PACKAGES := accord_kit accord_orchestrator accord_policy accord_executor accord_audit accord_cli

.PHONY: up test install protos lint check-protos check-alerts promtool check-breaking release-protos

install: promtool
	@command -v uv >/dev/null 2>&1 || python3 -c "import uv" 2>/dev/null || python3 -m pip install --quiet uv
	$(UV) sync --all-packages --frozen
	cd tests/e2e/node && npm ci --no-audit --no-fund --silent
	PYTHON=.venv/bin/python sh scripts/install_browser.sh

up: install
	$(UV) run accord up

# promtool checks the alert rules in ops/: Debian's `prometheus` package, installed as root.
promtool:
	@command -v promtool >/dev/null 2>&1 || { [ "$$(id -u)" = 0 ] \
		&& (apt-get install -y --no-install-recommends prometheus >/dev/null 2>&1 \
			|| (apt-get update -qq && apt-get install -y --no-install-recommends prometheus)) \
		|| echo "promtool is missing: install Debian's prometheus package"; }

check-alerts:
	promtool check rules ops/prometheus/alerts.yml
	promtool test rules ops/prometheus/alerts_test.yml

protos:
	$(UV) run python scripts/gen_protos.py

check-protos:
	$(UV) run python scripts/gen_protos.py --check
	$(UV) run buf lint libs/accord-api/src/accord/descriptor_set.binpb --path accord

# The contracts may not break what the last release published: its descriptor set is kept
# in protos/release/ (see protos/README.md), and `make release-protos` renews it at a release.
# Only Accord's own files are held to it: protovalidate's validate.proto, imported by them, is
# renewed with the runtime that implements it (protos/README.md), not by this gate.
RELEASED := protos/release/descriptor_set.binpb
CURRENT := libs/accord-api/src/accord/descriptor_set.binpb

check-breaking:
	$(UV) run buf breaking $(CURRENT) --against $(RELEASED) --path accord --exclude-imports

release-protos:
	cp $(CURRENT) $(RELEASED)

lint:
	$(UV) run ruff check $(PYTHON_FILES)
	$(UV) run ruff format --check $(PYTHON_FILES)
	$(UV) run mypy $(addprefix -p ,$(PACKAGES))

test: install check-protos check-breaking lint check-alerts
	$(UV) run pytest
