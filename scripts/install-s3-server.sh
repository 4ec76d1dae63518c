#!/usr/bin/env bash
# Install the real S3-compatible server the object-store tests (tests/writer/test_s3_store.py) start:
# Versity's versitygw (Apache-2.0), an S3 gateway whose posix backend serves a local directory as
# buckets and honours conditional puts (If-None-Match: *), which LanceDB's commits on S3 rely on.
# Built from the Go module proxy with the machine's Go into ~/.cache/vcf-agent/versitygw-<version>/
# (shared by all checkouts, built once; run by ./scripts/install.sh --test-servers; idempotent) and
# linked into .venv/bin. Built without cgo: the RDMA/GPU transports that need it are not used.
# Without Go the tests that need it skip and name it.
set -euo pipefail
cd "$(dirname "$0")/.."

VERSITYGW_VERSION=1.8.0

cache_root="${XDG_CACHE_HOME:-$HOME/.cache}/vcf-agent/versitygw-$VERSITYGW_VERSION"
binary="$cache_root/versitygw"
if [ ! -x "$binary" ]; then
    if command -v go >/dev/null 2>&1; then
        mkdir -p "$cache_root"
        (
            flock 9
            if [ ! -x "$binary" ]; then
                scratch="$(mktemp -d)"
                trap 'rm -rf "$scratch"' EXIT
                CGO_ENABLED=0 GOBIN="$scratch" go install -trimpath -ldflags=-s \
                    "github.com/versity/versitygw/cmd/versitygw@v$VERSITYGW_VERSION"
                mv "$scratch/versitygw" "$binary"
            fi
        ) 9>"$cache_root/.lock"
    else
        echo "install-s3-server.sh: no Go toolchain: versitygw not built" >&2
    fi
fi
if [ -x "$binary" ] && [ -d .venv/bin ]; then
    ln -sf "$binary" .venv/bin/versitygw
fi
