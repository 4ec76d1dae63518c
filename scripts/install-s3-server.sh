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
. scripts/_go-build.sh

VERSITYGW_VERSION=1.8.0

build_versitygw() {
    CGO_ENABLED=0 GOBIN="$PWD" go install -trimpath -ldflags=-s \
        "github.com/versity/versitygw/cmd/versitygw@v$VERSITYGW_VERSION"
    mv versitygw "$1"
}

cached_go_build versitygw "$VERSITYGW_VERSION" build_versitygw
