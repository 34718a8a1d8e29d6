# sigmoid-edge: the two commands a user needs are `make demo` and `make test`.
# Works on a fresh Debian / Ubuntu / Raspberry Pi OS machine: it creates .venv and installs
# the system packages it needs (with apt-get as root; otherwise it prints the command).

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed-$(shell cat pyproject.toml | cksum | cut -d' ' -f1)

.PHONY: test demo bench lint fuzz system-deps clean

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

demo: $(STAMP)
	$(PY) -m edge demo

# The venv, with the trainer and test tools (a Pi running only the daemon needs just `pip install .`).
$(STAMP): pyproject.toml
	@$(PYTHON) -c 'import ensurepip, venv' 2>/dev/null || $(MAKE) --no-print-directory apt-python-venv
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[train,dev]'
	rm -f $(VENV)/.installed-*
	touch $@

apt-python-venv:
	@if [ "$$(id -u)" = 0 ]; then \
		apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq python3-venv; \
	else \
		echo "python3-venv is missing; install it with: sudo apt-get install -y python3-venv" >&2; exit 1; \
	fi

# The integration tests run a real mosquitto broker and the real mosquitto_pub/_sub clients;
# tests/test_deploy.py checks the deploy files with shellcheck, docker-compose (no Docker
# engine needed), systemd-analyze and openssl. Each tool maps to the Debian package that has it.
SYSTEM_TOOLS := mosquitto:mosquitto mosquitto_pub:mosquitto-clients mosquitto_passwd:mosquitto \
	shellcheck:shellcheck docker-compose:docker-compose systemd-analyze:systemd openssl:openssl

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
