# One toolchain, the same locally and in CI. The README names `make demo` and `make test`.
SHELL := /bin/bash
# Python 3.12 matches the Lambda runtime; pyenv machines resolve it with this setting.
export PYENV_VERSION ?= 3.11.7:3.12.1
export UV_PYTHON ?= 3.12
# Offline CDK: no version check, no notices, no telemetry; silence jsii's Node 20 notice.
export CDK_DISABLE_VERSION_CHECK := true
export CDK_DISABLE_CLI_TELEMETRY := true
export JSII_SILENCE_WARNING_DEPRECATED_NODE_VERSION := 1
UV := $(shell command -v uv 2>/dev/null || echo "python3 -m uv")
# Set-up installs exactly the committed uv.lock and fails if pyproject.toml no longer matches it
# (`--locked`); every later command uses that environment as is (`--frozen`), so that no target
# re-resolves and rewrites uv.lock behind the user's (or CI's) back.
UV_RUN := $(UV) run --frozen

.PHONY: setup demo test lint typecheck bench clean

setup:
	@command -v uv >/dev/null 2>&1 || python3 -m uv --version >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@# pyenv machines: expose the new uv executable (cdk.json's app command calls `uv run`).
	@if command -v pyenv >/dev/null 2>&1; then pyenv rehash; fi
	$(UV) sync --locked
	@if [ -f package.json ]; then npm ci --no-audit --no-fund --loglevel=error; fi

demo: setup
	$(UV_RUN) python -m demo

lint:
	$(UV_RUN) ruff check .
	$(UV_RUN) ruff format --check .

typecheck:
	$(UV_RUN) mypy app.py infra lambdas localapi training demo benchmarks tests

test: setup lint typecheck
	$(UV_RUN) pytest -n 2 --dist loadgroup

bench: setup
	$(UV_RUN) python -m benchmarks.bench_training
	$(UV_RUN) python -m benchmarks.bench_api
	$(UV_RUN) python -m benchmarks.bench_batch

clean:
	rm -rf .venv node_modules cdk.out build .demo .pytest_cache .mypy_cache .ruff_cache
