# Two commands: `make up` starts the trust space, `make test` runs every check.
# Both bootstrap .venv/ from the pinned requirements.lock on first use.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed-stamp

.PHONY: install browser nginx up demo test lint typecheck unit bench clean

$(STAMP): pyproject.toml requirements.lock
	$(PYTHON) -c 'import sys; assert sys.version_info >= (3, 11), "Python >= 3.11 requis"'
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install -q --upgrade pip
	$(BIN)/python -m pip install -q -r requirements.lock
	$(BIN)/python -m pip install -q --no-deps -e .
	touch $(STAMP)

install: $(STAMP)

# Debian's Chromium for the web UI tests (Playwright drives it; no browser is downloaded).
browser:
	@if [ -x /usr/bin/chromium ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  echo "Installation de Chromium (paquet Debian)…"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null) \
	    || echo "Chromium non installé : les tests navigateur seront ignorés (échec sous CI=true)."; \
	else echo "Chromium absent et pas root : installez le paquet chromium pour les tests navigateur."; fi

# Debian's nginx + njs for the nginx-in-front test of deploy/ (tests/test_deploy.py).
nginx:
	@if [ -x /usr/sbin/nginx ] && [ -f /usr/lib/nginx/modules/ngx_http_js_module.so ]; then :; \
	elif [ "$$(id -u)" = "0" ] && command -v apt-get >/dev/null; then \
	  echo "Installation de nginx (paquets Debian)…"; \
	  (apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nginx libnginx-mod-http-js >/dev/null) \
	    || echo "nginx non installé : le test nginx sera ignoré (échec sous CI=true)."; \
	else echo "nginx absent et pas root : installez nginx et libnginx-mod-http-js pour le test nginx."; fi

up: $(STAMP)
	$(BIN)/confiance up

demo: $(STAMP)
	$(BIN)/confiance demo

lint: $(STAMP)
	$(BIN)/ruff check src tests bench
	$(BIN)/ruff format --check src tests bench

typecheck: $(STAMP)
	$(BIN)/mypy

unit: $(STAMP)
	$(BIN)/pytest -q -n 2 --dist loadfile

test: $(STAMP) browser nginx lint typecheck unit

bench: $(STAMP)
	$(BIN)/python bench/run_all.py

clean:
	rm -rf $(VENV) build .pytest_cache .mypy_cache .ruff_cache
