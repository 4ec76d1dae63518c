#!/usr/bin/env bash
# Install everything (test servers, real test VCFs, deployment tools), then run the whole test suite
# (a real Kafka broker is started by
# the test session; Iggy tests run when IGGY_SERVER_BIN/PATH has iggy-server or IGGY_URL is set).
set -euo pipefail
cd "$(dirname "$0")/.."
./scripts/install.sh --test-servers
# The deployment checks' tools (podman, kustomize, kube-score, compose-go, hadolint).
./scripts/install-deploy-tools.sh
set +e
.venv/bin/python -m pytest "$@"
status=$?
set -e
# pytest exits 5 when it collected no tests: that is a failure here, not a pass.
exit "$status"
