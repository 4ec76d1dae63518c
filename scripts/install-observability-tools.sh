#!/usr/bin/env bash
# Install the real observability back ends the tests in tests/observability talk to
# (run by ./scripts/install.sh --test-servers; idempotent, cached):
# - Prometheus and promtool from Debian's `prometheus` package (bookworm: 2.42); apt-get needs root;
# - Jaeger (all-in-one, OTLP receiver + query HTTP API) built from the Go module proxy into
#   ~/.cache/vcf-agent/jaeger-<version>/ (shared by all checkouts, built once) and linked into
#   .venv/bin. Jaeger's module refuses `go install pkg@version` (replace directives), so it is
#   built inside a scratch module that requires it as a tool.
# Without root or Go the tests that need the missing tool skip and name it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_go-build.sh

JAEGER_VERSION=1.76.0

if ! command -v promtool >/dev/null 2>&1 || ! command -v prometheus >/dev/null 2>&1; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        # policy-rc.d keeps the package from starting a system-wide Prometheus on port 9090:
        # the tests start their own on an ephemeral port.
        DEBIAN_FRONTEND=noninteractive RUNLEVEL=1 apt-get install -y -qq --no-install-recommends \
            prometheus >/dev/null
    else
        echo "install-observability-tools.sh: not root, cannot apt-get install prometheus" >&2
    fi
fi

build_jaeger() {
    go mod init scratch >/dev/null 2>&1
    go get -tool "github.com/jaegertracing/jaeger/cmd/jaeger@v$JAEGER_VERSION" 2>go-get.log \
        || { cat go-get.log >&2; exit 1; }
    go build -o "$1" github.com/jaegertracing/jaeger/cmd/jaeger
}

cached_go_build jaeger "$JAEGER_VERSION" build_jaeger
